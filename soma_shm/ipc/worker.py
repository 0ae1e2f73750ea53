"""The worker process: imports and warms the kernels once, then serves requests until stopped.

A worker maps the audio block read-only and its role's slot ring read-write, runs the task a
:class:`~soma_shm.ipc.protocol.Compute` names into the leased slot and answers with a few hundred
bytes (:mod:`soma_shm.ipc.protocol`). It installs no Python signal handlers (they could not run
inside nopython code and would delay ``terminate()``), asks the kernel to kill it when its parent
dies, and exits when its pipe closes. It never imports the caller's ``__main__`` (see
:mod:`soma_shm.ipc.launch`): it needs only soma_shm.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import sys
import time

from . import _log
from .protocol import Compute, Done, Ready, Started, Stop, decode, encode, failure

__all__ = ["Job", "worker_main", "use_fork_safe_threads"]

# Set when this module is first imported: in the forkserver (preloaded) or in the worker itself.
_LOADED_IN_PID = os.getpid()

log = logging.getLogger("soma_shm.worker")


def use_fork_safe_threads() -> None:
    """Make numba's parallel kernels use the fork-safe ``workqueue`` threading layer, started
    under a lock of this process alone.

    GNU OpenMP (numba's usual choice) aborts a forked child whose parent already ran parallel
    code; the forkserver warms the kernels and then forks every worker, so workers and the
    forkserver use ``workqueue``. Must run before any parallel kernel executes in the process.

    numba guards the start of its threading layer with a lock that it makes shared between
    processes (a POSIX semaphore) when multiprocessing's start method has "fork" in its name,
    and it takes that lock again on every ``numba.get_num_threads()`` (each CWT viewport calls
    it). Made in the forkserver, it would be shared by every worker forked from it: a worker
    terminated while holding it (a superseded viewport, at the wrong microsecond) would leave
    it held for ever, and every later worker would hang in its next request after
    acknowledging it. The workqueue pool is started per process (a forked child starts its
    own), and numba's per-thread lock still serialises the threads of one process, so the
    process-shared lock is replaced by none before numba makes it.
    """
    import numba
    from numba.np.ufunc import parallel

    numba.config.THREADING_LAYER = "workqueue"
    parallel._backend_init_process_lock = contextlib.nullcontext()


def _set_parent_death_signal() -> None:
    """Linux: the kernel SIGKILLs this process when its parent dies (no orphans)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # pragma: no cover - best effort; the pipe EOF check still applies
        pass


class _Mapped:
    """Blocks this worker has mapped, re-mapped when a request names other ones."""

    def __init__(self) -> None:
        self.audio_block = self.audio = None
        self.pyramid_block = self.pyramid = None
        self.ring = None

    def audio_for(self, desc):
        from .blocks import AudioBlock

        if self.audio_block is None or self.audio_block.segment.name != desc.name:
            self.audio = None
            if self.audio_block is not None:
                self.audio_block.close()
            self.audio_block = AudioBlock.attach(desc)
            self.audio = self.audio_block.samples()
        return self.audio

    def pyramid_for(self, desc):
        from .blocks import PyramidBlock

        if self.pyramid_block is None or self.pyramid_block.segment.name != desc.name:
            self.pyramid = None
            if self.pyramid_block is not None:
                self.pyramid_block.close()
                self.pyramid_block = None
            self.pyramid_block, self.pyramid = PyramidBlock.attach(desc)
        return self.pyramid

    def ring_for(self, desc):
        from .blocks import SlotRing

        if self.ring is None or self.ring.segment.name != desc.name:
            if self.ring is not None:
                self.ring.close()
            self.ring = SlotRing.attach(desc)
        return self.ring

    def close(self) -> None:
        self.audio = self.pyramid = None
        for block in (self.audio_block, self.pyramid_block, self.ring):
            if block is not None:
                block.close()
        self.audio_block = self.pyramid_block = self.ring = None


class Job:
    """One request as a task function sees it: its parameters, the audio, its output slot.

    The ``*_out`` methods check that the slot is still leased to this request (a request the
    engine gave up on must not write) and return writable views; ``publish_*`` records the
    result's shape and marks the slot written, after the payload is complete.
    """

    def __init__(self, msg: Compute, mapped: _Mapped):
        self.request_id = msg.request_id
        self.params = msg.params
        self.slot = msg.slot
        self.generation = msg.generation
        self._msg = msg
        self._mapped = mapped
        self.published = False

    def audio(self):
        """``(samples, sample_rate)`` of the open file (read-only float32 view)."""
        desc = self._msg.audio
        return self._mapped.audio_for(desc), desc.sample_rate

    def pyramid(self, desc):
        return self._mapped.pyramid_for(desc)

    @property
    def ring(self):
        ring = self._mapped.ring_for(self._msg.ring)
        if not ring.owned(self.slot, self.request_id, self.generation):
            raise RuntimeError(f"slot {self.slot} is no longer leased to request {self.request_id}")
        return ring

    @property
    def capacity(self) -> int:
        return self._msg.ring.capacity

    def image_out(self, height: int, width: int):
        """``(image uint8, magnitude float32)`` buffers of shape ``(height, width)`` in the slot."""
        return self.ring.image_buffers(self.slot, height, width)

    def points_out(self, count: int):
        return self.ring.payload(self.slot, "float64", (count, 3), writable=True)

    def samples_out(self, count: int):
        return self.ring.payload(self.slot, "float32", (count,), writable=True)

    def publish_image(self, height: int, width: int) -> None:
        from .blocks import FLAG_MAGNITUDE, KIND_IMAGE

        self.ring.publish(self.slot, KIND_IMAGE, height, width, flags=FLAG_MAGNITUDE)
        self.published = True

    def publish_points(self, count: int) -> None:
        from .blocks import KIND_POINTS

        self.ring.publish(self.slot, KIND_POINTS, count=count)
        self.published = True

    def publish_samples(self, count: int) -> None:
        from .blocks import KIND_SAMPLES

        self.ring.publish(self.slot, KIND_SAMPLES, count=count)
        self.published = True


_TASKS: dict = {}


def _task(path: str):
    fn = _TASKS.get(path)
    if fn is None:
        module, _, name = path.partition(":")
        fn = _TASKS[path] = getattr(importlib.import_module(module), name)
    return fn


def worker_main(conn, role: str, log_level: int | None, log_file: str | None, threads: int | None) -> None:
    """Entry point of a worker process."""
    _set_parent_death_signal()
    _log.configure(log_level, log_file)
    pid = os.getpid()
    preloaded = _LOADED_IN_PID != pid
    t = time.perf_counter()
    use_fork_safe_threads()
    if not preloaded:
        # Forked from the warmed forkserver, every kernel is already loaded (warming again
        # would only cost CPU while the request that replaced a terminated worker computes).
        from . import tasks

        tasks.warm_up()
    if threads:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    warm_s = time.perf_counter() - t
    mapped = _Mapped()

    def send(msg) -> None:
        conn.send_bytes(encode(msg))

    send(Ready(pid, preloaded, warm_s))
    log.debug("worker ready role=%s pid=%d preloaded=%s warm=%.3fs", role, pid, preloaded, warm_s)
    try:
        while True:
            try:
                msg = decode(conn.recv_bytes())
            except (EOFError, OSError):
                break  # the engine is gone
            if isinstance(msg, Stop):
                break
            rid = msg.request_id
            send(Started(rid))
            log.debug("worker start role=%s pid=%d request=%d op=%s", role, pid, rid, msg.task.rpartition(":")[2])
            job = Job(msg, mapped)
            try:
                meta = _task(msg.task)(job) or {}
                reply = Done(rid, msg.slot if job.published else -1, msg.generation, meta)
            except Exception as exc:
                reply = failure(rid, exc)
            del job
            send(reply)
            log.debug("worker done role=%s pid=%d request=%d %s", role, pid, rid, type(reply).__name__.lower())
    finally:
        mapped.close()
        try:
            conn.close()
        except OSError:  # pragma: no cover
            pass
