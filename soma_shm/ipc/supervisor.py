"""The supervisor: one thread that alone owns the workers, the queues, the slots and the deadlines.

Callers (any thread) only touch the *inbox*: they append a command under a small lock, note the
request in the pending table, and write one byte to the wake-up pipe. Cancelling resolves the
request's future in the caller's thread at once (so a cancel never waits for the supervisor) and
wakes the supervisor, which then stops whatever still works on it. The supervisor waits on the
wake-up pipe, every worker's pipe and every worker's sentinel, and on the nearest deadline; it
holds no lock while it works, publishes a snapshot of its state for :meth:`Supervisor.stats`,
and resolves futures (which runs their callbacks) only after that, with no lock held. Lock
order (``docs/design.md``, "Lock order"): inbox lock and snapshot lock are leaves; nothing is
called while holding them.

Per role (:data:`soma_shm.ipc.protocol.ROLES`): at most one computing worker, plus an idle warm
spare with ``spares``; workers that die, stop or stop answering are reaped and replaced; a
request that a worker never acknowledged (it died before reading it) goes to the next worker.
"""

from __future__ import annotations

import itertools
import logging
import math
import multiprocessing.connection
import os
import signal
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from typing import Any, Callable

from ..errors import EngineClosed, QueueFull, RequestCancelled, SomaError, WorkerCrashed, WorkerError, WorkerTimeout
from . import launch
from .blocks import SlotRing
from .protocol import ROLES, Compute, Done, Failed, Ready, Role, Started, Stop, decode, encode

__all__ = ["Supervisor", "Request", "MAX_STARTUP_FAILURES"]

log = logging.getLogger("soma_shm.engine")

MAX_STARTUP_FAILURES = 3  # workers of a role that die before they are ready, in a row
MAX_TRIES = 3  # times a request is given to a new worker when the last one died before reading it
ACK_GRACE_S = 2.0  # a worker that does not acknowledge a request within this is killed
TERM_GRACE_S = 0.5  # a terminated worker still alive after this is SIGKILLed
STOPPED_GRACE_S = 0.3  # a stopped (SIGSTOP) worker is SIGKILLed after this
LIVENESS_S = 0.2  # how often every worker's process state is read
START_TIMEOUT_S = 60.0  # a worker not ready this long after its start is killed (a startup failure)


def settle(future: Future, value: Any = None, exc: BaseException | None = None) -> bool:
    """Resolve ``future`` unless it already is; True if this call resolved it."""
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)
        return True
    except InvalidStateError:
        return False


class Request:
    """A submitted request, owned by the supervisor once accepted."""

    def __init__(self, rid: int, role: str, task: str, params: Any, future: Future,
                 make_result: Callable[[Any, dict], Any] | None, audio):
        self.id, self.role, self.task, self.params = rid, role, task, params
        self.future = future
        self.make_result = make_result
        self.audio = audio
        self.submitted = time.perf_counter()
        self.queue_deadline = math.inf  # set when accepted
        self.slot, self.slot_gen = -1, 0
        self.worker: _Worker | None = None
        self.started = 0.0
        self.deadline = self.ack_by = math.inf
        self.acked = False
        self.tries = 0


class _Worker:
    def __init__(self, role: str, proc, conn, started: float):
        self.role, self.proc, self.conn, self.started = role, proc, conn, started
        self.pid = proc.pid
        self.ready = self.preloaded = False
        self.request: Request | None = None
        self.dying = False  # terminated or killed by us
        self.killed = False  # SIGKILL sent
        self.kill_at = math.inf
        self.kill_reason = ""  # set when killed for being stopped or unresponsive: a crash
        self.dying_request: Request | None = None  # its slot stays leased until the process is gone
        self.stopped_since: float | None = None


