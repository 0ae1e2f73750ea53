"""One role's state and what the supervisor does to it: queue, slots, workers, dispatch, reaping.

A :class:`RoleState` is owned by the supervisor's thread (:mod:`soma_shm.ipc.supervisor`); no
caller touches it. It applies its role's policy (:class:`soma_shm.ipc.protocol.Role`) to the
requests the supervisor accepts, gives the first waiting one to an idle worker (after checking
that the worker still runs), reads the workers' answers, and accounts for workers that die: a
request its worker never acknowledged goes to the next worker, one it was computing fails with
WorkerCrashed. It reports to its *ledger* (the supervisor): ``forget(req)`` drops a request from
the pending table, ``fail(req, exc)`` and ``resolve(req, value)`` queue the future's outcome,
which the supervisor sets after its step with no lock held; ``launch(role)`` asks for a new worker,
which arrives later (:meth:`RoleState.arrived`); ``ledger.closing`` says the engine is closing.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from typing import Any, Callable

from ..errors import QueueFull, RequestCancelled, SomaError, WorkerCrashed, WorkerError, WorkerTimeout
from .blocks import SlotRing
from .protocol import Compute, Done, Failed, Ready, Role, Started, decode, encode
from .workers import START_TIMEOUT_S, Worker

__all__ = ["Request", "RoleState", "settle", "MAX_STARTUP_FAILURES"]

log = logging.getLogger("soma_shm.engine")

MAX_STARTUP_FAILURES = 3  # workers of a role that die before they are ready, in a row
MAX_TRIES = 3  # times a request is given to a new worker when the last one died before reading it
ACK_GRACE_S = 2.0  # a worker that does not acknowledge a request within this is killed


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
        self.worker: Worker | None = None
        self.started = 0.0
        self.deadline = self.ack_by = math.inf
        self.acked = False
        self.tries = 0


class RoleState:
    """The queue, the computing request, the slots, the workers and the counters of one role."""

    def __init__(self, role: Role, options, ledger):
        self.role, self.name = role, role.name
        self.options, self._ledger = options, ledger
        n = role.slots(options)
        self.ring: SlotRing | None = SlotRing.create(role.name, n, role.capacity(options)) if n else None
        self.slot_owner: list[Request | None] = [None] * n
        self.queue_limit = role.queue_limit(options)
        self.queue: deque[Request] = deque()
        self.current: Request | None = None
        self.workers: list[Worker] = []
        self.started = 0
        self.starting = 0  # workers asked for that have not arrived yet
        self.startup_failures = 0
        self.stats: dict[str, Any] = dict.fromkeys(
            ("requests", "done", "errors", "cancels", "respawns", "timeouts", "crashes", "dropped", "retries",
             "bytes_sent", "bytes_received", "messages_sent", "messages_received"), 0)
        self.stats["spawn_to_ready_s"] = []

    # ------------------------------------------------------------------ requests
    def accept(self, req: Request) -> None:
        """A new request: apply the role's policy to the older ones, then queue it."""
        self.stats["requests"] += 1
        if self.role.policy == "supersede":
            reason = RequestCancelled(f"{self.name} request superseded by request {req.id}")
            for old in list(self.queue):
                self.queue.remove(old)
                self._ledger.forget(old)
                if settle(old.future, exc=reason):
                    self.stats["cancels"] += 1
            if self.current is not None:
                if settle(self.current.future, exc=reason):
                    self.stats["cancels"] += 1
                self.terminate("superseded")
        elif len(self.queue) >= self.queue_limit:
            dropped = self.queue.popleft()
            self._ledger.forget(dropped)
            self.stats["dropped"] += 1
            self._ledger.fail(dropped, QueueFull(
                f"{self.name} request {dropped.id} was dropped: more than {self.queue_limit} requests were waiting "
                f"(raise {_queue_option(self.options, self.name)} or wait for results)"))
        # Everything a queued request waits for is bounded (a start, then the computations ahead
        # of it): past the sum of those bounds something is wrong, and it is given up.
        ahead = len(self.queue) + (self.current is not None)
        req.queue_deadline = req.submitted + START_TIMEOUT_S + (ahead + 1) * self.options.timeout
        self.queue.append(req)

    def drop_cancelled(self) -> None:
        """Requests the caller cancelled: drop the waiting ones, stop the computing one."""
        for req in [q for q in self.queue if q.future.done()]:
            self.queue.remove(req)
            self._ledger.forget(req)
            self.stats["cancels"] += 1
        if self.current is not None and self.current.future.done():
            self.stats["cancels"] += 1
            self.terminate("cancelled")

    def dispatch(self) -> None:
        """Give the first waiting request to an idle worker that still runs."""
        while self.current is None and self.queue:
            w = next((w for w in self.workers if w.idle()), None)
            if w is None:
                return
            state = w.state()
            if state != "running" or not w.proc.is_alive():  # liveness before dispatch
                if state == "stopped":
                    w.kill("it was stopped (SIGSTOP)")
                else:
                    self.reap(w)
                continue
            req = self.queue[0]
            if req.future.done():  # cancelled by the caller since this step began
                self.queue.popleft()
                self._ledger.forget(req)
                self.stats["cancels"] += 1
                continue
            if self.ring is not None and not self.lease(req):
                return  # every slot still belongs to a terminated worker not reaped yet
            self.queue.popleft()
            now = time.perf_counter()
            req.worker, req.started, req.acked = w, now, False
            req.ack_by, req.deadline = now + ACK_GRACE_S, now + self.options.timeout
            w.request, self.current = req, req
            msg = Compute(req.id, req.task, req.slot, req.slot_gen,
                          None if self.ring is None else self.ring.desc(), req.audio, req.params)
            data = encode(msg)
            if not w.send(data):
                w.kill("its pipe is broken")
                continue
            self.stats["bytes_sent"] += len(data)
            self.stats["messages_sent"] += 1
            log.debug("start role=%s request=%d pid=%d slot=%d", self.name, req.id, w.pid, req.slot)

    def timers(self, now: float) -> None:
        """Deadlines that ran out: the computing request's, its acknowledgement's, the queue's,
        and the workers' grace and start-up."""
        req = self.current
        if req is not None and now >= req.deadline:
            self.stats["timeouts"] += 1
            log.warning("timeout role=%s request=%d pid=%s after %.1fs", self.name, req.id, req.worker.pid,
                        self.options.timeout)
            self._ledger.resolve(req, exc=WorkerTimeout(
                f"{self.name} request {req.id} exceeded the timeout of {self.options.timeout:g} s; its worker was "
                "terminated (raise EngineOptions.timeout for longer work)"))
            self.terminate("timeout")
        elif req is not None and not req.acked and now >= req.ack_by:
            req.ack_by = math.inf
            req.worker.kill(f"it did not take request {req.id} within {ACK_GRACE_S:g} s")
        for q in [q for q in self.queue if now >= q.queue_deadline]:
            self.queue.remove(q)
            self.stats["timeouts"] += 1
            self._ledger.fail(q, WorkerTimeout(
                f"{self.name} request {q.id} waited {now - q.submitted:.0f} s for a worker and was given up "
                "(see the log for why the role's workers do not take requests)"))
        for w in self.workers:
            if now >= w.kill_at:
                w.kill("")
            elif not w.ready and not w.dying and now - w.started >= START_TIMEOUT_S:
                w.kill(f"it was not ready {START_TIMEOUT_S:g} s after its start")

    def next_timer(self) -> float:
        """The nearest deadline of this role's request, queue and workers."""
        t = math.inf
        if self.current is not None:
            t = min(self.current.deadline, math.inf if self.current.acked else self.current.ack_by)
        if self.queue:
            t = min(t, min(q.queue_deadline for q in self.queue))
        for w in self.workers:
            t = min(t, w.next_timer())
        return t

    # ------------------------------------------------------------------ slots
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

    def unlink(self) -> None:
        """Close and unlink the slot ring (the supervisor is ending)."""
        if self.ring is not None:
            self.ring.close()
            self.ring.unlink()
            self.ring = None

    # ------------------------------------------------------------------ answers
    def receive(self, w: Worker) -> None:
        """Read what ``w`` said: Ready, or Started / Done / Failed for its request."""
        for data in w.messages():
            if w not in self.workers:
                return
            self.stats["bytes_received"] += len(data)
            self.stats["messages_received"] += 1
            msg = decode(data)
            req = w.request
            if isinstance(msg, Ready):
                w.ready, w.preloaded = True, msg.preloaded
                self.stats["spawn_to_ready_s"].append(time.perf_counter() - w.started)
                self.startup_failures = 0
                if self.options.method == "forkserver" and not w.preloaded:
                    log.warning("forkserver did not preload the kernels (pid=%d): workers start slowly", w.pid)
                log.debug("ready role=%s pid=%d after %.3fs (warm %.3fs)", self.name, w.pid,
                          time.perf_counter() - w.started, msg.warm_s)
            elif req is None or req.id != msg.request_id:
                continue  # an answer to a request given up on
            elif isinstance(msg, Started):
                req.acked = True
            elif isinstance(msg, Done):
                w.request = self.current = None
                self._done(req, msg)
            elif isinstance(msg, Failed):
                w.request = self.current = None
                self.free(req, bump=True)
                self.stats["errors"] += 1
                self._ledger.fail(req, _caller_error(self.name, req.id, msg.error))

    def _done(self, req: Request, msg: Done) -> None:
        now = time.perf_counter()
        timings = dict(msg.meta)
        timings.update(queued_s=req.started - req.submitted, total_s=now - req.submitted,
                       overhead_s=now - req.submitted - msg.meta.get("compute_s", 0.0))
        payload = None
        if msg.slot >= 0:
            if (msg.slot, msg.generation) != (req.slot, req.slot_gen) or not self.ring.check(req.slot, req.id,
                                                                                             req.slot_gen):
                self.stats["errors"] += 1
                self.free(req, bump=True)
                self._ledger.fail(req, WorkerError(
                    f"{self.name} request {req.id}: the result slot did not check out (stale)"))
                return
            payload = _read_slot(self.ring, req.slot, self.role.slot_kind, req.params)
        self.free(req)
        self.stats["done"] += 1
        log.debug("done role=%s request=%d slot=%d total=%.1fms", self.name, req.id, msg.slot,
                  timings["total_s"] * 1e3)
        self._ledger.forget(req)
        if req.future.done():
            return
        try:
            value = req.make_result(payload, timings) if req.make_result else (payload, timings)
        except Exception as exc:  # pragma: no cover - a result that cannot be built is reported
            self._ledger.resolve(req, exc=exc)
            return
        self._ledger.resolve(req, value)

    # ------------------------------------------------------------------ workers
    def ensure_workers(self) -> None:
        """Start workers up to the role's number (unless they keep failing to start)."""
        if self.startup_failures >= MAX_STARTUP_FAILURES:
            # Workers die before they are ready: stop restarting and fail what waits (no crash loop).
            while self.queue:
                self._ledger.fail(self.queue.popleft(), WorkerCrashed(
                    f"{self.name} workers fail to start ({self.startup_failures} in a row); see the log "
                    "(EngineOptions(log_level='DEBUG')) for why", None))
            return
        if self.role.on_demand and self.started == 0 and not self.queue and self.current is None:
            return  # started by its first request
        wanted = 2 if self.options.spares else 1
        # A dying worker and one on its way still count: never more than `wanted` processes.
        while len(self.workers) + self.starting < wanted:
            self.starting += 1
            self._ledger.launch(self.name)

    def arrived(self, w: Worker | BaseException | None) -> None:
        """A worker asked for by :meth:`ensure_workers` has started (an exception: its start
        raised; None: the engine was closing and it was not started)."""
        self.starting -= 1
        if w is None:
            return
        if isinstance(w, BaseException):
            self.startup_failures += 1
            log.warning("start role=%s failed: %s: %s", self.name, type(w).__name__, w)
            return
        self.workers.append(w)
        self.started += 1
        respawn = self.started > (2 if self.options.spares else 1)
        self.stats["respawns"] += respawn
        log.debug("%s role=%s pid=%d method=%s", "respawn" if respawn else "spawn", self.name, w.pid,
                  self.options.method)

    def terminate(self, why: str) -> None:
        """Stop the computing request by terminating its worker (its future is resolved already).

        The process is signalled, not waited for: the next request goes to the spare meanwhile.
        Its slot stays leased until the process is reaped, then gets a new generation, so nothing
        it half-wrote can be shown; it is SIGKILLed if it outlives its grace.
        """
        req, self.current = self.current, None
        self._ledger.forget(req)
        w = req.worker
        log.info("terminate role=%s request=%d pid=%s (%s)", self.name, req.id, w.pid, why)
        w.request, w.dying_request = None, req
        w.terminate()

    def kill_stopped(self, now: float) -> None:
        """SIGKILL workers that are stopped: at once if dying, else after a grace."""
        for w in self.workers:
            reason = w.check_stopped(now)
            if reason is not None:
                w.kill(reason)

    def reap(self, w: Worker) -> None:
        """The process is gone (or being killed): account for it and its request, release it."""
        if w not in self.workers:
            return
        self.receive(w)  # what it said before it died (a Started decides retry or crash)
        code = w.close()
        self.workers.remove(w)
        if w.dying_request is not None:
            self.free(w.dying_request, bump=True)  # confirmed dead: a new generation first
            w.dying_request = None
        crashed = not w.dying or bool(w.kill_reason)
        if not w.ready and (not w.dying or w.kill_reason):
            self.startup_failures += 1
        req = w.request
        if crashed:
            self.stats["crashes"] += 1
            log.warning("crash role=%s pid=%s exitcode=%s request=%s", self.name, w.pid, code,
                        req.id if req else None)
        else:
            log.debug("reaped role=%s pid=%s exitcode=%s", self.name, w.pid, code)
        if req is None:
            return
        if self.current is req:
            self.current = None
        self.free(req, bump=True)
        if req.future.done():
            self._ledger.forget(req)
        elif not req.acked and req.tries < MAX_TRIES and not self._ledger.closing:
            req.tries += 1
            self.stats["retries"] += 1
            self.queue.appendleft(req)  # it never started: the next worker takes it
            log.info("retry role=%s request=%d: worker pid=%s died before taking it", self.name, req.id, w.pid)
        else:
            how = w.kill_reason or f"died with exit code {code}"
            self._ledger.fail(req, WorkerCrashed(
                f"the {self.name} worker (pid {w.pid}) {how} while computing request {req.id}; it is restarted "
                "automatically", code))

    def wind_down(self) -> None:
        """Closing: cancel what waits, stop idle workers, terminate busy ones."""
        for req in list(self.queue):
            self.queue.remove(req)
            self._ledger.fail(req, RequestCancelled(f"{self.name} request {req.id} cancelled: the engine closed"))
        if self.current is not None:
            self.terminate("the engine closed")
        for w in self.workers:
            if w.dying:
                continue
            if w.ready and w.request is None:
                w.stop()
            else:
                w.terminate()

    # ------------------------------------------------------------------ state for callers
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
