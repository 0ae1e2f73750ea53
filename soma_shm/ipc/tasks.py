"""The task functions workers run, one per role of :data:`soma_shm.ipc.protocol.ROLES`.

Each takes a :class:`soma_shm.ipc.worker.Job`, computes into the job's output slot, publishes it
and returns timings (``kernel_s``, ``compute_s``). Parameters were validated in the caller's
process, so tasks skip the finite-sample checks.
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["viewport", "snap", "synth", "warm_up"]


def viewport(job) -> dict:
    """A viewport image (CWT, STFT, or cut from the file's pyramid) and its magnitude."""
    from .. import render

    p = job.params
    audio, fs = job.audio()
    h, w = p["height"], p["width"]
    image, mag = job.image_out(h, w)
    t = time.perf_counter()
    if p.get("pyramid") is not None:
        job.pyramid(p["pyramid"]).image(p["t0"], p["t1"], p["fmin"], p["fmax"], w, h, p["settings"], out=mag)
    else:
        fn = render.cwt_image if p["method"] == "cwt" else render.stft_image
        fn(audio, fs, p["t0"], p["t1"], p["fmin"], p["fmax"], w, h, p["settings"], out=mag, check_finite=False)
    t_kernel = time.perf_counter() - t
    render.tone_map(mag, p["amp_reference"], p["settings"], out=image)
    t_total = time.perf_counter() - t
    del image, mag
    job.publish_image(h, w)
    return {"kernel_s": t_kernel, "compute_s": t_total}


def snap(job) -> dict:
    """A traced partial snapped to the CWT ridge."""
    from ..snap import snap_trace

    p = job.params
    audio, fs = job.audio()
    t = time.perf_counter()
    points = snap_trace(audio, fs, p["trace"], p["settings"], check_finite=False)
    t_kernel = time.perf_counter() - t
    cap = job.capacity // 24
    if len(points) > cap:
        from ..errors import ParameterError

        raise ParameterError(
            f"the partial has {len(points)} points but a snap slot holds {cap}; snap a shorter trace "
            "or raise EngineOptions.max_snap_points"
        )
    view = job.points_out(len(points))
    view[:] = points
    del view
    job.publish_points(len(points))
    return {"kernel_s": t_kernel, "compute_s": t_kernel}


_MIX: dict = {}  # the mix block this worker has mapped (one file at a time)


def synth(job) -> dict:
    """Subtract and add partials in the open file's mix block (mapped writable, kept mapped)."""
    from ..synth import PartialArrays, render_packed
    from .mix import MixBlock

    p = job.params
    desc = p["mix"]
    block = _MIX.get("block")
    if block is None or block.segment.name != desc.name:
        _MIX.clear()
        if block is not None:
            block.close()
        block = _MIX["block"] = MixBlock.attach(desc)
    mix = block.samples()
    t = time.perf_counter()
    if p["rebuild"]:
        mix[:] = 0.0
    n = 0
    for knots, gain in ((p["remove"], -1.0), (p["add"], 1.0)):
        packed = PartialArrays.from_knots(*knots)
        if packed.count:
            render_packed(packed, desc.sample_rate, mix, 0, fade_ms=p["fade_ms"], gain=gain)
            n += packed.count
    del mix
    dt = time.perf_counter() - t
    return {"kernel_s": dt, "compute_s": dt, "partials": n}


def warm_up() -> None:
    """Load every kernel a worker runs (compiling them first, in parallel processes, if none is
    cached: :mod:`soma_shm.warmup`), on tiny inputs.

    Called once per worker (or once in the forkserver, before it forks any).
    """
    from ..warmup import warm_up as prepare

    prepare()
