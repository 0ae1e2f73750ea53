"""``soma-shm demo``: render the built-in demo recording (or a file) to PNG images.

Renders the pooled STFT overview of the whole recording and a CWT viewport of a short window,
tone-maps both against the overview's amplitude reference, writes them as PNG and prints what it
did and how long each step took.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="render the built-in demo recording (or FILE) to PNG files")
    p.add_argument("file", nargs="?", help="audio file to use instead of the built-in demo recording")
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--start", type=float, default=None, help="viewport start, seconds")
    p.add_argument("--end", type=float, default=None, help="viewport end, seconds")
    p.add_argument("--width", type=int, default=1600)
    p.add_argument("--height", type=int, default=600)
    p.add_argument("--colormap", default="magma")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from . import Engine
    from .imageio import apply_colormap, write_png

    from .warmup import TerminalProgress, ensure_kernels

    out = _output_folder(args.out)
    t_kernels = time.perf_counter()
    compiled = ensure_kernels(TerminalProgress())  # the first run compiles them, in parallel
    t_kernels = time.perf_counter() - t_kernels
    t_start = time.perf_counter()
    with Engine() as engine:
        if args.file:
            info = engine.open(args.file)
            source = args.file
        else:
            from .demo_audio import demo_recording

            fs = 48_000
            info = engine.open(demo_recording(12.0, fs), sample_rate=fs)
            source = "built-in demo recording (12 s, 48 kHz)"
        t_open = time.perf_counter()
        duration = info.duration
        fmax = min(20_000.0, 0.45 * info.sample_rate)
        overview = engine.overview(args.width, args.height // 2)
        t_over = time.perf_counter()
        t0 = args.start if args.start is not None else min(2.0, duration / 4)
        t1 = args.end if args.end is not None else min(duration, t0 + 2.0)
        result = engine.submit_viewport(t0, t1, 40.0, fmax, args.width, args.height).result(timeout=300)
        t_view = time.perf_counter()
        over_png = write_png(out / "overview.png", apply_colormap(np.asarray(overview.image), args.colormap))
        view_png = write_png(out / "viewport.png", apply_colormap(result.copy().image, args.colormap))
        result.release()
        stats = engine.stats()
    if compiled:
        print(f"kernels  : {t_kernels * 1000:8.1f} ms  compiled and cached (first run only)")
    print(f"source   : {source}: {duration:.2f} s at {info.sample_rate:g} Hz")
    print(f"open     : {(t_open - t_start) * 1000:8.1f} ms  (decode into shared memory, STFT pyramid, load kernels, start workers)")
    print(f"overview : {(t_over - t_open) * 1000:8.1f} ms  STFT {args.width}x{args.height // 2}, whole file -> {over_png}")
    print(
        f"viewport : {(t_view - t_over) * 1000:8.1f} ms  {result.method.upper()} {args.width}x{args.height}, "
        f"{t0:.2f}-{t1:.2f} s, 40-{fmax:.0f} Hz -> {view_png}"
    )
    print(f"workers  : {stats['viewport']['requests']} viewport request(s), "
          f"{stats['viewport']['bytes_sent'] + stats['viewport']['bytes_received']} bytes over pipes")
    return 0


def _output_folder(path: str) -> Path:
    """The demo's output folder, created; a bad one is a ParameterError naming it."""
    from .errors import ParameterError

    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ParameterError(f"--out {path!r} is a file, not a folder; name a folder for the PNG files")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParameterError(f"--out {path!r}: cannot create the folder ({exc.strerror})") from None
    if not os.access(out, os.W_OK):
        raise ParameterError(f"--out {path!r} is not writable; name a folder you can write to")
    return out
