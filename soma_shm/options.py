"""How an :class:`soma_shm.Engine` runs its workers (:class:`EngineOptions`)."""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
from dataclasses import dataclass
from typing import Literal

from .errors import ParameterError

__all__ = ["EngineOptions"]


@dataclass(frozen=True)
class EngineOptions:
    """How the engine runs its workers.

    Parameters
    ----------
    start_method : {"forkserver", "spawn"} or None
        How workers are started. ``None``: ``forkserver`` where the platform has it (its server
        preloads and warms the kernels once, so a new worker is ready in tens of milliseconds),
        else ``spawn`` (every new worker imports and loads the kernels itself: seconds).
    spares : bool
        Keep an idle, warm spare worker per role so that a cancel never waits for a start.
        ``False`` is the strict mode: at most one worker process per role at any instant.
    timeout : float
        Seconds a request may compute before its worker is terminated (WorkerTimeout). A queued
        request is given up (WorkerTimeout) only past the sum of what it waits for: a worker's
        start (at most 60 s) and ``timeout`` for each request ahead of it and itself.
    stft_above_seconds : float
        Viewports wider than this use the STFT, narrower ones the CWT.
    snap_queue : int
        Snap requests waiting beyond the one computing; past it the oldest is dropped (QueueFull).
    viewport_slots, snap_slots : int
        Output slots per role: one for the computing request, the others for terminated
        workers whose slot waits for their death to be confirmed (results own their arrays and
        hold no slot).
    max_width, max_height : int
        Largest viewport image (the slot capacity).
    max_snap_points : int
        Largest partial (points) a snap slot holds.
    max_request_bytes : int
        Largest working memory one viewport request may need (estimated before it starts, from
        its geometry; see :func:`soma_shm.render.request_cost`). A request above it is refused
        with a ParameterError naming what to change (usually ``fmin``: a wavelet's length grows
        as ``1 / fmin``). Default 1 GiB.
    log_level : str or int, optional
        Lifecycle logging level (``"DEBUG"``, ``"INFO"``...); default from the ``SOMA_SHM_LOG``
        environment variable, else quiet.
    log_file : str, optional
        Also log to this file (workers included).
    worker_threads : int, optional
        numba threads per worker (default: all cores).
    pyramid : bool
        Build each file's pooled STFT pyramid when it is opened (one pass of FFTs, about 1/7 of
        the float32 audio in shared memory; see :mod:`soma_shm.pyramid`), so that the overview
        and every STFT viewport wider than ``stft_above_seconds`` are cut from it in
        milliseconds instead of recomputed. ``False``: compute them from the audio each time.
    """

    start_method: Literal["forkserver", "spawn"] | None = None
    spares: bool = True
    timeout: float = 300.0
    stft_above_seconds: float = 30.0
    snap_queue: int = 16
    viewport_slots: int = 3
    snap_slots: int = 2
    max_width: int = 2560
    max_height: int = 1600
    max_snap_points: int = 100_000
    max_request_bytes: int = 1 << 30
    log_level: str | int | None = None
    log_file: str | None = None
    worker_threads: int | None = None
    pyramid: bool = True

    def __post_init__(self) -> None:
        if self.start_method not in (None, "forkserver", "spawn"):
            raise ParameterError(
                f"start_method={self.start_method!r} is not supported; use 'forkserver', 'spawn' or None"
            )
        if self.start_method == "forkserver" and "forkserver" not in mp.get_all_start_methods():
            raise ParameterError("start_method='forkserver' is not available on this platform; use 'spawn'")
        for name, lo in (("timeout", 0.001), ("stft_above_seconds", 0.0)):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= lo):
                raise ParameterError(f"{name}={v!r} must be a finite number >= {lo}")
        for name, lo in (
            ("snap_queue", 1),
            ("viewport_slots", 1),
            ("snap_slots", 1),
            ("max_width", 1),
            ("max_height", 1),
            ("max_snap_points", 2),
            ("max_request_bytes", 1 << 20),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ParameterError(f"{name}={v!r} must be an integer >= {lo}")
        if self.worker_threads is not None and (
                isinstance(self.worker_threads, bool) or not isinstance(self.worker_threads, int)
                or self.worker_threads < 1):
            raise ParameterError(f"worker_threads={self.worker_threads!r} must be None (all cores) or an integer >= 1")
        for name in ("spares", "pyramid"):
            if not isinstance(getattr(self, name), bool):
                raise ParameterError(f"{name}={getattr(self, name)!r} must be True or False")

    @property
    def method(self) -> str:
        if self.start_method:
            return self.start_method
        return "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"

    def level(self) -> int | None:
        value = self.log_level if self.log_level is not None else os.environ.get("SOMA_SHM_LOG")
        if value in (None, ""):
            return None
        if isinstance(value, int):
            return value
        level = logging.getLevelName(str(value).upper())
        if not isinstance(level, int):
            raise ParameterError(f"log level {value!r} is unknown; use DEBUG, INFO, WARNING or ERROR")
        return level
