"""What an :class:`soma_shm.Engine` hands back: file info, results, request handles.

Results own their arrays: the supervisor copies a worker's output out of its shared slot the
moment it is delivered (a 1600 x 600 image is 1 MB, a fraction of a millisecond) and frees the
slot, so an array taken from a result never changes, however many requests follow
(``docs/design.md``, "Slots and results"). They are read-only.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .errors import ParameterError, RequestCancelled

__all__ = ["FileInfo", "ImageResult", "ViewportResult", "SnapResult", "RequestHandle"]


@dataclass(frozen=True)
class FileInfo:
    """The open file (or array)."""

    path: str | None
    frames: int
    sample_rate: float
    channels: int
    generation: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


@dataclass
class ImageResult:
    """An image computed in the main process (the overview)."""

    image: np.ndarray
    magnitude: np.ndarray
    t0: float
    t1: float
    fmin: float
    fmax: float
    method: str
    amp_reference: float
    timings: dict = field(default_factory=dict)


class _Result:
    """A worker's result; its arrays are its own (read-only)."""

    _arrays: tuple[str, ...] = ()

    def __init__(self, request_id: int, timings: dict):
        self.request_id = request_id
        self.timings: dict = timings
        self.released = False

    def release(self) -> None:
        """Drop the arrays (for callers that kept the result but not the data). Safe twice."""
        for name in self._arrays:
            setattr(self, name, None)
        self.released = True

    def copy(self):
        """The result itself: its arrays are already independent of every shared block."""
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class ViewportResult(_Result):
    """A viewport image: ``image`` (uint8, ``(height, width)``), and ``magnitude`` (float32) when
    requested with ``magnitude=True`` (else None)."""

    _arrays = ("image", "magnitude")

    def __init__(self, request_id: int, payload: dict, params: dict, timings: dict):
        super().__init__(request_id, timings)
        self.image: np.ndarray | None = payload["image"]
        self.magnitude: np.ndarray | None = payload["magnitude"]
        self.t0, self.t1 = params.get("t0", 0.0), params.get("t1", 0.0)
        self.fmin, self.fmax = params.get("fmin", 0.0), params.get("fmax", 0.0)
        self.method: str = params.get("method", "")
        self.from_pyramid: bool = params.get("pyramid") is not None  # cut from the file's STFT pyramid
        self.amp_reference: float = params.get("amp_reference", 1.0)


class SnapResult(_Result):
    """A snapped partial: ``points`` (K, 3) float64 (time s, frequency Hz, amplitude)."""

    _arrays = ("points",)

    def __init__(self, request_id: int, payload: dict, trace: np.ndarray, timings: dict):
        super().__init__(request_id, timings)
        self.points: np.ndarray | None = payload["points"]
        self.trace = trace


class RequestHandle(Future):
    """A submitted request: a :class:`concurrent.futures.Future` of its result.

    Works with ``concurrent.futures.wait`` and ``as_completed``. ``result()`` raises the
    request's typed error (RequestCancelled, WorkerCrashed, WorkerTimeout, QueueFull, ...).
    Callbacks added with ``add_done_callback`` run in the thread that ends the request: the
    engine's supervisor thread (with no lock held: they may call the engine; keep them short and
    never wait there for another request's result) or a thread that cancels it.
    """

    def __init__(self, supervisor: Any, role: str, request_id: int):
        super().__init__()
        self._supervisor = supervisor
        self.role = role
        self.request_id = request_id

    def cancel(self) -> bool:
        """Cancel the request (terminating its worker if it is computing). False if it had ended."""
        return self._supervisor.cancel(ids={self.request_id}) > 0

    def cancelled(self) -> bool:
        """True if the request ended with RequestCancelled."""
        return self.done() and isinstance(self.exception(), RequestCancelled)

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<RequestHandle {self.role} #{self.request_id} {state}>"


def on_result_callback(fn: Callable[[Any], Any]) -> Callable[[Future], None]:
    """``fn(result_or_exception)`` as a done-callback (ParameterError if ``fn`` is not callable)."""
    if not callable(fn):
        raise ParameterError(f"on_result={fn!r} must be a callable taking the result (or None)")

    def call(f: Future) -> None:
        exc = f.exception()
        fn(exc if exc is not None else f.result())

    return call
