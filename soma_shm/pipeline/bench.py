"""``soma-shm bench``: a short profile of this machine with the installed package.

The full, side-by-side benchmarks live in the repository's ``perf/`` folder; this one needs
nothing but the package: the ``cwt2`` image, a 10-minute pooled STFT overview, a 2 s snap, and the
same image through an Engine (latency and the engine's own overhead). Medians of ``repeats``.
"""

from __future__ import annotations

import statistics
import time

import numpy as np


def _median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run(repeats: int = 5) -> int:
    from .. import Engine, cwt_image, snap_trace, stft_image
    from ..demo_audio import demo_recording

    fs = 48_000
    x = np.tile(demo_recording(12.0, fs), 50)[: 600 * fs]  # 10 minutes
    rows = []
    out = np.empty((600, 1600), np.float32)
    rows.append(("cwt2: CWT 1600x600 of 2 s", _median_time(lambda: cwt_image(x, fs, 2.0, 4.0, 20, 20_000, 1600, 600, out=out, check_finite=False), repeats)))
    ov = np.empty((512, 2048), np.float32)
    rows.append(("overview: STFT 2048x512 of 10 min", _median_time(lambda: stft_image(x, fs, 0, 600, 20, 20_000, 2048, 512, out=ov, check_finite=False), repeats)))
    vib = [(0.5, 225.0), (2.5, 218.0)]
    rows.append(("snap: 2 s trace", _median_time(lambda: snap_trace(x, fs, vib, check_finite=False), repeats)))
    with Engine() as eng:
        eng.open(x, sample_rate=fs)
        eng.wait_ready(120)
        over = []

        def one():
            r = eng.submit_viewport(2.0, 4.0, 20, 20_000, 1600, 600).result(120)
            over.append(r.timings["overhead_s"])
            r.release()

        rows.append(("engine: cwt2 submit -> result", _median_time(one, repeats)))
        rows.append(("engine: overhead beyond the kernel", statistics.median(over)))
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':{width}s}  median ms")
    for name, sec in rows:
        print(f"{name:{width}s}  {sec * 1000:9.2f}")
    return 0
