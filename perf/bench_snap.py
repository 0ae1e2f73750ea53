"""Snap benchmark: soma_shm.snap_trace against a PyWavelets-based snapper, side by side.

Scenarios (48 kHz, known trajectories; a rough 20-point stroke is drawn over each):

- ``vibrato20``: 440 Hz, 5 Hz vibrato +-20 cents, white noise at 20 dB SNR, 2 s trace;
- ``vibrato10``: the same at 10 dB SNR;
- ``glide``: an octave per second from 300 Hz, 2 s trace;
- ``decay``: 660 Hz decaying at 13 dB/s.

The PyWavelets snapper is the kind the seed app used: ``pywt.cwt`` over 1 s tiles (padded by
the wavelet support) on a 96 bins/octave grid within +-0.5 octave of the stroke, and the nearest
grid peak per point (no refinement). Both are warm (first call excluded); times are medians of
``--repeats`` runs. With ``--engine``, soma_shm is also timed through ``Engine.submit_snap``
(snap worker, points back through a shared slot).

Usage::

    python perf/bench_snap.py [--repeats 7] [--engine]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import _util  # noqa: E402

import soma_shm  # noqa: E402

FS = 48_000


def scenario(name: str, seed: int = 0):
    """(audio, truth_freq(t), truth_amp(t), stroke) for a named scenario."""
    rng = np.random.default_rng(seed)
    t = np.arange(3 * FS) / FS
    if name.startswith("vibrato"):
        f = lambda tt: 440 * 2 ** (20 / 1200 * np.sin(2 * np.pi * 5 * tt))  # noqa: E731
        a = lambda tt: np.full_like(tt, 0.3)  # noqa: E731
        snr = 20 if name == "vibrato20" else 10
    elif name == "glide":
        f = lambda tt: 300 * 2 ** tt  # noqa: E731
        a = lambda tt: np.full_like(tt, 0.2)  # noqa: E731
        snr = None
    elif name == "decay":
        f = lambda tt: np.full_like(tt, 660.0)  # noqa: E731
        a = lambda tt: 0.5 * np.exp(-1.5 * tt)  # noqa: E731
        snr = None
    else:
        raise ValueError(name)
    x = a(t) * np.sin(2 * np.pi * np.cumsum(f(t)) / FS)
    if snr is not None:
        rms = 0.3 / np.sqrt(2)
        x = x + rms * 10 ** (-snr / 20) * rng.standard_normal(len(t))
    tt = np.linspace(0.5, 2.5, 20)
    stroke = np.column_stack([tt, f(tt) * 2 ** (rng.uniform(-60, 60, 20) / 1200)])
    return x.astype(np.float32), f, a, stroke


def pywt_snap(audio: np.ndarray, fs: float, stroke: np.ndarray, settings=None) -> np.ndarray:
    """Tiled ``pywt.cwt`` + nearest peak on the 96 bins/octave grid (the seed app's approach)."""
    import pywt

    from soma_shm.plans import wavelet_sigma_samples

    s = settings or soma_shm.AnalysisSettings()
    dt = s.time_resolution_ms / 1000
    times = np.arange(stroke[0, 0], stroke[-1, 0] + 1e-9, dt)
    log2f = np.interp(times, stroke[:, 0], np.log2(stroke[:, 1]))
    bpo, half = s.bins_per_octave, int(round(s.freq_window_octaves * s.bins_per_octave))
    centre = np.round(log2f * bpo).astype(int)
    g = np.arange(centre.min() - half, centre.max() + half + 1)
    freqs = 2.0 ** (g / bpo)
    scales = s.wavelet_center * fs / freqs
    pad = int(np.ceil(5 * wavelet_sigma_samples(freqs.min(), fs, s)))
    out = np.empty((len(times), 3))
    tile = 1.0
    for t0 in np.arange(times[0], times[-1] + 1e-9, tile):
        sel = (times >= t0) & (times < t0 + tile)
        if not sel.any():
            continue
        a0 = int(t0 * fs) - pad
        a1 = int((t0 + tile) * fs) + pad
        seg = np.zeros(a1 - a0)
        lo, hi = max(a0, 0), min(a1, len(audio))
        seg[lo - a0 : hi - a0] = audio[lo:hi]
        coef, _ = pywt.cwt(seg, scales, s.wavelet, method="fft")
        mag = np.abs(coef) * (2.0 / np.sqrt(scales))[:, None]
        for k in np.flatnonzero(sel):
            n = int(round(times[k] * fs)) - a0
            rows = np.flatnonzero(np.abs(g - centre[k]) <= half)
            r = rows[np.argmax(mag[rows, n])]
            out[k] = (times[k], freqs[r], mag[r, n])
    return out


def errors(points: np.ndarray, f, a) -> dict:
    cents = np.abs(1200 * np.log2(points[:, 1] / f(points[:, 0])))
    amp_db = np.abs(20 * np.log10(points[:, 2] / a(points[:, 0])))
    return {
        "median_cents": float(np.median(cents)),
        "p95_cents": float(np.percentile(cents, 95)),
        "max_cents": float(cents.max()),
        "median_amp_db": float(np.median(amp_db)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--engine", action="store_true", help="also time soma_shm through Engine.submit_snap")
    args = p.parse_args(argv)

    results = {"machine": _util.machine(), "repeats": args.repeats, "scenarios": {}}
    rows = []
    engine = None
    if args.engine:
        engine = soma_shm.Engine()
    try:
        for name in ["vibrato20", "vibrato10", "glide", "decay"]:
            audio, f, a, stroke = scenario(name)
            res = {}
            soma_shm.snap_trace(audio, FS, stroke)  # warm
            times, pts = _util.timed(lambda: soma_shm.snap_trace(audio, FS, stroke), args.repeats)
            res["soma"] = {"median_s": _util.median(times), **errors(pts, f, a)}
            pywt_snap(audio, FS, stroke)
            times, pts = _util.timed(lambda: pywt_snap(audio, FS, stroke), max(3, args.repeats // 2))
            res["pywt"] = {"median_s": _util.median(times), **errors(pts, f, a)}
            if engine is not None:
                engine.open(audio, sample_rate=FS)
                engine.submit_snap(stroke).result(timeout=120)  # warm the worker
                ts = []
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    pts = engine.submit_snap(stroke).result(timeout=120).points
                    ts.append(time.perf_counter() - t)
                res["soma_engine"] = {"median_s": _util.median(ts), **errors(np.asarray(pts), f, a)}
            for method, r in res.items():
                r["slower_than_soma_x"] = r["median_s"] / res["soma"]["median_s"]
                rows.append(
                    [name, method, r["median_s"] * 1000, r["median_cents"], r["p95_cents"], r["median_amp_db"], r["slower_than_soma_x"]]
                )
            results["scenarios"][name] = res
    finally:
        if engine is not None:
            engine.close()
    print(_util.table(rows, ["scenario", "method", "median ms", "median cents", "p95 cents", "median amp dB", "x slower"]))
    path = _util.write_json("bench_snap.json", results)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
