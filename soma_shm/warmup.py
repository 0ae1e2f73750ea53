"""Preparing the kernels: compile every numba kernel once, in parallel processes, before use.

numba compiles a kernel the first time it is called and caches the machine code on disk (see
:mod:`soma_shm.kernels._jit`); later processes load it in about a second. The first compile takes
tens of seconds, so it is done ahead of use and split over processes: ``make setup`` runs
``soma-shm warmup``, and the first process that needs a kernel while none is cached
(:func:`ensure_kernels`, called by every wrapper before it loads the kernels) compiles them in
:data:`GROUPS` side by side, one process per group, while every other process that needs them
waits on a lock instead of compiling the same code again. A marker file in the cache folder,
named after the kernels' source stamp and numba's version, says the cache is complete.

Each kernel is compiled for exactly one argument type (wrappers pass read-only, contiguous
arrays), so processes compiling side by side never write different versions of one kernel.

The command line: ``soma-shm warmup`` (a progress line; ``--force`` recompiles even if the cache
is complete).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

__all__ = ["GROUPS", "TASKS", "ensure_kernels", "kernels", "kernels_ready", "run_tasks", "warm_up"]

log = logging.getLogger("soma_shm.warmup")

LABEL = "preparing kernels (first run only)"
_CHILD_ENV = "SOMA_SHM_WARMUP_CHILD"  # set in the compiling processes: they compile, never wait

# Task -> seconds of the cold compile on the reference machine (for progress).
WEIGHTS = {"cwt_pooling": 7.7, "cwt": 6.4, "snap": 3.5, "stft": 3.5, "tonemap": 1.0, "pyramid": 6.6, "synth": 4.2}
# One process per group, about equal in time. Kernels two groups share are compiled by one of
# them before the other needs them: ``cwt`` links the CWT pooling that the other group compiles
# first (it waits for it, see AFTER), ``pyramid`` the frame filler ``stft`` compiles first.
GROUPS: tuple[tuple[str, ...], ...] = (("cwt_pooling", "pyramid", "tonemap"), ("stft", "snap", "synth", "cwt"))
AFTER = {"cwt": "cwt_pooling"}  # task -> task of another group it reuses (waits up to AFTER_WAIT_S)
AFTER_WAIT_S = 120.0
_DONE_DIR_ENV = "SOMA_SHM_WARMUP_DONE"  # folder where compiling processes mark finished tasks

_ready = False
_ready_lock = threading.Lock()


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
    from .pyramid import Pyramid, build_pyramid

    x, fs = _signal()
    pyr = build_pyramid(x, fs, reference=1.0)
    levels = pyr.buffer.copy()
    levels.flags.writeable = False  # a worker's mapping of the shared block
    for p in (pyr, Pyramid(pyr.layout, levels, pyr.top, pyr.scale)):
        p.image(0.0, 0.5, 100, 2000, 8, 4)


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


def _marker() -> Path:
    import numba

    from .kernels import _jit

    return Path(_jit.cache_dir()) / f"soma-kernels-{_jit.package_stamp()}-numba{numba.__version__}.ready"


def kernels_ready() -> bool:
    """Whether every kernel is compiled and cached for the current sources."""
    return _ready or _marker().exists()


def kernels(name: str):
    """The kernel module ``soma_shm.kernels.<name>``, once the kernels are ready."""
    ensure_kernels()
    return importlib.import_module(f".kernels.{name}", __package__)


@contextlib.contextmanager
def _file_lock(path: Path, waiting: Callable[[], None] | None = None):
    """Hold an exclusive lock on ``path``; while another process holds it, call ``waiting`` about
    four times a second."""
    import fcntl

    with open(path, "a") as f:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | (fcntl.LOCK_NB if waiting is not None else 0))
                break
            except BlockingIOError:
                waiting()
                time.sleep(0.25)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_kernels(
    progress: Callable[[float, str], None] | None = None,
    processes: int | None = None,
    force: bool = False,
) -> bool:
    """Make sure every kernel is compiled and cached; compile them now if not.

    Parameters
    ----------
    progress : callable, optional
        ``progress(fraction, message)`` while compiling, or while waiting for another process
        that compiles them (not called when the cache is complete).
    processes : int, optional
        Compiling processes (default: one per group, at most the number of cores).
    force : bool
        Compile again even if the cache is complete.

    Returns
    -------
    bool
        True if this call compiled the kernels (or waited for another process that did).

    Notes
    -----
    Takes about a second when the cache is complete (importing numba, checking a file); tens of
    seconds of compiling otherwise, split over the processes. The compiling process writes its
    progress to a file beside the lock, which waiting processes report. Processes started by this
    function never wait for it (they are the ones compiling).
    """
    global _ready
    if (_ready and not force) or os.environ.get(_CHILD_ENV):
        return False
    with _ready_lock:
        if _ready and not force:
            return False
        marker = _marker()
        if marker.exists() and not force:
            _ready = True
            return False
        progress_file = marker.parent / "soma-kernels.progress"

        def waiting() -> None:  # another process compiles: report its progress
            if progress is None:
                return
            try:
                fraction, message = progress_file.read_text().split(" ", 1)
                progress(float(fraction), f"{message.strip()} (another process compiles them)")
            except (OSError, ValueError):
                progress(0.0, "waiting for another process that compiles them")

        def report(fraction: float, message: str) -> None:
            try:
                tmp = progress_file.with_suffix(f".{os.getpid()}")
                tmp.write_text(f"{fraction:.4f} {message}")
                os.replace(tmp, progress_file)
            except OSError:
                pass
            if progress is not None:
                progress(fraction, message)

        with _file_lock(marker.parent / "soma-kernels.lock", waiting if progress is not None else None):
            if marker.exists() and not force:  # another process compiled them meanwhile
                _ready = True
                if progress is not None:
                    progress(1.0, "ready")
                return True
            t = time.perf_counter()
            _compile(report, processes)
            marker.write_text(f"compiled in {time.perf_counter() - t:.1f} s\n")
            with contextlib.suppress(OSError):
                progress_file.unlink()
        _ready = True
        return True


def _compile(progress, processes) -> None:
    n = min(len(GROUPS), processes if processes is not None else (os.cpu_count() or 1))
    total = sum(WEIGHTS.values())
    done: list[str] = []
    lock = threading.Lock()
    t0 = time.perf_counter()

    def finished(task: str) -> None:
        with lock:
            done.append(task)
            fraction = sum(WEIGHTS[d] for d in done) / total
        if progress is not None:
            progress(fraction, f"{task} ready ({len(done)}/{len(TASKS)}, {time.perf_counter() - t0:.0f} s)")

    if progress is not None:
        progress(0.0, f"compiling {len(TASKS)} sets of kernels in {max(n, 1)} process(es)")
    if n <= 1:
        for task in TASKS:
            TASKS[task]()
            finished(task)
        return
    groups = [tuple(t for g in GROUPS[k::n] for t in g) for k in range(n)]
    env = dict(os.environ, **{_CHILD_ENV: "1"})
    root = str(Path(__file__).resolve().parent.parent)  # the soma_shm the caller imported
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    done_dir = tempfile.TemporaryDirectory(prefix="soma_warmup_")
    env[_DONE_DIR_ENV] = done_dir.name
    errs = [tempfile.TemporaryFile("w+") for _ in groups]  # a file, so a chatty child never blocks
    procs = [
        subprocess.Popen([sys.executable, "-m", "soma_shm.warmup", *g], env=env, stdout=subprocess.PIPE,
                         stderr=e, stdin=subprocess.DEVNULL, text=True)
        for g, e in zip(groups, errs)
    ]
    failed: list[tuple[tuple[str, ...], str]] = []

    def watch(p: subprocess.Popen, group: tuple[str, ...], err) -> None:
        for line in p.stdout:
            task = line.strip()
            if task in TASKS:
                finished(task)
        if p.wait() != 0:
            err.seek(0)
            failed.append((group, err.read()))
        err.close()

    watchers = [threading.Thread(target=watch, args=(p, g, e), daemon=True) for p, g, e in zip(procs, groups, errs)]
    for w in watchers:
        w.start()
    try:
        for w in watchers:
            w.join()
    except BaseException:  # interrupted: stop the compilers, leave no process behind
        for p in procs:
            p.kill()
            p.wait()
        raise
    finally:
        done_dir.cleanup()
    for group, err in failed:
        # The compile is repeated here, so a real error is raised with its traceback.
        log.warning("compiling %s in a separate process failed; compiling here:\n%s", group, err[-2000:])
        for task in group:
            if task not in done:
                TASKS[task]()
                finished(task)


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
    where = _marker().parent
    if compiled:
        print(f"kernels compiled in {time.perf_counter() - t:.1f} s, cached in {where}")
    else:
        print(f"kernels already compiled for these sources (cache: {where})")
    return 0


def _child(names: list[str]) -> None:
    """A compiling process: run ``names`` in order, say each on stdout and mark it done."""
    done_dir = os.environ.get(_DONE_DIR_ENV)
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