class _RoleState:
    def __init__(self, role: Role, ring: SlotRing | None, slots: int, queue_limit: int):
        self.role, self.name, self.ring = role, role.name, ring
        self.slot_owner: list[Request | None] = [None] * slots
        self.queue_limit = queue_limit
        self.queue: deque[Request] = deque()
        self.current: Request | None = None
        self.workers: list[_Worker] = []
        self.started = 0
        self.startup_failures = 0
        self.stats: dict[str, Any] = dict.fromkeys(
            ("requests", "done", "errors", "cancels", "respawns", "timeouts", "crashes", "dropped", "retries",
             "bytes_sent", "bytes_received", "messages_sent", "messages_received"), 0)
        self.stats["spawn_to_ready_s"] = []

    def next_timer(self) -> float:
        """The nearest deadline of this role's request, queue and workers."""
        t = math.inf
        if self.current is not None:
            t = min(self.current.deadline, math.inf if self.current.acked else self.current.ack_by)
        if self.queue:
            t = min(t, min(q.queue_deadline for q in self.queue))
        for w in self.workers:
            t = min(t, w.kill_at, math.inf if w.ready or w.dying else w.started + START_TIMEOUT_S)
        return t

    def stopped_workers(self, now: float) -> list[tuple[_Worker, str]]:
        """Workers to SIGKILL because they are stopped: at once if dying, else after a grace."""
        out = []
        for w in self.workers:
            if w.killed:
                continue
            if launch.state(w.pid) != "stopped":
                w.stopped_since = None
            elif w.dying:
                out.append((w, ""))
            elif w.stopped_since is None:
                w.stopped_since = now
            elif now - w.stopped_since >= STOPPED_GRACE_S:
                out.append((w, f"it was stopped (SIGSTOP) for {now - w.stopped_since:.1f} s"))
        return out

    def lease(self, req: Request) -> bool:
        """Lease a free slot to ``req`` (False if every slot is taken)."""
        free = [i for i, o in enumerate(self.slot_owner) if o is None]
        if not free:
            return False
        req.slot = free[0]
        req.slot_gen = self.ring.lease(req.slot, req.id)
        self.slot_owner[req.slot] = req
        log.debug("lease role=%s slot=%d request=%d generation=%d", self.name, req.slot, req.id, req.slot_gen)
        return True

    def free(self, req: Request, bump: bool = False) -> None:
        """Give ``req``'s slot back (``bump``: with a new generation, after a failure or a death)."""
        if 0 <= req.slot < len(self.slot_owner) and self.slot_owner[req.slot] is req:
            self.slot_owner[req.slot] = None
            self.ring.free(req.slot, bump=bump)
            log.debug("release role=%s slot=%d request=%d bump=%s", self.name, req.slot, req.id, bump)
        req.slot = -1

    def start_worker(self, ctx, options) -> None:
        from .worker import worker_main

        parent_conn, child_conn = ctx.Pipe(duplex=True)
        started = time.perf_counter()
        proc = launch.start(ctx, worker_main, (child_conn, self.name, options.level(), options.log_file,
                                                options.worker_threads), name=f"soma-shm-{self.name}")
        child_conn.close()
        self.workers.append(_Worker(self.name, proc, parent_conn, started))
        self.started += 1
        respawn = self.started > (2 if options.spares else 1)
        self.stats["respawns"] += respawn
        log.debug("%s role=%s pid=%d method=%s", "respawn" if respawn else "spawn", self.name, proc.pid,
                  options.method)

    def snapshot(self) -> dict:
        """Counters and state for callers (a copy)."""
        s = dict(self.stats)
        s["spawn_to_ready_s"] = list(self.stats["spawn_to_ready_s"])
        s["workers"] = [w.pid for w in self.workers]
        s["busy"] = self.current is not None
        s["busy_pid"] = self.current.worker.pid if self.current is not None else None
        s["busy_started"] = self.current is not None and self.current.acked  # the worker took it
        live = [w for w in self.workers if w.ready and not w.dying]
        s["idle_pids"] = [w.pid for w in live if w.request is None]
        s["ready"] = len(live)
        s["queued"] = len(self.queue)
        s["preloaded"] = [w.preloaded for w in live]
        s["slots"] = {"total": len(self.slot_owner), "computing": sum(o is not None for o in self.slot_owner),
                      "capacity_bytes": 0 if self.ring is None else self.ring.capacity}
        return s



