"""Resynthesis and export benchmark: soma_shm's synthesis kernel against a numpy per-partial
renderer, side by side, plus the edit path and the MIDI exports.

Scenarios (48 kHz, seeded): ``--partials`` partials (default 10,000) of 2 s each, a point every
10 ms (201 points: a vibrato of +-20 cents at 5 Hz, a slow amplitude swell), spread over a 60 s
file.

- ``full``: every partial into a 60 s float32 mix: packing (validation, slopes, knot phases)
  and rendering, separately and in total;
- ``numpy``: the same partials rendered one by one with numpy (``np.interp`` of frequency and
  amplitude at every sample, a cumulative-sum phase, ``np.sin``, the same 5 ms fades) on the
  first ``--numpy-partials`` partials (default 1,000), with soma_shm timed on the same subset:
  the ratio compares like with like;
- ``edit``: :class:`soma_shm.Resynthesis` holding all partials; one partial's points change
  (subtract the old samples, add the new): time per edit; then the same through the engine's
  synth worker (:class:`soma_shm.synth.EngineResynthesis`: the mix in a shared block), from the
  call to the answer, and the rebuild that sends every partial's knots once;
- ``mpe``: MPE export of all partials (``soma_shm.export.write_mpe``) to a temporary folder,
  and the same events written as one ``mido.Message`` each on ``--mido-partials`` partials.

Usage::

    python perf/bench_synth.py [--repeats 5] [--partials 10000] [--numpy-partials 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from _util import machine, median, table, timed, write_json  # noqa: E402

FS = 48_000
FILE_S = 60.0


def make_partials(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    k = np.arange(201) * 0.01
    for _ in range(n):
        t0 = rng.uniform(0.0, FILE_S - 2.0)
        f0 = float(np.exp(rng.uniform(np.log(60.0), np.log(8000.0))))
        f = f0 * 2 ** ((20 / 1200) * np.sin(2 * np.pi * 5.0 * k + rng.uniform(0, 2 * np.pi)))
        a = rng.uniform(0.001, 0.01) * (0.6 + 0.4 * np.sin(np.pi * k / 2.0))
        out.append(np.stack([t0 + k, f, a], axis=1))
    return out


def numpy_render(partials: list[np.ndarray], frames: int, fade_ms: float = 5.0) -> np.ndarray:
    """The plain way: per partial, interpolate at every sample, integrate, sine, fade, add."""
    out = np.zeros(frames, dtype=np.float64)
    fl = fade_ms * 1e-3 * FS
    for p in partials:
        t, f, a = p[:, 0], p[:, 1], p[:, 2]
        n0, n1 = int(np.ceil(t[0] * FS)), min(int(np.floor(t[-1] * FS)), frames - 1)
        n = np.arange(n0, n1 + 1)
        ts = n / FS
        fr = np.interp(ts, t, f)
        am = np.interp(ts, t, a)
        phase = np.cumsum(fr) / FS
        w = np.minimum(np.clip((n - t[0] * FS) / fl, 0, 1), np.clip((t[-1] * FS - n) / fl, 0, 1))
        out[n0:n1 + 1] += am * w * np.sin(2 * np.pi * phase)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--partials", type=int, default=10_000)
    ap.add_argument("--numpy-partials", type=int, default=1_000)
    ap.add_argument("--mido-partials", type=int, default=300)
    ap.add_argument("--edits", type=int, default=30)
    args = ap.parse_args()

    import numba

    from soma_shm.synth import Resynthesis, pack_partials, render_packed

    frames = int(FILE_S * FS)
    parts = make_partials(args.partials)
    results: dict = {"machine": machine(), "threads": numba.get_num_threads(), "partials": args.partials,
                     "points_per_partial": 201, "seconds_per_partial": 2.0, "file_s": FILE_S, "fs": FS}
    rows = []

    # cold: first pack + render loads (or compiles) the kernels
    t = time.perf_counter()
    render_packed(pack_partials(parts[:2], FS), FS, np.zeros(FS, np.float32))
    results["cold_s"] = time.perf_counter() - t

    def full():
        packed = pack_partials(parts, FS)
        t1 = time.perf_counter()
        out = np.zeros(frames, np.float32)
        render_packed(packed, FS, out)
        return t1, out

    totals, packs, cpus = [], [], []
    for _ in range(args.repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        t1, out = full()
        t2 = time.perf_counter()
        cpus.append(time.process_time() - c0)
        totals.append(t2 - t0)
        packs.append(t1 - t0)
    renders = [a - b for a, b in zip(totals, packs)]
    # CPU seconds of this process (both threads): what the render costs whatever else runs here
    results["full"] = {"total_s": median(totals), "pack_s": median(packs), "render_s": median(renders),
                       "cpu_s": median(cpus), "runs_total_s": totals, "load_average": list(os.getloadavg())}
    rows.append(["full (pack + render)", args.partials, median(totals), median(packs), median(renders)])

    # side by side on a subset
    sub = parts[: args.numpy_partials]
    ours_sub, _ = timed(lambda: render_packed(pack_partials(sub, FS), FS, np.zeros(frames, np.float32)), args.repeats)
    np_repeats = max(1, min(3, args.repeats))
    c0 = time.process_time()
    np_sub, ref = timed(lambda: numpy_render(sub, frames), np_repeats)
    np_cpu = (time.process_time() - c0) / np_repeats
    c0 = time.process_time()
    render_packed(pack_partials(sub, FS), FS, np.zeros(frames, np.float32))
    ours_cpu = time.process_time() - c0
    ours_out = render_packed(pack_partials(sub, FS), FS, np.zeros(frames, np.float32))
    ratio = median(np_sub) / median(ours_sub)
    # Same partials, different interpolation (linear vs monotone cubic) and phase: compare levels.
    rms_db = 20 * np.log10(np.sqrt(np.mean(ours_out.astype(np.float64) ** 2)) / np.sqrt(np.mean(ref**2)))
    results["side_by_side"] = {"partials": len(sub), "soma_s": median(ours_sub), "numpy_s": median(np_sub),
                               "ratio": ratio, "cpu_ratio": np_cpu / ours_cpu, "numpy_cpu_s": np_cpu,
                               "soma_cpu_s": ours_cpu, "level_difference_db": rms_db,
                               "numpy_extrapolated_full_s": median(np_sub) * args.partials / len(sub),
                               "full_ratio_vs_extrapolated_numpy": median(np_sub) * args.partials / len(sub) / median(totals)}
    rows.append([f"soma_shm, {len(sub)} partials", len(sub), median(ours_sub), float("nan"), float("nan")])
    rows.append([f"numpy per partial, {len(sub)}", len(sub), median(np_sub), float("nan"), float("nan")])

    # edits
    doc = {f"p{i}": (p, False) for i, p in enumerate(parts)}
    rs = Resynthesis(FS, frames)
    t = time.perf_counter()
    rs.rebuild(doc)
    results["rebuild_s"] = time.perf_counter() - t
    rng = np.random.default_rng(1)
    edit_times, edit_cpu = [], []
    for e in range(args.edits):
        pid = f"p{int(rng.integers(0, args.partials))}"
        pts = doc[pid][0].copy()
        pts[:, 1] *= 2 ** (rng.normal(0, 0.05))
        doc[pid] = (pts, False)
        c = time.process_time()
        t = time.perf_counter()
        rs.update(doc)
        edit_times.append(time.perf_counter() - t)
        edit_cpu.append(time.process_time() - c)
    results["edit"] = {"median_s": median(edit_times), "max_s": max(edit_times), "edits": args.edits,
                       "cpu_median_s": median(edit_cpu),
                       "note": "update() of the whole document dict with one partial changed: diff + subtract + add"}
    rows.append(["edit one 2 s partial", 1, median(edit_times), float("nan"), float("nan")])

    # the same edits through the engine's synth worker (the mix in a shared block)
    import soma_shm
    from soma_shm.synth import EngineResynthesis

    with soma_shm.Engine(spares=False) as eng:
        eng.open(np.zeros(frames, np.float32), sample_rate=FS)
        ers = EngineResynthesis(eng)
        t = time.perf_counter()
        ers.update(doc)  # the first update rebuilds: every partial's knots cross the pipe once
        results["engine_rebuild_s"] = time.perf_counter() - t
        results["engine_rebuild_worker_s"] = ers.last_timings.get("compute_s")
        engine_edits, worker_compute = [], []
        for e in range(args.edits):
            pid = f"p{int(rng.integers(0, args.partials))}"
            pts = doc[pid][0].copy()
            pts[:, 1] *= 2 ** (rng.normal(0, 0.05))
            doc[pid] = (pts, False)
            t = time.perf_counter()
            ers.update(doc)
            engine_edits.append(time.perf_counter() - t)
            worker_compute.append(ers.last_timings.get("compute_s", float("nan")))
        full_now = render_packed(pack_partials([p for p, _ in doc.values()], FS), FS, np.zeros(frames, np.float32))
        exact = float(np.abs(ers.mix - full_now).max())
    results["engine_edit"] = {"median_s": median(engine_edits), "max_s": max(engine_edits),
                              "worker_compute_median_s": median(worker_compute),
                              "max_difference_to_a_full_render": exact}
    rows.append(["edit through the synth worker", 1, median(engine_edits), float("nan"), float("nan")])
    rows.append(["rebuild through the synth worker", args.partials, results["engine_rebuild_s"], float("nan"), float("nan")])

    # exports
    try:
        from soma_shm import export as ex
    except ImportError:
        ex = None
    if ex is not None:
        with tempfile.TemporaryDirectory() as tmp:
            out_path = Path(tmp) / "bench.mid"
            mpe_times, written = timed(lambda: ex.write_mpe(parts, out_path), args.repeats)
            mido_sub = parts[: args.mido_partials]
            mido_times, _ = timed(lambda: ex.write_mpe(mido_sub, Path(tmp) / "mido.mid", via_mido=True), 1)
            ours_small, _ = timed(lambda: ex.write_mpe(mido_sub, Path(tmp) / "small.mid"), args.repeats)
        results["mpe"] = {"partials": args.partials, "median_s": median(mpe_times), "files": len(written),
                          "mido_messages_partials": len(mido_sub), "mido_messages_s": median(mido_times),
                          "ours_same_partials_s": median(ours_small),
                          "mido_ratio": median(mido_times) / median(ours_small)}
        rows.append(["MPE export", args.partials, median(mpe_times), float("nan"), float("nan")])
        rows.append([f"MPE via mido.Message, {len(mido_sub)}", len(mido_sub), median(mido_times), float("nan"), float("nan")])

    print(table(rows, ["scenario", "partials", "median s", "pack s", "render s"]))
    sbs = results["side_by_side"]
    print(f"\nside by side on {sbs['partials']} partials: numpy {sbs['numpy_s']:.3f} s vs soma_shm "
          f"{sbs['soma_s']:.3f} s = {sbs['ratio']:.1f}x (levels differ by {sbs['level_difference_db']:.2f} dB)")
    print(f"CPU time: numpy {sbs['numpy_cpu_s']:.3f} s vs soma_shm {sbs['soma_cpu_s']:.3f} s = {sbs['cpu_ratio']:.1f}x; "
          f"full render {results['full']['cpu_s']:.3f} CPU s (load average {results['full']['load_average'][0]:.1f})")
    print(f"full: {results['full']['total_s']:.3f} s for {args.partials} partials "
          f"(target <= 1 s; {sbs['full_ratio_vs_extrapolated_numpy']:.1f}x numpy extrapolated); "
          f"edit: {1e3 * results['edit']['median_s']:.2f} ms in process ({1e3 * results['edit']['cpu_median_s']:.2f} CPU ms), "
          f"{1e3 * results['engine_edit']['median_s']:.2f} ms through the synth worker (target <= 10 ms)")
    if "mpe" in results:
        print(f"MPE export of {args.partials} partials: {results['mpe']['median_s']:.3f} s (target <= 2 s); "
              f"one mido.Message per event: {results['mpe']['mido_ratio']:.1f}x slower")
    print(f"threads: {results['threads']}; cold start {results['cold_s']:.2f} s")
    print("wrote", write_json("bench_synth.json", results))


if __name__ == "__main__":
    main()
