"""Starting worker processes that need only soma_shm, and telling whether one still runs.

Workers never import the caller's main module
---------------------------------------------
With ``spawn`` and ``forkserver``, multiprocessing sends every new child *preparation data*
(``multiprocessing.spawn.get_preparation_data``): ``sys.path``, the working directory, and the
parent's main module (``init_main_from_path`` or ``init_main_from_name``), which the child
re-imports as ``__mp_main__`` before it unpickles its target. That is what the "safe importing of
main module" rule of the multiprocessing guidelines is about, and it is what breaks a script piped
to ``python -`` (its main module is ``<stdin>``, which no child can import) and re-runs every
unguarded script in every worker. A soma_shm worker's target (:func:`soma_shm.ipc.worker.worker_main`)
and everything it receives live in soma_shm, so :func:`start` asks for preparation data without
those two entries: the child keeps the parent's ``sys.path`` and directory and imports nothing of
the caller's. Only the start made by :func:`start` (this thread, while it runs) is affected; every
other process the caller starts gets multiprocessing's usual data.

Liveness
--------
:func:`state` reads the process state the kernel reports (``/proc/<pid>/stat``): ``"stopped"``
(SIGSTOP, a debugger), ``"dead"`` (exited or a zombie) or ``"running"``. A worker forked by the
forkserver is not our child, so ``waitpid`` cannot tell it; its sentinel tells only death.
"""

from __future__ import annotations

import os
import threading
from multiprocessing import spawn

__all__ = ["start", "state"]

_local = threading.local()
_lock = threading.Lock()
_installed = False


def _preparation_data(name, _original=spawn.get_preparation_data):
    data = _original(name)
    if getattr(_local, "without_main", False):
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
    return data


def _install() -> None:
    global _installed
    with _lock:
        if not _installed:
            spawn.get_preparation_data = _preparation_data
            _installed = True


def start(ctx, target, args: tuple, name: str):
    """Start ``target(*args)`` in a new daemon process of context ``ctx`` without the caller's
    main module; returns the started ``Process``."""
    _install()
    proc = ctx.Process(target=target, args=args, name=name, daemon=True)
    _local.without_main = True
    try:
        proc.start()
    finally:
        _local.without_main = False
    return proc


def state(pid: int | None) -> str:
    """``"running"``, ``"stopped"`` or ``"dead"`` (``"running"`` where /proc is not available)."""
    if pid is None:
        return "dead"
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return "dead"
    except OSError:  # pragma: no cover - not Linux
        return "running"
    code = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    if code in (b"T", b"t"):
        return "stopped"
    if code in (b"Z", b"X", b"x"):
        return "dead"
    return "running"


def signal_pid(pid: int | None, sig: int) -> None:
    if pid is None:
        return
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
