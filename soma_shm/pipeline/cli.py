"""``soma-shm render``, ``soma-shm snap`` and ``soma-shm bench``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..errors import ParameterError


class Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal or forced)."""

    def __init__(self, label: str, enabled: bool | None = None):
        self.label = label
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._last = -1

    def __call__(self, fraction: float) -> None:
        if not self.enabled:
            return
        pct = int(fraction * 100)
        if pct != self._last:
            self._last = pct
            bar = "#" * (pct // 4)
            print(f"\r{self.label:10s} [{bar:<25s}] {pct:3d}%", end="", file=sys.stderr, flush=True)
            if pct >= 100:
                print(file=sys.stderr)


def output_file(path: str, option: str) -> Path:
    """Check before any work that ``path`` can be written as a file: a ParameterError names it
    otherwise (a folder, a missing folder, no write permission)."""
    p = Path(path)
    if p.is_dir():
        raise ParameterError(f"{option} {path!r} is a folder; name a file to write")
    parent = p.parent
    if not parent.is_dir():
        raise ParameterError(f"{option} {path!r}: the folder {str(parent)!r} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ParameterError(f"{option} {path!r} is not writable; choose another file")
    return p


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("render", help="render a CWT or STFT image of a file to PNG (and .npy)")
    p.add_argument("file", help="audio file (WAV, FLAC, OGG, Opus, MP3, ...)")
    p.add_argument("--start", type=float, default=None, help="window start, seconds (default: 0)")
    p.add_argument("--end", type=float, default=None, help="window end, seconds (default: the end)")
    p.add_argument("--fmin", type=float, default=20.0, help="lowest row, Hz (default 20)")
    p.add_argument("--fmax", type=float, default=None, help="top row, Hz (default min(20 kHz, 0.49 fs))")
    p.add_argument("--width", type=int, default=1600)
    p.add_argument("--height", type=int, default=600)
    p.add_argument("--method", choices=["cwt", "stft"], default="cwt")
    p.add_argument("--colormap", default="magma", help="magma, viridis or gray")
    p.add_argument("-o", "--output", default=None, help="PNG file to write (default: <file stem>.png)")
    p.add_argument("--npy", default=None, help="also write the float32 magnitude to this .npy file")
    p.set_defaults(func=run_render)

    p = sub.add_parser("snap", help="snap a drawn trace (CSV of time,frequency) onto the CWT ridge")
    p.add_argument("file", help="audio file")
    p.add_argument("--trace", required=True, help="CSV with rows 'time_s,frequency_hz' (a header line is allowed)")
    p.add_argument("-o", "--output", required=True, help="CSV to write: time_s,frequency_hz,amplitude")
    p.set_defaults(func=run_snap)

    p = sub.add_parser("bench", help="a short benchmark of this machine (kernels, snap, engine)")
    p.add_argument("--repeats", type=int, default=5)
    p.set_defaults(func=run_bench)


def run_render(args: argparse.Namespace) -> int:
    import numpy as np

    from ..audio import audio_info, decode_into
    from ..imageio import apply_colormap, write_png
    from . import render_array

    out = output_file(args.output or Path(args.file).stem + ".png", "-o/--output")
    npy = output_file(args.npy, "--npy") if args.npy else None
    info = audio_info(args.file)
    audio = np.empty(info.frames, dtype=np.float32)
    t = time.perf_counter()
    decode_into(args.file, audio, Progress("decode"))
    t_dec = time.perf_counter() - t
    t = time.perf_counter()
    r = render_array(
        audio, info.sample_rate, args.start, args.end, args.fmin, args.fmax, args.width, args.height, args.method,
        source=args.file,
    )
    t_img = time.perf_counter() - t
    write_png(out, apply_colormap(r.image, args.colormap))
    print(
        f"{args.method.upper()} {args.width}x{args.height} of {args.file} {r.t0:.3f}-{r.t1:.3f} s, "
        f"{r.fmin:g}-{r.fmax:g} Hz -> {out} (decode {t_dec * 1000:.0f} ms, image {t_img * 1000:.0f} ms)"
    )
    if npy is not None:
        with open(npy, "wb") as f:  # np.save would append ".npy" to another suffix
            np.save(f, r.magnitude)
        print(f"magnitude (float32, {r.magnitude.shape[0]}x{r.magnitude.shape[1]}) -> {npy}")
    return 0


def _read_trace(path: str):
    import numpy as np

    rows = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ParameterError(f"cannot read trace file {path!r}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ParameterError(
            f"trace file {path!r} is not text (a CSV of 'time_s,frequency_hz' rows is expected)"
        ) from None
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p for p in line.replace(";", ",").replace("\t", ",").split(",") if p.strip()]
        try:
            rows.append([float(parts[0]), float(parts[1])])
        except (ValueError, IndexError):
            if not rows and n == 1:
                continue  # header
            raise ParameterError(f"{path}:{n}: expected 'time_s,frequency_hz', got {line!r}") from None
    return np.asarray(rows, dtype=np.float64).reshape(-1, 2)


def run_snap(args: argparse.Namespace) -> int:
    import numpy as np

    from ..audio import load_audio
    from ..snap import snap_trace

    output = output_file(args.output, "-o/--output")
    trace = _read_trace(args.trace)
    audio, fs = load_audio(args.file, Progress("decode"))
    t = time.perf_counter()
    points = snap_trace(audio, fs, trace, check_finite=False)
    dt = time.perf_counter() - t
    np.savetxt(output, points, delimiter=",", header="time_s,frequency_hz,amplitude", comments="", fmt="%.6f")
    print(f"{len(points)} points from {len(trace)} trace points -> {args.output} ({dt * 1000:.1f} ms)")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from .bench import run

    if args.repeats < 1:
        raise ParameterError(f"--repeats {args.repeats} must be at least 1")

    return run(args.repeats)
