"""The exception hierarchy of soma_shm.

Every error the package raises on purpose derives from :class:`SomaError`, so a caller can catch
the whole family; each also derives from the built-in exception a Python user would expect
(``ValueError`` for bad parameters, ``TimeoutError`` for a timeout, ...). Messages name the bad
value and say what to do instead.
"""

from __future__ import annotations

from concurrent.futures import CancelledError

__all__ = [
    "SomaError",
    "ParameterError",
    "AudioFormatError",
    "SharedMemoryError",
    "EngineClosed",
    "RequestCancelled",
    "QueueFull",
    "WorkerError",
    "WorkerCrashed",
    "WorkerTimeout",
    "ProjectAudioMissing",
]


class SomaError(Exception):
    """Base class of every error raised by soma_shm."""


class ParameterError(SomaError, ValueError):
    """A parameter is out of range or inconsistent (bad geometry, bad trace, bad settings)."""


class AudioFormatError(SomaError, ValueError):
    """An audio file or array cannot be used: unknown format, corrupt, empty, non-finite, bad rate."""


class SharedMemoryError(SomaError, OSError):
    """A shared-memory block cannot be created or attached (for example /dev/shm is too small)."""


class EngineClosed(SomaError, RuntimeError):
    """The engine was closed (or has no open file) and cannot take the request."""


class RequestCancelled(SomaError, CancelledError):
    """The request was superseded, cancelled by the caller, or dropped when the file changed.

    Also a ``concurrent.futures.CancelledError``, so code written for futures recognises it."""


class QueueFull(SomaError, RuntimeError):
    """The snap queue was full; the oldest queued request was dropped with this error."""


class WorkerError(SomaError, RuntimeError):
    """The worker raised an exception while computing; ``remote_traceback`` holds its traceback."""

    def __init__(self, message: str, remote_traceback: str | None = None):
        super().__init__(message)
        self.remote_traceback = remote_traceback


class WorkerCrashed(SomaError, RuntimeError):
    """The worker process died without answering; ``exitcode`` is its exit code (or -signal)."""

    def __init__(self, message: str, exitcode: int | None = None):
        super().__init__(message)
        self.exitcode = exitcode


class WorkerTimeout(SomaError, TimeoutError):
    """The request exceeded its timeout; the worker was terminated and will be respawned."""


class ProjectAudioMissing(ParameterError):
    """A project's audio is neither where it was saved nor anywhere it was looked for (matched
    by MD5); the message names the places; choose the folder that holds it."""
