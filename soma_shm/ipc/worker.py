"""The worker process: imports and warms the kernels once, then serves requests until stopped.

A worker maps the audio block read-only and its role's slot ring read-write, computes into the
leased slot and answers with a few hundred bytes (request id, slot, generation, timings). It
installs no Python signal handlers (they could not run inside nopython code and would delay
``terminate()``), asks the kernel to kill it when its parent dies, and exits when its pipe
closes.

Messages are pickled tuples sent with ``send_bytes`` (so the engine can count every byte):

- to the worker: ``(op, request_id, ...)`` with op ``viewport``, ``snap``, ``stop`` and the
  test operations ``sleep``, ``raise``, ``exit``, ``kill``, ``pattern``;
- from the worker: ``("ready", pid, preloaded, warm_s)``, ``("done", request_id, slot,
  generation, meta)`` or ``("error", request_id, kind, message, traceback)``.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import sys
import time
import traceback

from . import _log

# Set when this module is first imported: in the forkserver (preloaded) or in the worker itself.
_LOADED_IN_PID = os.getpid()

log = logging.getLogger("soma_shm.worker")


def use_fork_safe_threads() -> None:
    """Make numba's parallel kernels use the fork-safe ``workqueue`` threading layer.

    GNU OpenMP (numba's usual choice) aborts a forked child whose parent already ran parallel
    code; the forkserver warms the kernels and then forks every worker, so workers and the
    forkserver use ``workqueue``. Must run before any parallel kernel executes in the process.
    """
    import numba

    numba.config.THREADING_LAYER = "workqueue"


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


class _State:
    """Mapped blocks of this worker, re-mapped when the engine sends new descriptors."""

    def __init__(self) -> None:
        self.audio_block = None
        self.audio = None
        self.ring = None
        self.pyramid_block = None
        self.pyramid = None

    def attach_audio(self, desc):
        from .blocks import AudioBlock

        if self.audio_block is None or self.audio_block.segment.name != desc.name:
            self.audio = None
            if self.audio_block is not None:
                self.audio_block.close()
            self.audio_block = AudioBlock.attach(desc)
            self.audio = self.audio_block.samples()
        return self.audio

    def attach_pyramid(self, desc):
        from .blocks import PyramidBlock

        if self.pyramid_block is None or self.pyramid_block.segment.name != desc.name:
            self.pyramid = None
            if self.pyramid_block is not None:
                self.pyramid_block.close()
                self.pyramid_block = None
            self.pyramid_block, self.pyramid = PyramidBlock.attach(desc)
        return self.pyramid

    def attach_ring(self, desc):
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


def _viewport(state: _State, request_id: int, audio_desc, ring_desc, slot: int, gen: int, p: dict) -> dict:
    from .. import render
    from .blocks import FLAG_MAGNITUDE, KIND_IMAGE

    audio = state.attach_audio(audio_desc)
    ring = state.attach_ring(ring_desc)
    if not ring.owned(slot, request_id, gen):
        raise RuntimeError(f"slot {slot} is no longer leased to request {request_id}")
    h, w = p["height"], p["width"]
    image, mag = ring.image_buffers(slot, h, w)
    t = time.perf_counter()
    if p.get("pyramid") is not None:
        pyramid = state.attach_pyramid(p["pyramid"])
        pyramid.image(p["t0"], p["t1"], p["fmin"], p["fmax"], w, h, p["settings"], out=mag)
    else:
        fn = render.cwt_image if p["method"] == "cwt" else render.stft_image
        fn(audio, audio_desc.sample_rate, p["t0"], p["t1"], p["fmin"], p["fmax"], w, h, p["settings"], out=mag,
           check_finite=False)
    t_kernel = time.perf_counter() - t
    render.tone_map(mag, p["amp_reference"], p["settings"], out=image)
    t_total = time.perf_counter() - t
    del image, mag
    ring.publish(slot, KIND_IMAGE, h, w, flags=FLAG_MAGNITUDE)
    return {"kernel_s": t_kernel, "compute_s": t_total}


def _snap(state: _State, request_id: int, audio_desc, ring_desc, slot: int, gen: int, p: dict) -> dict:
    from ..snap import snap_trace
    from .blocks import KIND_POINTS

    audio = state.attach_audio(audio_desc)
    ring = state.attach_ring(ring_desc)
    if not ring.owned(slot, request_id, gen):
        raise RuntimeError(f"slot {slot} is no longer leased to request {request_id}")
    t = time.perf_counter()
    points = snap_trace(audio, audio_desc.sample_rate, p["trace"], p["settings"], check_finite=False)
    t_kernel = time.perf_counter() - t
    cap = ring.capacity // 24
    if len(points) > cap:
        raise ValueError(
            f"the partial has {len(points)} points but a snap slot holds {cap}; snap a shorter trace "
            "or raise EngineOptions.max_snap_points"
        )
    view = ring.payload(slot, "float64", (len(points), 3), writable=True)
    view[:] = points
    del view
    ring.publish(slot, KIND_POINTS, count=len(points))
    return {"kernel_s": t_kernel, "compute_s": t_kernel}


def _pattern(state: _State, request_id: int, ring_desc, slot: int, gen: int, h: int, w: int, value: int, row_delay: float) -> dict:
    """Test operation: fill the image slot row by row (slowly), so a kill can land mid-write."""
    from .blocks import KIND_IMAGE

    ring = state.attach_ring(ring_desc)
    if not ring.owned(slot, request_id, gen):
        raise RuntimeError(f"slot {slot} is no longer leased to request {request_id}")
    image, _ = ring.image_buffers(slot, h, w)
    for r in range(h):
        image[r, :] = value
        if row_delay:
            time.sleep(row_delay)
    del image
    ring.publish(slot, KIND_IMAGE, h, w)
    return {}


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
        from .. import render

        render.warm_up()
    if threads:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    warm_s = time.perf_counter() - t
    state = _State()
    send = lambda msg: conn.send_bytes(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))  # noqa: E731
    send(("ready", pid, preloaded, warm_s))
    log.debug("worker ready role=%s pid=%d preloaded=%s warm=%.3fs", role, pid, preloaded, warm_s)
    try:
        while True:
            try:
                msg = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                break  # the engine is gone
            op = msg[0]
            if op == "stop":
                break
            rid = msg[1]
            log.debug("worker start role=%s pid=%d request=%d op=%s", role, pid, rid, op)
            try:
                if op == "viewport":
                    meta = _viewport(state, *msg[1:])
                    reply = ("done", rid, msg[4], msg[5], meta)
                elif op == "snap":
                    meta = _snap(state, *msg[1:])
                    reply = ("done", rid, msg[4], msg[5], meta)
                elif op == "pattern":
                    meta = _pattern(state, *msg[1:])
                    reply = ("done", rid, msg[3], msg[4], meta)
                elif op == "sleep":
                    time.sleep(msg[2])
                    reply = ("done", rid, -1, 0, {})
                elif op == "raise":
                    raise RuntimeError(f"requested failure in {role} worker")
                elif op == "exit":
                    os._exit(msg[2])
                elif op == "kill":
                    os.kill(pid, signal.SIGKILL)
                else:
                    raise ValueError(f"unknown operation {op!r}")
            except Exception as exc:
                reply = ("error", rid, type(exc).__name__, str(exc), traceback.format_exc())
            send(reply)
            log.debug("worker done role=%s pid=%d request=%d %s", role, pid, rid, reply[0])
    finally:
        state.close()
        try:
            conn.close()
        except OSError:  # pragma: no cover
            pass
