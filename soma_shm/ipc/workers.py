"""One worker process as the supervisor sees it: started, fed, signalled, reaped.

Used only by the supervisor's thread (:mod:`soma_shm.ipc.roles`, :mod:`soma_shm.ipc.supervisor`).
A :class:`Worker` holds the process, the parent's end of its duplex pipe and what the supervisor
knows of it (ready, the request it computes, whether it is being stopped). Stopping a worker never
waits: it is signalled, and SIGKILLed when its grace (:data:`TERM_GRACE_S`) runs out or at once
if it is stopped (SIGSTOP); its sentinel then tells the supervisor it is gone.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from typing import Any, Iterator

from . import launch
from .protocol import Stop, encode

__all__ = ["Worker", "TERM_GRACE_S", "STOPPED_GRACE_S", "START_TIMEOUT_S"]

log = logging.getLogger("soma_shm.engine")

TERM_GRACE_S = 0.5  # a terminated worker still alive after this is SIGKILLed
STOPPED_GRACE_S = 0.3  # a stopped (SIGSTOP) worker is SIGKILLed after this
START_TIMEOUT_S = 60.0  # a worker not ready this long after its start is killed (a startup failure)


class Worker:
    """A worker process of role ``role`` (see the module docstring)."""

    def __init__(self, role: str, proc, conn, started: float):
        self.role, self.proc, self.conn, self.started = role, proc, conn, started
        self.pid = proc.pid
        self.ready = self.preloaded = False
        self.request: Any = None  # the soma_shm.ipc.roles.Request it computes
        self.dying = False  # terminated or killed by us
        self.killed = False  # SIGKILL sent
        self.kill_at = math.inf
        self.kill_reason = ""  # set when killed for being stopped or unresponsive: a crash
        self.dying_request: Any = None  # its slot stays leased until the process is gone
        self.stopped_since: float | None = None
        # The worker's end of the pipe is closed (it exited, or is exiting): the pipe reads as
        # ready for ever, so only the sentinel is waited on until the process is reaped.
        self.pipe_closed = False

    @classmethod
    def start(cls, role: str, ctx, options) -> "Worker":
        """Start a worker of ``role`` from context ``ctx`` (it never imports the caller's
        ``__main__``: :func:`soma_shm.ipc.launch.start`)."""
        from .worker import worker_main

        parent_conn, child_conn = ctx.Pipe(duplex=True)
        started = time.perf_counter()
        proc = launch.start(ctx, worker_main, (child_conn, role, options.level(), options.log_file,
                                                options.worker_threads), name=f"soma-shm-{role}")
        child_conn.close()
        return cls(role, proc, parent_conn, started)

    # ------------------------------------------------------------------------ state
    def state(self) -> str:
        """``"running"``, ``"stopped"`` or ``"dead"`` as the kernel reports it."""
        return launch.state(self.pid)

    def idle(self) -> bool:
        """Ready, computing nothing and not being stopped."""
        return self.ready and self.request is None and not self.dying

    def check_stopped(self, now: float) -> str | None:
        """The reason to SIGKILL this worker now because it is stopped (``""``: it was dying
        anyway), or None. A live worker gets :data:`STOPPED_GRACE_S` first."""
        if self.killed:
            return None
        if self.state() != "stopped":
            self.stopped_since = None
        elif self.dying:
            return ""
        elif self.stopped_since is None:
            self.stopped_since = now
        elif now - self.stopped_since >= STOPPED_GRACE_S:
            return f"it was stopped (SIGSTOP) for {now - self.stopped_since:.1f} s"
        return None

    def next_timer(self) -> float:
        """When this worker must be SIGKILLed (its grace or its start-up ran out)."""
        return min(self.kill_at, math.inf if self.ready or self.dying else self.started + START_TIMEOUT_S)

    # ------------------------------------------------------------------------ signals
    def kill(self, reason: str) -> None:
        """SIGKILL now; a ``reason`` makes its death a crash (its request is retried if it never
        started, else fails with WorkerCrashed)."""
        if reason and not self.dying:
            self.kill_reason = reason
            log.warning("kill role=%s pid=%s: %s", self.role, self.pid, reason)
        self.dying, self.killed, self.kill_at = True, True, math.inf
        launch.signal_pid(self.pid, signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM now, SIGKILL after :data:`TERM_GRACE_S` (at once if it is stopped)."""
        self.dying, self.kill_at = True, time.perf_counter() + TERM_GRACE_S
        launch.signal_pid(self.pid, signal.SIGTERM)
        if self.state() == "stopped":
            self.kill("")

    def stop(self) -> None:
        """Ask an idle worker to exit (:class:`Stop`), SIGKILL after :data:`TERM_GRACE_S`."""
        self.dying, self.kill_at = True, time.perf_counter() + TERM_GRACE_S
        if not self.send(encode(Stop())):
            self.kill("")
        if self.state() == "stopped":
            self.kill("")

    # ------------------------------------------------------------------------ pipe
    def send(self, data: bytes) -> bool:
        """Write one message; False if the pipe is broken."""
        try:
            self.conn.send_bytes(data)
        except (OSError, ValueError):
            return False
        return True

    def messages(self) -> Iterator[bytes]:
        """The messages waiting on the pipe (none once it is closed: the sentinel tells a death)."""
        while True:
            try:
                if not self.conn.poll():
                    return
                data = self.conn.recv_bytes()
            except (EOFError, OSError):
                self.pipe_closed = True
                return
            yield data

    def waitables(self) -> list:
        """What the supervisor waits on for this worker: its sentinel, and its pipe while open."""
        return [self.proc.sentinel] if self.pipe_closed else [self.conn, self.proc.sentinel]

    def close(self) -> int | None:
        """Join the (dead or dying) process, close its pipe; its exit code."""
        self.proc.join(timeout=2.0)
        code = self.proc.exitcode
        for close in (self.conn.close, self.proc.close):
            try:
                close()
            except (OSError, ValueError):
                pass
        return code
