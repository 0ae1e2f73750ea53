"""The supervisor: one thread that alone owns the workers, the queues, the slots and the deadlines.

Callers (any thread) only touch the *inbox*: they append a command under a small lock, note the
request in the pending table, and write one byte to the wake-up pipe. Cancelling resolves the
request's future in the caller's thread at once (so a cancel never waits for the supervisor) and
wakes the supervisor, which then stops whatever still works on it. The supervisor waits on the
wake-up pipe, every worker's pipe and every worker's sentinel, and on the nearest deadline; it
holds no lock while it works, publishes a snapshot of its state for :meth:`Supervisor.stats`,
and resolves futures (which runs their callbacks) only after that, with no lock held. Lock
order (``docs/design.md``, "Supervisor and lock order"): inbox lock and snapshot lock are leaves; nothing is
called while holding them.

Per role (:data:`soma_shm.ipc.protocol.ROLES`): at most one computing worker, plus an idle warm
spare with ``spares``; workers that die, stop or stop answering are reaped and replaced; a
request that a worker never acknowledged (it died before reading it) goes to the next worker.
What is done to one role's queue, slots and workers is :class:`soma_shm.ipc.roles.RoleState`;
a worker process as the supervisor sees it is :class:`soma_shm.ipc.workers.Worker`.
"""

from __future__ import annotations

import itertools
import logging
import math
import multiprocessing.connection
import os
import queue
import signal
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable

from ..errors import EngineClosed, RequestCancelled
from . import launch
from .protocol import ROLES, Role
from .roles import MAX_STARTUP_FAILURES, Request, RoleState, settle
from .workers import Worker

__all__ = ["Supervisor", "Request", "MAX_STARTUP_FAILURES"]

log = logging.getLogger("soma_shm.engine")

LIVENESS_S = 0.2  # how often every worker's process state is read


class _Arrival:
    """A worker the launcher thread started, for the inbox: the exception its start raised
    instead, or None if the engine was closing and it was not started."""

    def __init__(self, role: str, worker: Worker | BaseException | None):
        self.role, self.worker = role, worker


