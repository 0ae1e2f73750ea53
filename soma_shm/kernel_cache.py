"""Whether the kernels are compiled, and compiling them all at once, in parallel processes.

numba compiles a kernel the first time it is called and caches the machine code on disk (see
:mod:`soma_shm.kernels._jit`); later processes load it in about a second. The first compile takes
tens of seconds, so the first process that needs a kernel while none is cached
(:func:`ensure_kernels`, called by every wrapper before it loads the kernels) compiles them all:
in as many processes as there are cores, side by side (``python -m soma_shm.warmup TASK...``),
each taking the next task no process has taken yet, longest first (:func:`task_order`),
while every other process that needs them waits on a lock and reports the compiling process's
progress instead of compiling the same code again. A marker file in the cache folder, named
after the kernels' source stamp and numba's version, says the cache is complete.

Each kernel is compiled for exactly one argument type (wrappers pass read-only, contiguous
arrays), so processes compiling side by side never write different versions of one kernel.
This module imports no wrapper (they import it); the tasks themselves are in
:mod:`soma_shm.warmup`, with the ``soma-shm warmup`` command.
"""

from __future__ import annotations

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

__all__ = ["WEIGHTS", "ensure_kernels", "kernels", "kernels_ready", "task_order"]

log = logging.getLogger("soma_shm.warmup")

# The default number of compiling processes: about 200 MB each, and the CWT's chain of tasks
# (pooling and rows before the image) leaves little for more than four to share.
MAX_PROCESSES = 4
CHILD_ENV = "SOMA_SHM_WARMUP_CHILD"  # set in the compiling processes: they compile, never wait
DONE_DIR_ENV = "SOMA_SHM_WARMUP_DONE"  # folder where compiling processes mark finished tasks

# Task (see soma_shm.warmup.TASKS) -> CPU seconds of its compile on the reference machine, after
# the tasks it reuses (perf/compile_profile.py): the order tasks are taken in, and the progress
# line's weights.
WEIGHTS = {"cwt_pooling": 6.8, "cwt_rows": 2.2, "cwt": 2.6, "snap": 2.6, "stft": 3.3, "pyramid": 4.6,
           "pyramid_view": 3.0, "tonemap": 0.7, "synth": 3.3, "flac": 0.8}
# Task -> tasks whose kernels it links (compiled by them for the same argument types, then
# loaded from the cache instead of compiled again): taken only once those are done (or after
# AFTER_WAIT_S, when it compiles them itself). Meanwhile a process takes other tasks, so two
# processes split the CWT image's kernels between them and compile the kernels that the CWT
# image and the snapping (or the STFT image and the pyramid) share once, not once each.
AFTER = {"cwt": ("cwt_pooling", "cwt_rows"), "snap": ("cwt_rows",), "pyramid": ("stft",)}
AFTER_WAIT_S = 120.0

_ready = False
_ready_lock = threading.Lock()


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
        Compiling processes (default: one per core, at most ``MAX_PROCESSES`` and one per task).
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
    if (_ready and not force) or os.environ.get(CHILD_ENV):
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
            try:
                _compile(report, processes)
            except _CompileFailed as exc:
                log.warning("kernels not compiled ahead (%s); each compiles when first called", exc)
                _ready = True
                return True
            marker.write_text(f"compiled in {time.perf_counter() - t:.1f} s\n")
            with contextlib.suppress(OSError):
                progress_file.unlink()
        _ready = True
        return True


def task_order() -> list[str]:
    """Every task, longest first (:data:`WEIGHTS`), each after the tasks it reuses (:data:`AFTER`).

    Compiling processes take the first task no other has taken (longest processing time first):
    the two longest start side by side and short ones fill in at the end, whichever process
    frees up first, so a process slowed down by other work on the machine takes fewer tasks.
    """
    order: list[str] = []

    def add(name: str) -> None:
        if name in order or name not in WEIGHTS:
            return
        for before in sorted(AFTER.get(name, ()), key=lambda t: -WEIGHTS.get(t, 0.0)):
            add(before)
        order.append(name)

    for name in sorted(WEIGHTS, key=lambda t: -WEIGHTS[t]):
        add(name)
    return order


def _compile(progress, processes) -> None:
    names = task_order()
    n = max(1, min(len(names), processes if processes is not None else min(MAX_PROCESSES, os.cpu_count() or 1)))
    total = sum(WEIGHTS.values())
    done: list[str] = []
    lock = threading.Lock()
    t0 = time.perf_counter()

    def finished(task: str) -> None:
        with lock:
            done.append(task)
            fraction = sum(WEIGHTS[d] for d in done) / total
        if progress is not None:
            progress(fraction, f"{task} ready ({len(done)}/{len(WEIGHTS)}, {time.perf_counter() - t0:.0f} s)")

    if progress is not None:
        progress(0.0, f"compiling {len(names)} sets of kernels in {n} process(es)")
    env = dict(os.environ, **{CHILD_ENV: "1"})
    root = str(Path(__file__).resolve().parent.parent)  # the soma_shm the caller imported
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    done_dir = tempfile.TemporaryDirectory(prefix="soma_warmup_")
    env[DONE_DIR_ENV] = done_dir.name
    errs = [tempfile.TemporaryFile("w+") for _ in range(n)]  # a file, so a chatty child never blocks
    procs = [
        subprocess.Popen([sys.executable, "-m", "soma_shm.warmup", *names], env=env, stdout=subprocess.PIPE,
                         stderr=e, stdin=subprocess.DEVNULL, text=True)
        for e in errs
    ]
    failed: list[str] = []

    def watch(p: subprocess.Popen, err) -> None:
        for line in p.stdout:
            task = line.strip()
            if task in WEIGHTS:
                finished(task)
        if p.wait() != 0:
            err.seek(0)
            failed.append(err.read())
        err.close()

    watchers = [threading.Thread(target=watch, args=(p, e), daemon=True) for p, e in zip(procs, errs)]
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
    if failed:
        # Not marked complete: the kernels a failed process should have made are compiled by the
        # first process that calls them, which raises a real error with its traceback.
        for err in failed:
            log.warning("a process compiling kernels failed:\n%s", err[-2000:])
        raise _CompileFailed(", ".join(t for t in names if t not in done) or "a compiling process failed")


class _CompileFailed(Exception):
    pass
