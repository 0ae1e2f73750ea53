"""Lifecycle logging of the engine and its workers (one configuration for both sides).

Every line names the role, the process id and the request id. Quiet by default: the package
logger has a ``NullHandler``, so nothing is printed (not even warnings through logging's
last-resort handler) until a level is chosen with ``EngineOptions(log_level=...)`` or the
``SOMA_SHM_LOG`` environment variable; then lines go to stderr and, optionally, to a log file
that the workers append to as well.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["configure", "LOGGER_NAME"]

LOGGER_NAME = "soma_shm"
_FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"

logging.getLogger(LOGGER_NAME).addHandler(logging.NullHandler())


def configure(level: int | None, log_file: str | None) -> None:
    """Send the package's log lines at ``level`` and above to stderr (and ``log_file``).

    ``None`` leaves logging as it is. Called once per process: again with a new level, it only
    changes the level (handlers are added once, and a log file is added if it is new).
    """
    if level is None:
        return
    root = logging.getLogger(LOGGER_NAME)
    root.setLevel(level)
    ours = [h for h in root.handlers if getattr(h, "_soma", False)]
    fmt = logging.Formatter(_FORMAT)
    new: list[logging.Handler] = []
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in ours):
        new.append(logging.StreamHandler(sys.stderr))
    if log_file and not any(
        isinstance(h, logging.FileHandler) and h.baseFilename == _abspath(log_file) for h in ours
    ):
        new.append(logging.FileHandler(log_file))
    for h in new:
        h.setFormatter(fmt)
        h._soma = True  # type: ignore[attr-defined]
        root.addHandler(h)


def reset() -> None:
    """Remove the handlers :func:`configure` added and restore the default level (tests)."""
    root = logging.getLogger(LOGGER_NAME)
    for h in [h for h in root.handlers if getattr(h, "_soma", False)]:
        root.removeHandler(h)
        h.close()
    root.setLevel(logging.NOTSET)


def _abspath(path: str) -> str:
    import os

    return os.path.abspath(path)