class Supervisor:
    """Owns the workers of every role; see the module docstring.

    ``options`` is a :class:`soma_shm.EngineOptions`; ``ctx`` the multiprocessing context workers
    are started from. Creates each role's slot ring here (in the caller) and unlinks it when the
    supervisor ends. Each role's state is a :class:`soma_shm.ipc.roles.RoleState`, of which the
    supervisor is the *ledger*: the pending table callers cancel from, and the outcomes it sets on
    the futures after each step.
    """

    def __init__(self, options, ctx, roles: dict[str, Role] = ROLES):
        self.options, self._ctx = options, ctx
        self.roles: dict[str, Role] = dict(roles)
        self._roles: dict[str, RoleState] = {}
        try:
            for name, role in roles.items():
                self._roles[name] = RoleState(role, options, self)
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
        # Starting a worker waits for the new process (the forkserver's fork: milliseconds, more on
        # a busy machine); a thread of its own does it, so the supervisor keeps delivering results
        # and dispatching meanwhile. It hands each new worker over through the inbox.
        self._launches: queue.SimpleQueue = queue.SimpleQueue()
        self._launcher = threading.Thread(target=self._launch_loop, name="soma-shm-launcher", daemon=True)
        self._launcher.start()
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

    def request(self, role: str, params: Any, make_result: Callable | None, on_result: Callable | None,
                audio, task: str | None = None):
        """Submit a request for ``role`` (``task``, ``"module:function"``, overrides the role's
        task); returns its :class:`soma_shm.results.RequestHandle`. ``make_result(id, payload,
        timings)`` builds the result; ``on_result(result_or_exception)`` is called when it ends."""
        from ..results import RequestHandle, on_result_callback

        rid = self.new_id()
        handle = RequestHandle(self, role, rid)
        if on_result is not None:
            handle.add_done_callback(on_result_callback(on_result))
        build = None if make_result is None else (lambda payload, timings: make_result(rid, payload, timings))
        req = Request(rid, role, task or self.roles[role].task, params, handle, build, audio)
        self.submit(req)
        log.debug("submit role=%s request=%d task=%s", role, rid, req.task)
        return handle

    def pending_ids(self) -> set[int]:
        """Ids of the requests submitted and not ended yet."""
        with self._lock:
            return set(self._pending)

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

    def worker_pids(self, role: str | None = None) -> list[int]:
        """Worker process ids (of one role, or all) as last published."""
        st = self.stats()
        return [pid for name in ((role,) if role else self.roles) for pid in st[name]["workers"]]

    def wait_ready(self, timeout: float) -> bool:
        """Block until every role has its ready workers (False after ``timeout`` seconds)."""
        deadline, wanted = time.monotonic() + timeout, 2 if self.options.spares else 1
        # an on-demand role that never had a request has no workers to wait for
        while not all(s["ready"] >= wanted for name, s in self.stats().items()
                      if not (self.roles[name].on_demand and not s["workers"])):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def _wake(self) -> None:
        with self._lock:
            if self._wake_w is None:
                return  # the supervisor ended
            try:
                os.write(self._wake_w, b"x")
            except OSError:  # full: a wake-up is pending anyway
                pass

    # ---------------------------------------------------------------- the launcher thread
    def _launch_loop(self) -> None:
        while True:
            role = self._launches.get()
            if role is None:
                return
            got: Worker | BaseException | None = None
            if not self._closing:
                try:
                    got = Worker.start(role, self._ctx, self.options)
                except Exception as exc:
                    got = exc
            with self._lock:
                self._inbox.append(_Arrival(role, got))
            self._wake()

    # ---------------------------------------------------------------- the supervisor thread
    def _run(self) -> None:
        try:
            while True:
                objs: list[Any] = [self._wake_r]
                for r in self._roles.values():
                    for w in r.workers:
                        objs += w.waitables()
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
            self._launches.put(None)
            self._launcher.join(10.0)
            with self._lock:
                arrived, self._inbox = [a for a in self._inbox if isinstance(a, _Arrival)], deque()
            for a in arrived:
                if isinstance(a.worker, Worker):
                    self._roles[a.role].workers.append(a.worker)
            for r in self._roles.values():
                for w in list(r.workers):
                    launch.signal_pid(w.pid, signal.SIGKILL)
                    r.reap(w)
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
                item = self._inbox.popleft()
            if isinstance(item, _Arrival):
                self._roles[item.role].arrived(item.worker)
            else:
                self._roles[item.role].accept(item)
        for r in self._roles.values():
            for w in list(r.workers):
                if w.conn in ready:
                    r.receive(w)
            for w in list(r.workers):
                if w.proc.sentinel in ready:
                    r.reap(w)
        now = time.perf_counter()
        for r in self._roles.values():
            r.timers(now)
        if now >= self._next_sweep:
            self._next_sweep = now + LIVENESS_S
            for r in self._roles.values():
                r.kill_stopped(now)
        for r in self._roles.values():
            r.drop_cancelled()
        if self._closing:
            for r in self._roles.values():
                r.wind_down()
            return not any(r.workers or r.starting for r in self._roles.values())
        for r in self._roles.values():
            r.ensure_workers()
            r.dispatch()
        return False

    def _next_timer(self) -> float:
        t = self._next_sweep if any(r.workers for r in self._roles.values()) else math.inf
        return min([t] + [r.next_timer() for r in self._roles.values()])

    # ------------------------------------------------------------- the ledger (for RoleState)
    @property
    def closing(self) -> bool:
        return self._closing

    def forget(self, req: Request) -> None:
        """Drop ``req`` from the pending table (nothing can cancel it any more)."""
        with self._lock:
            self._pending.pop(req.id, None)

    def fail(self, req: Request, exc: BaseException) -> None:
        """Forget ``req`` and fail its future with ``exc`` after this step."""
        self.forget(req)
        self._out.append((req.future, None, exc))

    def launch(self, role: str) -> None:
        """Start a worker of ``role`` on the launcher thread (it arrives through the inbox)."""
        self._launches.put(role)

    def resolve(self, req: Request, value: Any = None, exc: BaseException | None = None) -> None:
        """Set ``req``'s future to ``value`` (or ``exc``) after this step."""
        self._out.append((req.future, value, exc))

    # ------------------------------------------------------------------ state for callers
    def _publish(self) -> None:
        snap = {name: r.snapshot() for name, r in self._roles.items()}
        with self._snap_lock:
            self._snapshot = snap

    def _unlink_rings(self) -> None:
        for r in self._roles.values():
            r.unlink()
