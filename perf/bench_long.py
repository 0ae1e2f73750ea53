"""Long-recording benchmark: open -> overview, memory of every process, wide viewports.

For 16-bit 48 kHz WAV files of 1 h (and 3 h unless ``--quick``): time to open (decode into shared
memory) and to render the 2048x512 overview, the caller's peak RSS against the float32 audio
size, the peak unique memory (USS) of the workers, and the request -> image latency of wide
viewports (> 30 s, STFT) at several zoom levels, medians of ``--repeats``.

Usage::

    python perf/bench_long.py            # 1 h and 3 h
    python perf/bench_long.py --quick    # 10 min and 1 h
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import _util  # noqa: E402

FS = 48_000


def child(path: str, repeats: int) -> dict:
    import psutil

    import soma_shm

    out: dict = {}
    base = _util.rss_mb()
    _util.reset_peak_rss()
    with soma_shm.Engine() as eng:
        t = time.perf_counter()
        info = eng.open(path)
        out["open_s"] = time.perf_counter() - t
        t = time.perf_counter()
        eng.overview(2048, 512)
        out["overview_s"] = time.perf_counter() - t
        out["open_to_overview_s"] = out["open_s"] + out["overview_s"]
        out["audio_mb"] = info.frames * 4 / 2**20
        eng.wait_ready(120)
        widths = [35.0, 120.0, 600.0, info.duration]
        for w in widths:
            lat = []
            for i in range(repeats):
                t0 = min(info.duration - w, 13.0 * i)
                t = time.perf_counter()
                eng.submit_viewport(t0, t0 + w, 20, 20_000, 1600, 600).result(600).release()
                lat.append(time.perf_counter() - t)
            out[f"viewport_{int(w)}s_ms"] = _util.median(lat) * 1000
        uss = []
        for pid in eng.worker_pids():
            try:
                uss.append(psutil.Process(pid).memory_full_info().uss / 2**20)
            except psutil.Error:
                pass
        out["worker_max_uss_mb"] = max(uss) if uss else float("nan")
        out["caller_peak_rss_mb"] = _util.peak_rss_mb()
        out["caller_peak_over_audio_mb"] = out["caller_peak_rss_mb"] - base - out["audio_mb"]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.repeats)))
        return 0
    import soundfile as sf

    hours = [600.0, 3600.0] if args.quick else [3600.0, 10800.0]
    results = {"machine": _util.machine(), "runs": {}}
    rows = []
    with tempfile.TemporaryDirectory(prefix="soma_long_") as tmp:
        for seconds in hours:
            path = Path(tmp) / f"long_{int(seconds)}.wav"
            with sf.SoundFile(path, "w", FS, 1, subtype="PCM_16", format="RF64" if seconds > 12000 else "WAV") as f:
                for start in range(0, int(seconds), 600):
                    f.write(_util.recording(min(600.0, seconds - start), FS, seed=start))
            print(f"  {seconds / 3600:.2f} h ...", file=sys.stderr, flush=True)
            r = _util.run_json([__file__, "--child", str(path), "--repeats", str(args.repeats)], timeout=5400)
            results["runs"][str(int(seconds))] = r
            rows.append([
                f"{seconds / 3600:.2f} h", r["open_s"], r["overview_s"], r["audio_mb"], r["caller_peak_over_audio_mb"],
                r["worker_max_uss_mb"], r["viewport_35s_ms"], r["viewport_120s_ms"], r["viewport_600s_ms"],
                r[f"viewport_{int(seconds)}s_ms"],
            ])
            path.unlink()
    print(_util.table(rows, [
        "file", "open s", "overview s", "audio MB", "caller peak - audio MB", "worker USS MB",
        "35 s view ms", "2 min view ms", "10 min view ms", "whole-file view ms",
    ]))
    print(f"wrote {_util.write_json('bench_long.json', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