class Supervisor:
    """Owns the workers of every role; see the module docstring.

    ``options`` is a :class:`soma_shm.EngineOptions`; ``ctx`` the multiprocessing context workers
    are started from. Creates each role's slot ring here (in the caller) and unlinks it when the
    supervisor ends.
    """

    def __init__(self, options, ctx, roles: dict[str, Role] = ROLES):
        self.options, self._ctx = options, ctx
        self.roles: dict[str, Role] = dict(roles)
        self._roles: dict[str, _RoleState] = {}
        try:
            for name, role in roles.items():
                n = role.slots(options)
                ring = SlotRing.create(name, n, role.capacity(options)) if n else None
                self._roles[name] = _RoleState(role, ring, n, role.queue_limit(options))
        except BaseException:
            self._unlink_rings()
            raise
        self._lock = threading.Lock()  # inbox + pending (a leaf: nothing is called under it)
        self._inbox: deque = deque()
        self._pending: dict[int, Request] = {}
        self._closing = False
        self._snap_lock = threading.Lock()  # a leaf
        self._snapshot: dict = {}
        self._ids = itertools.count(1)
        self._out: list[tuple[Future, Any, BaseException | None]] = []
        self._next_sweep = 0.0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._publish()
        self._thread = threading.Thread(target=self._run, name="soma-shm-supervisor", daemon=True)
        self._thread.start()
        self._wake()  # start the workers

    # ---------------------------------------------------------------- callers (any thread)
    def new_id(self) -> int:
        return next(self._ids)

    def submit(self, req: Request) -> None:
        with self._lock:
            if self._closing:
                raise EngineClosed("the engine is closed; create a new Engine")
            self._pending[req.id] = req
            self._inbox.append(req)
        self._wake()

    def cancel(self, ids=None, role: str | None = None, why: str = "cancelled by the caller") -> int:
        """Cancel pending requests (by id, or of a role, or all); returns how many this call ended."""
        with self._lock:
            reqs = [r for r in self._pending.values()
                    if (ids is None or r.id in ids) and (role is None or r.role == role)]
        n = sum(settle(r.future, exc=RequestCancelled(f"{r.role} request {r.id} cancelled: {why}")) for r in reqs)
        if n:
            self._wake()
        return n

    def close(self, timeout: float = 10.0) -> None:
        """Cancel everything, stop every worker, unlink the rings; waits unless called from the
        supervisor thread itself (a callback). Safe to call twice."""
        with self._lock:
            first = not self._closing
            self._closing = True
        if first:
            self.cancel(why="the engine closed")
            self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def closed(self) -> bool:
        return self._closing

    def stats(self) -> dict:
        with self._snap_lock:
            snap = self._snapshot
        return {k: (dict(v, spawn_to_ready_s=list(v["spawn_to_ready_s"]), slots=dict(v["slots"]))
                    if isinstance(v, dict) else v) for k, v in snap.items()}

    def _wake(self) -> None:
        with self._lock:
            if self._wake_w is None:
                return  # the supervisor ended
            try:
                os.write(self._wake_w, b"x")
            except OSError:  # full: a wake-up is pending anyway
                pass

    # ---------------------------------------------------------------- the supervisor thread
    def _run(self) -> None:
        try:
            while True:
                objs: list[Any] = [self._wake_r]
                for r in self._roles.values():
                    for w in r.workers:
                        objs += [w.conn, w.proc.sentinel]
                timeout = max(0.0, self._next_timer() - time.perf_counter())
                ready = set(multiprocessing.connection.wait(objs, None if timeout == math.inf else timeout))
                if self._wake_r in ready:
                    os.read(self._wake_r, 4096)
                try:
                    finished = self._step(ready)
                except Exception:  # pragma: no cover - a bug here must not end supervision
                    log.exception("supervisor step failed")
                    finished = False
                self._publish()
                out, self._out = self._out, []
                for future, value, exc in out:
                    settle(future, value, exc)
                if finished:
                    return
        finally:
            with self._lock:
                self._closing = True  # nothing new is taken; whatever still waits is told
            self.cancel(why="the engine's supervisor stopped")
            for r in self._roles.values():
                for w in list(r.workers):
                    launch.signal_pid(w.pid, signal.SIGKILL)
                    self._reap(r, w)
            self._unlink_rings()
            with self._lock:
                fds, self._wake_w = (self._wake_r, self._wake_w), None
            for fd in fds:
                os.close(fd)
            log.debug("supervisor ended")

    def _step(self, ready: set) -> bool:
        while True:
            with self._lock:
                if not self._inbox:
                    break
                req = self._inbox.popleft()
            self._accept(req)
        for r in self._roles.values():
            for w in list(r.workers):
                if w.conn in ready:
                    self._receive(r, w)
            for w in list(r.workers):
                if w.proc.sentinel in ready:
                    self._reap(r, w)
        self._timers()
        for r in self._roles.values():
            self._drop_cancelled(r)
        if self._closing:
            return self._wind_down()
        for r in self._roles.values():
            self._ensure_workers(r)
            self._dispatch(r)
        return False

    def _next_timer(self) -> float:
        t = self._next_sweep if any(r.workers for r in self._roles.values()) else math.inf
        return min([t] + [r.next_timer() for r in self._roles.values()])

    # ------------------------------------------------------------------ requests
    def _accept(self, req: Request) -> None:
        r = self._roles[req.role]
        r.stats["requests"] += 1
        if r.role.policy == "supersede":
            reason = RequestCancelled(f"{r.name} request superseded by request {req.id}")
            for old in list(r.queue):
                r.queue.remove(old)
                self._forget(old)
                if settle(old.future, exc=reason):
                    r.stats["cancels"] += 1
            if r.current is not None:
                if settle(r.current.future, exc=reason):
                    r.stats["cancels"] += 1
                self._terminate(r, "superseded")
        elif len(r.queue) >= r.queue_limit:
            dropped = r.queue.popleft()
            self._forget(dropped)
            r.stats["dropped"] += 1
            self._fail(dropped, QueueFull(
                f"{r.name} request {dropped.id} was dropped: more than {r.queue_limit} requests were waiting "
                f"(raise {_queue_option(self.options, r.name)} or wait for results)"))
        # Everything a queued request waits for is bounded (a start, then the computations ahead
        # of it): past the sum of those bounds something is wrong, and it is given up.
        ahead = len(r.queue) + (r.current is not None)
        req.queue_deadline = req.submitted + START_TIMEOUT_S + (ahead + 1) * self.options.timeout
        r.queue.append(req)

    def _forget(self, req: Request) -> None:
        with self._lock:
            self._pending.pop(req.id, None)

    def _fail(self, req: Request, exc: BaseException) -> None:
        self._forget(req)
        self._out.append((req.future, None, exc))

    def _drop_cancelled(self, r: _RoleState) -> None:
        """Requests the caller cancelled: drop the waiting ones, stop the computing one."""
        for req in [q for q in r.queue if q.future.done()]:
            r.queue.remove(req)
            self._forget(req)
            r.stats["cancels"] += 1
        if r.current is not None and r.current.future.done():
            r.stats["cancels"] += 1
            self._terminate(r, "cancelled")

    def _dispatch(self, r: _RoleState) -> None:
        while r.current is None and r.queue:
            w = next((w for w in r.workers if w.ready and w.request is None and not w.dying), None)
            if w is None:
                return
            state = launch.state(w.pid)
            if state != "running" or not w.proc.is_alive():  # liveness before dispatch
                if state == "stopped":
                    self._kill(w, "it was stopped (SIGSTOP)")
                else:
                    self._reap(r, w)
                continue
            req = r.queue[0]
            if req.future.done():  # cancelled by the caller since this step began
                r.queue.popleft()
                self._forget(req)
                r.stats["cancels"] += 1
                continue
            if r.ring is not None and not r.lease(req):
                return  # every slot still belongs to a terminated worker not reaped yet
            r.queue.popleft()
            now = time.perf_counter()
            req.worker, req.started, req.acked = w, now, False
            req.ack_by, req.deadline = now + ACK_GRACE_S, now + self.options.timeout
            w.request, r.current = req, req
            msg = Compute(req.id, req.task, req.slot, req.slot_gen,
                          None if r.ring is None else r.ring.desc(), req.audio, req.params)
            if self._send(r, w, msg):
                log.debug("start role=%s request=%d pid=%d slot=%d", r.name, req.id, w.pid, req.slot)

    def _send(self, r: _RoleState, w: _Worker, msg) -> bool:
        data = encode(msg)
        try:
            w.conn.send_bytes(data)
        except (OSError, ValueError):
            self._kill(w, "its pipe is broken")
            return False
        r.stats["bytes_sent"] += len(data)
        r.stats["messages_sent"] += 1
        return True

    def _receive(self, r: _RoleState, w: _Worker) -> None:
        while w in r.workers:
            try:
                if not w.conn.poll():
                    return
                data = w.conn.recv_bytes()
            except (EOFError, OSError):
                return  # the sentinel reports the death
            r.stats["bytes_received"] += len(data)
            r.stats["messages_received"] += 1
            msg = decode(data)
            req = w.request
            if isinstance(msg, Ready):
                w.ready, w.preloaded = True, msg.preloaded
                r.stats["spawn_to_ready_s"].append(time.perf_counter() - w.started)
                r.startup_failures = 0
                if self.options.method == "forkserver" and not w.preloaded:
                    log.warning("forkserver did not preload the kernels (pid=%d): workers start slowly", w.pid)
                log.debug("ready role=%s pid=%d after %.3fs (warm %.3fs)", r.name, w.pid,
                          time.perf_counter() - w.started, msg.warm_s)
            elif req is None or req.id != msg.request_id:
                continue  # an answer to a request given up on
            elif isinstance(msg, Started):
                req.acked = True
            elif isinstance(msg, Done):
                w.request = r.current = None
                self._done(r, req, msg)
            elif isinstance(msg, Failed):
                w.request = r.current = None
                r.free(req, bump=True)
                r.stats["errors"] += 1
                self._fail(req, _caller_error(r.name, req.id, msg.error))

    def _done(self, r: _RoleState, req: Request, msg: Done) -> None:
        now = time.perf_counter()
        timings = dict(msg.meta)
        timings.update(queued_s=req.started - req.submitted, total_s=now - req.submitted,
                       overhead_s=now - req.submitted - msg.meta.get("compute_s", 0.0))
        payload = None
        if msg.slot >= 0:
            if (msg.slot, msg.generation) != (req.slot, req.slot_gen) or not r.ring.check(req.slot, req.id, req.slot_gen):
                r.stats["errors"] += 1
                r.free(req, bump=True)
                self._fail(req, WorkerError(f"{r.name} request {req.id}: the result slot did not check out (stale)"))
                return
            payload = _read_slot(r.ring, req.slot, r.role.slot_kind, req.params)
        r.free(req)
        r.stats["done"] += 1
        log.debug("done role=%s request=%d slot=%d total=%.1fms", r.name, req.id, msg.slot, timings["total_s"] * 1e3)
        self._forget(req)
        if req.future.done():
            return
        try:
            value = req.make_result(payload, timings) if req.make_result else (payload, timings)
        except Exception as exc:  # pragma: no cover - a result that cannot be built is reported
            self._out.append((req.future, None, exc))
            return
        self._out.append((req.future, value, None))

    # ------------------------------------------------------------------ workers
    def _ensure_workers(self, r: _RoleState) -> None:
        if r.startup_failures >= MAX_STARTUP_FAILURES:
            # Workers die before they are ready: stop restarting and fail what waits (no crash loop).
            while r.queue:
                req = r.queue.popleft()
                self._fail(req, WorkerCrashed(
                    f"{r.name} workers fail to start ({r.startup_failures} in a row); see the log "
                    "(EngineOptions(log_level='DEBUG')) for why", None))
            return
        if r.role.on_demand and r.started == 0 and not r.queue and r.current is None:
            return  # started by its first request
        wanted = 2 if self.options.spares else 1
        while len(r.workers) < wanted:  # a dying worker still counts: never more than `wanted`
            r.start_worker(self._ctx, self.options)

    def _terminate(self, r: _RoleState, why: str) -> None:
        """Stop the computing request by terminating its worker (its future is resolved already).

        The process is signalled, not waited for: the next request goes to the spare meanwhile.
        Its slot stays leased until the process is reaped, then gets a new generation, so nothing
        it half-wrote can be shown; it is SIGKILLed if it outlives :data:`TERM_GRACE_S`.
        """
        req, r.current = r.current, None
        self._forget(req)
        w = req.worker
        log.info("terminate role=%s request=%d pid=%s (%s)", r.name, req.id, w.pid, why)
        w.request, w.dying, w.dying_request = None, True, req
        w.kill_at = time.perf_counter() + TERM_GRACE_S
        launch.signal_pid(w.pid, signal.SIGTERM)
        if launch.state(w.pid) == "stopped":
            self._kill(w, "")

    def _kill(self, w: _Worker, reason: str) -> None:
        """SIGKILL ``w`` now; a ``reason`` makes its death a crash (its request is retried if it
        never started, else fails with WorkerCrashed)."""
        if reason and not w.dying:
            w.kill_reason = reason
            log.warning("kill role=%s pid=%s: %s", w.role, w.pid, reason)
        w.dying, w.killed, w.kill_at = True, True, math.inf
        launch.signal_pid(w.pid, signal.SIGKILL)

    def _timers(self) -> None:
        now = time.perf_counter()
        for r in self._roles.values():
            req = r.current
            if req is not None and now >= req.deadline:
                r.stats["timeouts"] += 1
                log.warning("timeout role=%s request=%d pid=%s after %.1fs", r.name, req.id, req.worker.pid,
                            self.options.timeout)
                self._out.append((req.future, None, WorkerTimeout(
                    f"{r.name} request {req.id} exceeded the timeout of {self.options.timeout:g} s; its worker was "
                    "terminated (raise EngineOptions.timeout for longer work)")))
                self._terminate(r, "timeout")
            elif req is not None and not req.acked and now >= req.ack_by:
                req.ack_by = math.inf
                self._kill(req.worker, f"it did not take request {req.id} within {ACK_GRACE_S:g} s")
            for q in [q for q in r.queue if now >= q.queue_deadline]:
                r.queue.remove(q)
                r.stats["timeouts"] += 1
                self._fail(q, WorkerTimeout(
                    f"{r.name} request {q.id} waited {now - q.submitted:.0f} s for a worker and was given up "
                    "(see the log for why the role's workers do not take requests)"))
            for w in r.workers:
                if now >= w.kill_at:
                    self._kill(w, "")
                elif not w.ready and not w.dying and now - w.started >= START_TIMEOUT_S:
                    self._kill(w, f"it was not ready {START_TIMEOUT_S:g} s after its start")
        if now >= self._next_sweep:
            self._next_sweep = now + LIVENESS_S
            for r in self._roles.values():
                for w, reason in r.stopped_workers(now):
                    self._kill(w, reason)

    def _reap(self, r: _RoleState, w: _Worker) -> None:
        """The process is gone (or being killed): account for it and its request, release it."""
        if w not in r.workers:
            return
        self._receive(r, w)  # what it said before it died (a Started decides retry or crash)
        w.proc.join(timeout=2.0)
        code = w.proc.exitcode
        r.workers.remove(w)
        for close in (w.conn.close, w.proc.close):
            try:
                close()
            except (OSError, ValueError):
                pass
        if w.dying_request is not None:
            r.free(w.dying_request, bump=True)  # confirmed dead: a new generation first
            w.dying_request = None
        crashed = not w.dying or bool(w.kill_reason)
        if not w.ready and (not w.dying or w.kill_reason):
            r.startup_failures += 1
        req = w.request
        if crashed:
            r.stats["crashes"] += 1
            log.warning("crash role=%s pid=%s exitcode=%s request=%s", r.name, w.pid, code, req.id if req else None)
        else:
            log.debug("reaped role=%s pid=%s exitcode=%s", r.name, w.pid, code)
        if req is None:
            return
        if r.current is req:
            r.current = None
        r.free(req, bump=True)
        if req.future.done():
            self._forget(req)
        elif not req.acked and req.tries < MAX_TRIES and not self._closing:
            req.tries += 1
            r.stats["retries"] += 1
            r.queue.appendleft(req)  # it never started: the next worker takes it
            log.info("retry role=%s request=%d: worker pid=%s died before taking it", r.name, req.id, w.pid)
        else:
            how = w.kill_reason or f"died with exit code {code}"
            self._fail(req, WorkerCrashed(
                f"the {r.name} worker (pid {w.pid}) {how} while computing request {req.id}; it is restarted "
                "automatically", code))

    def _wind_down(self) -> bool:
        """Closing: stop idle workers, terminate busy ones; True once every worker is gone."""
        for r in self._roles.values():
            for req in list(r.queue):
                r.queue.remove(req)
                self._fail(req, RequestCancelled(f"{r.name} request {req.id} cancelled: the engine closed"))
            if r.current is not None:
                self._terminate(r, "the engine closed")
            for w in r.workers:
                if w.dying:
                    continue
                w.dying, w.kill_at = True, time.perf_counter() + TERM_GRACE_S
                if w.ready and w.request is None:
                    try:
                        w.conn.send_bytes(encode(Stop()))
                    except (OSError, ValueError):
                        self._kill(w, "")
                else:
                    launch.signal_pid(w.pid, signal.SIGTERM)
                if launch.state(w.pid) == "stopped":
                    self._kill(w, "")
        return not any(r.workers for r in self._roles.values())

    # ------------------------------------------------------------------ state for callers
    def _publish(self) -> None:
        snap = {name: r.snapshot() for name, r in self._roles.items()}
        with self._snap_lock:
            self._snapshot = snap

    def _unlink_rings(self) -> None:
        for r in self._roles.values():
            if r.ring is not None:
                r.ring.close()
                r.ring.unlink()
                r.ring = None


