"""Preparing the kernels: every kernel called once on tiny inputs, and ``soma-shm warmup``.

:data:`TASKS` are the calls that make numba compile (or load) every kernel.
:mod:`soma_shm.kernel_cache` runs them in parallel processes (``python -m soma_shm.warmup TASK...``)
the first time any kernel is needed; ``make setup`` runs ``soma-shm warmup`` so that is done at
install time, with a progress line; workers call :func:`warm_up` to load them all at start.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable

from . import kernel_cache
from .kernel_cache import AFTER, AFTER_WAIT_S, DONE_DIR_ENV, GROUPS, ensure_kernels

__all__ = ["TASKS", "LABEL", "TerminalProgress", "run_tasks", "warm_up"]

LABEL = "preparing kernels (first run only)"


def _signal():
    import numpy as np

    fs = 8000.0
    return np.sin(2 * np.pi * 440 * np.arange(4000) / fs).astype(np.float32), fs


def _task_cwt() -> None:
    from .render import cwt_image

    x, fs = _signal()
    cwt_image(x, fs, 0.1, 0.4, 100, 2000, 8, 4)


def _task_cwt_pooling() -> None:
    # The largest part of the CWT kernel, compiled on its own (with the argument types the CWT
    # kernel passes) so that another process can compile it while the first does the rest.
    import numpy as np

    from .kernels import cwt

    y = (np.arange(64) % 7).astype(np.complex64)
    cols = np.arange(0, 33, 4, dtype=np.int64)
    out = np.zeros((2, 8), np.float32)
    for step in (0.5, 2.0, 8.0):  # the three pooling paths
        cwt.pool_row(y, step, 4, cols[:-1], cols[1:] - 1, 1.0, out[1, 0:8])


def _task_snap() -> None:
    from .snap import snap_trace

    x, fs = _signal()
    snap_trace(x, fs, [(0.1, 430.0), (0.3, 450.0)])


def _task_stft() -> None:
    from .render import stft_image

    x, fs = _signal()
    stft_image(x, fs, 0.0, 0.5, 100, 2000, 8, 4)


def _task_tonemap() -> None:
    import numpy as np

    from .render import tone_map

    tone_map(np.linspace(0.0, 1.0, 32, dtype=np.float32).reshape(4, 8), 1.0)


def _task_pyramid() -> None:
    import numpy as np

    from .pyramid import ProgressiveBuild, Pyramid, PyramidLayout, build_pyramid

    x, fs = _signal()
    pyr = build_pyramid(x, fs, reference=1.0)
    levels = pyr.buffer.copy()
    levels.flags.writeable = False  # a worker's mapping of the shared block
    for p in (pyr, Pyramid(pyr.layout, levels, pyr.top, pyr.scale)):
        p.image(0.0, 0.5, 100, 2000, 8, 4)
    # Built while decoding, with the 0 dB level pooled from the same transforms.
    x = np.tile(x, 64)  # enough frames for every column of the 0 dB level's image
    lay = PyramidLayout.for_recording(x.size, fs, pyr.layout.nfft, pyr.layout.hop)
    build = ProgressiveBuild(x, fs, None, np.zeros(lay.nbytes, np.uint8))
    build.add(0, 0, x.size)
    build.finish()
    assert build.reference() is not None


def _task_synth() -> None:
    from .synth import render_partials

    render_partials([[(0.1, 440.0, 0.5), (0.3, 450.0, 0.4)]], 8000.0, 4000)


TASKS: dict[str, Callable[[], None]] = {
    "cwt_pooling": _task_cwt_pooling,
    "cwt": _task_cwt,
    "snap": _task_snap,
    "stft": _task_stft,
    "tonemap": _task_tonemap,
    "pyramid": _task_pyramid,
    "synth": _task_synth,
}


def run_tasks(names=None) -> None:
    """Call the kernels of ``names`` (default: all) on tiny inputs in this process: loads them from
    the cache, or compiles what is not there."""
    for name in names or TASKS:
        TASKS[name]()


def warm_up() -> None:
    """Load every kernel into this process (compiling them in parallel first if none is cached).

    Workers call this once at start so that the first real request pays no JIT cost.
    """
    ensure_kernels()
    run_tasks()


class TerminalProgress:
    """``progress(fraction, message)`` as one updating line on a terminal, plain lines elsewhere."""

    def __init__(self, stream=None, label: str = LABEL):
        self.stream = stream or sys.stderr
        self.label = label
        self.tty = self.stream.isatty()

    def __call__(self, fraction: float, message: str) -> None:
        pct = int(round(100 * fraction))
        if self.tty:
            bar = "#" * (pct // 4)
            end = "\n" if fraction >= 1.0 else ""
            print(f"\r{self.label}: [{bar:<25s}] {pct:3d}%  {message:40s}", end=end, file=self.stream, flush=True)
        else:
            print(f"{self.label}: {pct:3d}%  {message}", file=self.stream, flush=True)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("warmup", help="compile and cache every kernel now (make setup runs it)")
    p.add_argument("--force", action="store_true", help="compile again even if the cache is complete")
    p.add_argument("--processes", type=int, default=None,
                   help=f"compiling processes (default: {len(GROUPS)}, at most the number of cores)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .errors import ParameterError

    if args.processes is not None and args.processes < 1:
        raise ParameterError(f"--processes {args.processes} must be at least 1")
    t = time.perf_counter()
    compiled = ensure_kernels(TerminalProgress(), args.processes, force=args.force)
    where = kernel_cache._marker().parent
    if compiled:
        print(f"kernels compiled in {time.perf_counter() - t:.1f} s, cached in {where}")
    else:
        print(f"kernels already compiled for these sources (cache: {where})")
    return 0


def _child(names: list[str]) -> None:
    """A compiling process: run ``names`` in order, say each on stdout and mark it done."""
    done_dir = os.environ.get(DONE_DIR_ENV)
    for name in names:
        before = AFTER.get(name)
        if done_dir and before and before not in names:
            deadline = time.monotonic() + AFTER_WAIT_S
            while not os.path.exists(os.path.join(done_dir, before)) and time.monotonic() < deadline:
                time.sleep(0.05)
        TASKS[name]()
        if done_dir:
            Path(done_dir, name).touch()
        print(name, flush=True)


if __name__ == "__main__":  # a compiling process started by ensure_kernels
    _child(sys.argv[1:])
