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
from .kernel_cache import AFTER, AFTER_WAIT_S, DONE_DIR_ENV, ensure_kernels

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
    # The largest part of the CWT kernel, compiled on its own (for the argument types the CWT
    # kernel passes) so that another process can compile it while the first does the rest.
    import numpy as np
    from numba import typeof

    from .kernels import cwt

    y = np.zeros(64, np.complex64)
    cols = np.arange(0, 33, 4, dtype=np.int64)
    out = np.zeros((2, 8), np.float32)
    # Only kernels call it (no Python entry point): compiled for these types without running.
    cwt.pool_row.compile(tuple(typeof(a) for a in (y, 2.0, 4, cols[:-1], cols[1:] - 1, 1.0, out[1, 0:8])))


def _task_cwt_rows() -> None:
    # What the CWT image and the snapping share: the segments' FFTs and a row's decimated
    # inverse FFT, for the argument types both kernels pass.
    import numpy as np
    from numba import typeof

    from . import _validate
    from .kernels import cwt
    from .plans import cwt_plan
    from .settings import AnalysisSettings

    x, fs = _signal()
    plan = cwt_plan(fs, 2401, 100.0, 2000.0, 4, 8, AnalysisSettings())
    segs, rows, wavelet = plan.kernel_args()
    spectra, offsets = cwt.segment_spectra(_validate.read_only(x), 800, *segs)
    cwt.plan_row.compile(tuple(typeof(a) for a in (spectra, offsets, segs, rows, wavelet, np.int64(0))))


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

    from .pyramid import ProgressiveBuild, PyramidLayout, build_pyramid

    x, fs = _signal()
    pyr = build_pyramid(x, fs, reference=1.0)
    # Built while decoding, with the 0 dB level pooled from the same transforms.
    x = np.tile(x, 64)  # enough frames for every column of the 0 dB level's image
    lay = PyramidLayout.for_recording(x.size, fs, pyr.layout.nfft, pyr.layout.hop)
    build = ProgressiveBuild(x, fs, None, np.zeros(lay.nbytes, np.uint8))
    build.add(0, 0, x.size)
    build.finish()
    assert build.reference() is not None


def _task_pyramid_view() -> None:
    # A view cut from a pyramid (its content does not matter; the view reads its levels as
    # read-only arrays, whether the owner's block or a worker's mapping).
    import numpy as np

    from .pyramid import Pyramid, PyramidLayout
    from .settings import AnalysisSettings

    x, fs = _signal()
    s = AnalysisSettings()
    lay = PyramidLayout.for_recording(x.size, fs, s.stft_nfft(fs), s.stft_hop(fs))
    Pyramid(lay, np.zeros(lay.nbytes, np.uint8), 1.0, 1.0).image(0.0, 0.5, 100, 2000, 8, 4)


def _task_synth() -> None:
    from .synth import render_partials

    render_partials([[(0.1, 440.0, 0.5), (0.3, 450.0, 0.4)]], 8000.0, 4000)


def _task_flac() -> None:
    # libFLAC's per-frame callbacks (compiled, or loaded, on import).
    from .kernels import flac  # noqa: F401


TASKS: dict[str, Callable[[], None]] = {
    "cwt_pooling": _task_cwt_pooling,
    "cwt_rows": _task_cwt_rows,
    "cwt": _task_cwt,
    "snap": _task_snap,
    "stft": _task_stft,
    "tonemap": _task_tonemap,
    "pyramid": _task_pyramid,
    "pyramid_view": _task_pyramid_view,
    "synth": _task_synth,
    "flac": _task_flac,
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
                   help="compiling processes (default: one per core, at most 4)")
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


def _claim(done_dir: str, name: str) -> bool:
    """Take task ``name`` unless another compiling process has (one file each, created once)."""
    try:
        os.close(os.open(os.path.join(done_dir, f"{name}.taken"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _child(names: list[str]) -> None:
    """A compiling process: take the first of ``names`` (in order) that no other process has
    taken and whose tasks it reuses (``AFTER``) are done, run it, say so on stdout, repeat.

    Without a shared folder (``SOMA_SHM_WARMUP_DONE``), it runs them all, in order."""
    done_dir = os.environ.get(DONE_DIR_ENV)
    if not done_dir:
        for name in names:
            TASKS[name]()
            print(name, flush=True)
        return
    todo = list(names)
    deadline = time.monotonic() + AFTER_WAIT_S
    while todo:
        for name in todo:
            waiting = time.monotonic() < deadline and any(
                before in names and not os.path.exists(os.path.join(done_dir, before)) for before in AFTER.get(name, ()))
            if waiting:
                continue  # another process compiles what it reuses: take the next one meanwhile
            todo.remove(name)
            if _claim(done_dir, name):
                TASKS[name]()
                Path(done_dir, name).touch()
                print(name, flush=True)
            break
        else:
            time.sleep(0.05)  # every task left waits for one another process compiles


if __name__ == "__main__":  # a compiling process started by ensure_kernels
    _child(sys.argv[1:])