def _caller_error(role: str, rid: int, err: BaseException) -> BaseException:
    """What the caller gets for a worker's exception: soma_shm's own errors as they are (their
    ``__cause__`` is the remote traceback), anything else as a WorkerError caused by it."""
    if isinstance(err, SomaError):
        return err
    wrapped = WorkerError(f"{role} worker failed on request {rid}: {type(err).__name__}: {err}",
                          getattr(err.__cause__, "tb", None))
    wrapped.__cause__ = err
    return wrapped


def _queue_option(options, role: str) -> str:
    name = f"{role}_queue"
    return f"EngineOptions.{name}" if hasattr(options, name) else f"the {role} role's queue_limit"


def _read_slot(ring: SlotRing, slot: int, kind: str, params: Any) -> dict:
    """Copy a written slot's result out (the result owns its arrays; the slot is free again)."""
    def owned(view):
        a = view.copy()
        a.flags.writeable = False
        return a

    if kind == "image":
        image, mag = ring.image_views(slot)
        want_mag = isinstance(params, dict) and params.get("magnitude", False)
        return {"image": owned(image), "magnitude": owned(mag) if want_mag and mag is not None else None}
    if kind == "points":
        return {"points": owned(ring.points_view(slot))}
    return {"samples": owned(ring.samples_view(slot))}
