"""Kernel benchmark: soma_shm's CWT/STFT images side by side with PyWavelets and fCWT.

Workloads (48 kHz, seeded music-like recording, see perf/_util.py):

- ``cwt2``  : CWT image of a 2 s window, 20 Hz .. 20 kHz, 1600 x 600.
- ``cwt30`` : CWT image of a 30 s window, same image.
- ``stft_hour`` : pooled STFT overview of a one-hour recording, 2048 x 512, every frame.

Every method runs in its own fresh process (so its peak memory is its own) and produces the same
image: the baselines compute their CWT over the window padded by the wavelet support, take the
calibrated magnitude and max-pool it into the same columns. Reported per method: median wall time
of ``--repeats`` runs (soma's CWT: at least :data:`SOMA_MIN_REPEATS`), the first call (cache load, or compile with a cold cache), peak memory
beyond the audio, and the largest dB error over pixels above -80 dB against the float64
full-rate reference (tests/reference.py; every 8th row for cwt30). The CWT figures are checked
against the issue's targets (:data:`TARGETS`: median time and speed-up over fCWT in the same run)
and the 0.5 dB accuracy contract; a table says which are met.

Usage::

    python perf/bench_kernels.py            # full run, writes perf/results/bench_kernels.json
    python perf/bench_kernels.py --quick    # cwt2 and a 10-minute overview only, 3 repeats
    python perf/bench_kernels.py --compile-only --repeats 3   # cold compile: 1 process vs 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import _util  # noqa: E402

FS = 48_000
FMIN, FMAX, WIDTH, HEIGHT = 20.0, 20_000.0, 1600, 600
WORKLOADS = {
    # name: (recording seconds, t0, t1, width, height)
    "cwt2": (60.0, 20.0, 22.0, WIDTH, HEIGHT),
    "cwt30": (60.0, 15.0, 45.0, WIDTH, HEIGHT),
    "stft_hour": (3600.0, 0.0, 3600.0, 2048, 512),
    "stft_10min": (600.0, 0.0, 600.0, 2048, 512),
}
BASELINE_CHUNK_ROWS = 60  # baselines process this many rows at a time to bound their memory
# name: (median seconds at most, times faster than fCWT at least)
TARGETS = {"cwt2": (0.060, 10.0), "cwt30": (0.5, 30.0)}
SOMA_MIN_REPEATS = 11
"""soma's CWT images take well under a second, so the median is over at least this many runs:
on this shared machine a run of five can land two in a busy spell."""
MAX_DB_ERROR = 0.5  # docs/design.md, "Numerical contract": every pixel above -80 dB within 0.5 dB of the reference



# ----------------------------------------------------------------------------------- children
def _pool(mag: np.ndarray, a: np.ndarray, s0: int) -> np.ndarray:
    """Max-pool full-rate magnitudes (rows x samples from s0) into columns starting at a."""
    return np.maximum.reduceat(mag, a - s0, axis=1)


def _baseline_image(method: str, audio: np.ndarray, t0: float, t1: float, width: int, height: int) -> np.ndarray:
    from soma_shm.plans import column_bounds, row_frequencies, wavelet_sigma_samples
    from soma_shm.settings import AnalysisSettings

    settings = AnalysisSettings()
    freqs = row_frequencies(FMIN, FMAX, height)
    a, b = column_bounds(t0, t1, width, FS)
    pad = int(np.ceil(6 * wavelet_sigma_samples(FMIN, FS, settings)))
    lo, hi = max(0, int(a[0]) - pad), min(len(audio), int(b[-1]) + 1 + pad)
    seg = audio[lo:hi]
    out = np.empty((height, width), dtype=np.float32)
    scales = settings.wavelet_center * FS / freqs
    for r0 in range(0, height, BASELINE_CHUNK_ROWS):
        rows = slice(r0, min(height, r0 + BASELINE_CHUNK_ROWS))
        if method == "pywt":
            import pywt

            coef, _ = pywt.cwt(seg.astype(np.float64), scales[rows], settings.wavelet, method="fft")
            # PyWavelets scales by sqrt(scale); a sine of amplitude A then reads A sqrt(s) / 2.
            mag = np.abs(coef) * (2.0 / np.sqrt(scales[rows]))[:, None]
        elif method == "fcwt":
            import fcwt

            # Morlet(3): three cycles per time-sigma, the resolution of cmor8-1.5.
            morl = fcwt.Morlet(3.0)
            f_rows = freqs[rows]
            sc = fcwt.Scales(morl, fcwt.FCWT_LOGSCALES, FS, float(f_rows.min()), float(f_rows.max()), len(f_rows))
            tfm = np.zeros((len(f_rows), len(seg)), dtype=np.complex64)
            fcwt.FCWT(morl, os.cpu_count() or 1, False, True).cwt(seg.astype(np.float32), sc, tfm)
            mag = np.abs(tfm)[::-1]  # fCWT's rows ascend in frequency; ours descend
        else:
            raise ValueError(method)
        out[rows] = _pool(mag[:, int(a[0]) - lo : int(b[-1]) + 1 - lo], a, int(a[0]))
        del mag
    return out


def _scipy_stft_overview(audio: np.ndarray, width: int, height: int) -> np.ndarray:
    """The straightforward alternative: the full STFT of the file, then pooling."""
    from scipy.signal import ShortTimeFFT
    from scipy.signal.windows import hann

    from soma_shm.plans import column_bounds, row_frequencies
    from soma_shm.settings import AnalysisSettings

    s = AnalysisSettings()
    nfft, hop = s.stft_nfft(FS), s.stft_hop(FS)
    win = hann(nfft, sym=False)
    sft = ShortTimeFFT(win, hop, FS, scale_to="magnitude")
    mag = np.abs(sft.stft(audio)) * 2.0  # (bins, frames); a sine of amplitude A peaks at ~A
    freqs = row_frequencies(FMIN, FMAX, height)
    rows = np.clip(np.round(freqs * nfft / FS).astype(int), 0, nfft // 2)
    a, _ = column_bounds(0.0, len(audio) / FS, width, FS)
    centres = np.arange(mag.shape[1]) * hop + sft.p_min * hop
    first = np.searchsorted(centres, a)
    first = np.minimum(first, mag.shape[1] - 1)
    return np.maximum.reduceat(mag[rows], first, axis=1).astype(np.float32)


def child(method: str, workload: str, repeats: int, out_path: str) -> dict:
    seconds, t0, t1, width, height = WORKLOADS[workload]
    audio = _util.recording(seconds, FS, seed=1)
    # Libraries are imported (and soma_shm's kernels loaded) before the baseline is taken, so
    # "peak extra" is the memory the computation itself needs.
    load_s = float("nan")
    if method == "soma":
        import soma_shm.ipc.tasks

        t = time.perf_counter()
        soma_shm.ipc.tasks.warm_up()  # compiles every kernel with an empty cache, else loads it
        load_s = time.perf_counter() - t
    elif method == "pywt":
        import pywt  # noqa: F401
    elif method == "fcwt":
        import fcwt  # noqa: F401
    elif method == "scipy_stft":
        import scipy.signal  # noqa: F401
    base_rss = _util.rss_mb()
    _util.reset_peak_rss()  # the recording's construction is not part of the measurement
    if method == "soma":
        import soma_shm

        fn_name = "stft_image" if workload.startswith("stft") else "cwt_image"
        fn = getattr(soma_shm, fn_name)
        out = np.empty((height, width), dtype=np.float32)

        def run():
            return fn(audio, FS, t0, t1, FMIN, FMAX, width, height, out=out, check_finite=False)

    elif method == "scipy_stft":

        def run():
            return _scipy_stft_overview(audio, width, height)

    else:

        def run():
            return _baseline_image(method, audio, t0, t1, width, height)

    t = time.perf_counter()
    image = run()
    first = time.perf_counter() - t
    times, image = _util.timed(run, repeats)
    np.save(out_path, image)
    return {
        "times": times,
        "median_s": _util.median(times),
        "first_call_s": first,
        "kernel_load_s": load_s,
        "peak_extra_mb": _util.peak_rss_mb() - base_rss,
        "audio_mb": audio.nbytes / 2**20,
    }


def child_imports(repeats: int) -> dict:
    import subprocess

    def t(code: str) -> float:
        vals = []
        for _ in range(repeats):
            s = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            vals.append(time.perf_counter() - s)
        return _util.median(vals)

    numpy_s = t("import numpy")
    soma_s = t("import numpy, soma_shm")
    kernels_s = t("import numpy, soma_shm.ipc.tasks as r; r.warm_up()")
    return {
        "numpy_s": numpy_s,
        "soma_shm_s": soma_s,
        "import_over_numpy_s": soma_s - numpy_s,
        "kernels_loaded_s": kernels_s - numpy_s,
    }


# ------------------------------------------------------------------------------------- parent
def cold_compile(repeats: int) -> dict:
    """Wall time of compiling every kernel with an empty cache (``soma-shm warmup``): in one
    process against the two processes side by side that ``make setup``, the demo and the app use,
    runs interleaved, medians of ``repeats``; and loading the complete cache (the next run)."""
    import subprocess

    times: dict[str, list[float]] = {"1 process": [], "2 processes": [], "cache complete": []}
    for _ in range(repeats):
        for label, n in (("1 process", 1), ("2 processes", 2)):
            with tempfile.TemporaryDirectory(prefix="soma_cold_") as cache:
                env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": str(HERE.parent)}
                cmd = [sys.executable, "-m", "soma_shm", "warmup", "--processes", str(n)]
                t = time.perf_counter()
                subprocess.run(cmd, env=env, check=True, capture_output=True)
                times[label].append(time.perf_counter() - t)
                if n == 2:
                    t = time.perf_counter()
                    subprocess.run(cmd, env=env, check=True, capture_output=True)
                    times["cache complete"].append(time.perf_counter() - t)
            print(f"  cold compile, {label}: {times[label][-1]:.1f} s", file=sys.stderr, flush=True)
    # A first run of the demo, as `make demo` on a fresh clone does after installing: an empty
    # cache, so the demo compiles the kernels (two processes) and then opens, renders and writes.
    times["demo, empty cache"], times["demo open step"] = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="soma_cold_") as cache:
            env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": str(HERE.parent)}
            t = time.perf_counter()
            res = subprocess.run([sys.executable, "-m", "soma_shm", "demo", "--out", str(Path(cache) / "out")],
                                 env=env, check=True, capture_output=True, text=True)
            times["demo, empty cache"].append(time.perf_counter() - t)
            line = next(ln for ln in res.stdout.splitlines() if ln.startswith("open"))
            times["demo open step"].append(float(line.split(":")[1].split("ms")[0]) / 1000)
        print(f"  demo, empty cache: {times['demo, empty cache'][-1]:.1f} s", file=sys.stderr, flush=True)
    out = {k: {"median_s": _util.median(v), "runs_s": v} for k, v in times.items()}
    out["speedup"] = out["1 process"]["median_s"] / out["2 processes"]["median_s"]
    out["load_avg_1min"] = os.getloadavg()[0]
    return out


def check_targets(results: dict) -> list[tuple[str, str, bool | None]]:
    """The CWT figures against the issue's targets: (target, measured, met; None when the figure
    is missing, e.g. fCWT not installed)."""
    out = []
    for w, (max_s, min_x) in TARGETS.items():
        res = results["workloads"].get(w)
        if res is None:
            continue
        soma = res["soma"]
        out.append((f"{w}: median <= {max_s:.3f} s", f"{soma['median_s']:.4f} s", soma["median_s"] <= max_s))
        if "fcwt" in res:
            x = res["fcwt"]["slower_than_soma_x"]
            out.append((f"{w}: >= {min_x:.0f}x faster than fCWT", f"{x:.1f}x", x >= min_x))
        else:
            out.append((f"{w}: >= {min_x:.0f}x faster than fCWT", "fCWT not run", None))
        err = soma.get("max_db_error", float("nan"))
        out.append((f"{w}: max error <= {MAX_DB_ERROR} dB above -80 dB", f"{err:.3f} dB", err <= MAX_DB_ERROR))
    return out


def reference_error(workload: str, image: np.ndarray, row_step: int) -> float:
    sys.path.insert(0, str(HERE.parent / "tests"))
    from reference import cwt_rows_full_rate  # noqa: E402

    from soma_shm.plans import column_bounds, row_frequencies
    from soma_shm.settings import AnalysisSettings

    seconds, t0, t1, width, height = WORKLOADS[workload]
    audio = _util.recording(seconds, FS, seed=1)
    freqs = row_frequencies(FMIN, FMAX, height)
    a, b = column_bounds(t0, t1, width, FS)
    rows = np.arange(0, height, row_step)
    ref = np.empty((len(rows), width))
    for i, r in enumerate(rows):
        mag = np.abs(cwt_rows_full_rate(audio, FS, int(a[0]), int(b[-1]), freqs[r : r + 1], AnalysisSettings()))[0]
        ref[i] = np.maximum.reduceat(mag, a - a[0])
    floor = ref.max() * 1e-4
    got = image[rows].astype(np.float64)
    mask = ref > floor
    err = np.abs(20 * np.log10(np.maximum(got[mask], 1e-30) / ref[mask]))
    return float(err.max()), float(np.median(err))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="cwt2 + 10-minute overview, 3 repeats")
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--child", nargs=2, metavar=("METHOD", "WORKLOAD"), help=argparse.SUPPRESS)
    p.add_argument("--child-imports", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--compile-only", action="store_true",
                   help="only the cold compile: one process against two, --repeats times each")
    args = p.parse_args(argv)

    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.repeats, args.out)))
        return 0
    if args.child_imports:
        print(json.dumps(child_imports(args.repeats)))
        return 0

    if args.compile_only:
        cold = cold_compile(args.repeats)
        print(_util.table([[k, v["median_s"], " ".join(f"{x:.1f}" for x in v["runs_s"])]
                           for k, v in cold.items() if isinstance(v, dict)], ["cold compile", "median s", "runs s"]))
        print(f"first demo run (empty cache, no install step): {cold['demo, empty cache']['median_s']:.1f} s "
              f"(target with setup <= 60 s), its open step {cold['demo open step']['median_s']:.2f} s (target <= 5 s)")
        print(f"two processes: {cold['speedup']:.2f}x faster than one; target: <= 20 s wall on 2 cores "
              f"({'met' if cold['2 processes']['median_s'] <= 20 else 'MISSED'}); 1-min load average at the end "
              f"{cold['load_avg_1min']:.1f}")
        print(f"wrote {_util.write_json('bench_compile.json', {'machine': _util.machine(), 'cold_compile': cold})}")
        return 0
    repeats = 3 if args.quick else args.repeats
    cwt_workloads = ["cwt2"] if args.quick else ["cwt2", "cwt30"]
    stft_workload = "stft_10min" if args.quick else "stft_hour"
    baselines = [] if args.no_baselines else ["fcwt", "pywt"]
    try:
        import fcwt  # noqa: F401
    except Exception as exc:  # fcwt needs Debian's libfftw3 and matplotlib
        print(f"fCWT not available ({exc}); running without it", file=sys.stderr)
        baselines = [b for b in baselines if b != "fcwt"]

    results: dict = {"machine": _util.machine(), "repeats": repeats, "workloads": {}}
    tmp = Path(tempfile.mkdtemp(prefix="soma_bench_"))
    rows = []

    def run(method: str, workload: str, reps: int, env: dict | None = None) -> dict:
        out = tmp / f"{method}_{workload}.npy"
        print(f"  {workload:10s} {method:10s} ...", file=sys.stderr, flush=True)
        res = _util.run_json(
            [__file__, "--child", method, workload, "--repeats", str(reps), "--out", str(out)], env=env
        )
        res["image"] = str(out)
        return res

    # Cold compile: a fresh numba cache directory makes the first call compile every kernel.
    with tempfile.TemporaryDirectory() as cache:
        cold = run("soma", "cwt2", 1, env={"NUMBA_CACHE_DIR": cache})
    results["cold_compile_s"] = cold["kernel_load_s"]
    results["cold_compile"] = cold_compile(1 if args.quick else 3)

    for w in cwt_workloads:
        res_w = {}
        for method in ["soma", *baselines]:
            reps = repeats if (method == "soma" or w == "cwt2") else max(1, min(repeats, 3))
            if method == "soma":
                reps = max(reps, SOMA_MIN_REPEATS)
            if method == "pywt" and w == "cwt30":
                reps = 1  # minutes per image: a reference figure, not a target
            res = run(method, w, reps)
            if method != "fcwt":  # fCWT uses its own wavelet normalisation: timing/memory only
                res["max_db_error"], res["median_db_error"] = reference_error(
                    w, np.load(res["image"]), 1 if w == "cwt2" else 8
                )
            res_w[method] = res
        for method, res in res_w.items():
            ratio = res["median_s"] / res_w["soma"]["median_s"]
            rows.append(
                [
                    w,
                    method,
                    res["median_s"],
                    res["first_call_s"],
                    res["peak_extra_mb"],
                    res.get("max_db_error", float("nan")),
                    res.get("median_db_error", float("nan")),
                    ratio,
                ]
            )
            res["slower_than_soma_x"] = ratio
        results["workloads"][w] = res_w

    res_s = {"soma": run("soma", stft_workload, repeats)}
    if not args.no_baselines:
        res_s["scipy_stft"] = run("scipy_stft", stft_workload, max(1, min(repeats, 3)))
    for method, res in res_s.items():
        ratio = res["median_s"] / res_s["soma"]["median_s"]
        res["slower_than_soma_x"] = ratio
        nan = float("nan")
        rows.append([stft_workload, method, res["median_s"], res["first_call_s"], res["peak_extra_mb"], nan, nan, ratio])
    results["workloads"][stft_workload] = res_s

    results["imports"] = _util.run_json([__file__, "--child-imports", "--repeats", str(repeats)])

    print()
    print(
        _util.table(
            rows,
            ["workload", "method", "median s", "first call s", "peak extra MB", "max dB err", "median dB err", "x slower"],
        )
    )
    print()
    print(f"cold compile of every kernel (empty numba cache): {results['cold_compile_s']:.2f} s")
    cc = results["cold_compile"]
    print(f"soma-shm warmup with an empty cache: {cc['2 processes']['median_s']:.1f} s in two processes, "
          f"{cc['1 process']['median_s']:.1f} s in one ({cc['speedup']:.2f}x); a complete cache loads in "
          f"{cc['cache complete']['median_s']:.1f} s")
    imp = results["imports"]
    print(
        f"import soma_shm over numpy: {imp['import_over_numpy_s'] * 1000:.0f} ms; "
        f"with every kernel loaded from the cache and run once (warm_up): {imp['kernels_loaded_s'] * 1000:.0f} ms"
    )
    checks = check_targets(results)
    results["targets"] = [dict(zip(("target", "measured", "ok"), c)) for c in checks]
    if checks:
        print()
        print(_util.table([[t, m, {True: "yes", False: "NO", None: "-"}[ok]] for t, m, ok in checks], ["target", "measured", "met"]))
    path = _util.write_json("bench_kernels.json", results)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
