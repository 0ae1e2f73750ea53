"""The Engine: one open file in shared memory, persistent workers, terminate-and-respawn.

Processes and roles (ENGINE.md section 3):

- the main process (the caller, e.g. the UI) owns every shared block, decodes the file into the
  audio block and computes the overview in-process (the kernels release the GIL);
- a ``viewport`` worker renders viewport images (STFT above ``stft_above_seconds``, CWT at or
  below), latest request wins: a superseded computation is stopped by terminating its process;
- a ``snap`` worker snaps traces; snap requests queue (bounded) and are cancelled only when the
  file changes or the caller cancels.

Each role has at most one computing process; with ``spares`` an idle, already-warm spare per
role takes over instantly when the busy one is terminated (without spares there are never more
than two worker processes). Workers are started from a ``forkserver`` that preloads and warms the
kernels (or with ``spawn``), never forked from the caller.

A single supervisor thread owns all workers: it waits on every worker's pipe and process
sentinel plus a wake-up pipe, so answers, crashes and timeouts are noticed at once, and the
caller's thread only ever appends a command and writes one byte.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import math
import multiprocessing as mp
import multiprocessing.connection
import os
import pickle
import threading
import time
import weakref
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np

from . import _validate
from .ipc import _log
from .errors import (
    AudioFormatError,
    EngineClosed,
    ParameterError,
    QueueFull,
    RequestCancelled,
    WorkerCrashed,
    WorkerError,
    WorkerTimeout,
)
from .settings import AnalysisSettings

__all__ = ["Engine", "EngineOptions", "FileInfo", "ImageResult", "ViewportResult", "SnapResult", "RequestHandle"]

log = logging.getLogger("soma_shm.engine")

Role = Literal["viewport", "snap"]
MAX_STARTUP_FAILURES = 3
ROLES: tuple[str, ...] = ("viewport", "snap")


# --------------------------------------------------------------------------------- options
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
        Seconds a request may compute before its worker is terminated (WorkerTimeout).
    stft_above_seconds : float
        Viewports wider than this use the STFT, narrower ones the CWT.
    snap_queue : int
        Snap requests waiting beyond the one computing; past it the oldest is dropped (QueueFull).
    viewport_slots, snap_slots : int
        Output slots per role (results held by the caller keep their slot until released).
    max_width, max_height : int
        Largest viewport image (the slot capacity).
    max_snap_points : int
        Largest partial (points) a snap slot holds.
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
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ParameterError(f"{name}={v!r} must be an integer >= {lo}")
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


# --------------------------------------------------------------------------------- results
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


class _SlotResult:
    """A result that lives in a shared slot until released (or copied)."""

    def __init__(self, engine: "Engine", role: str, slot: int, request_id: int):
        self._engine = engine
        self._role = role
        self._slot: int | None = slot
        self.request_id = request_id

    @property
    def released(self) -> bool:
        return self._slot is None

    def release(self) -> None:
        """Give the slot back (the arrays become invalid). Safe to call twice."""
        if self._slot is not None:
            self._engine._release(self._role, self._slot, self)

    def _detach(self) -> None:
        """Copy the arrays out of the slot (called when the engine needs the slot back)."""
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class ViewportResult(_SlotResult):
    """A viewport image: ``image`` (uint8) and ``magnitude`` (float32) views of a shared slot.

    The views stay valid until :meth:`release`; :meth:`copy` returns an independent copy and
    releases the slot. If the caller holds more results than the role has slots, the oldest held
    result is copied out of its slot automatically (nothing is ever overwritten under a view).
    """

    def __init__(self, engine, slot, request_id, image, magnitude, params, timings):
        super().__init__(engine, "viewport", slot, request_id)
        self.image: np.ndarray | None = image
        self.magnitude: np.ndarray | None = magnitude
        self.t0, self.t1 = params["t0"], params["t1"]
        self.fmin, self.fmax = params["fmin"], params["fmax"]
        self.method: str = params["method"]
        self.from_pyramid: bool = params.get("pyramid") is not None  # cut from the file's STFT pyramid
        self.amp_reference: float = params["amp_reference"]
        self.timings: dict = timings

    def _detach(self) -> None:
        self.image = None if self.image is None else self.image.copy()
        self.magnitude = None if self.magnitude is None else self.magnitude.copy()
        self._slot = None

    def copy(self) -> "ViewportResult":
        """Copy the arrays out of the slot and release it; returns self."""
        with self._engine._lock:
            if self._slot is not None:
                slot = self._slot
                self._detach()
                self._engine._release_locked("viewport", slot)
        return self



class SnapResult(_SlotResult):
    """A snapped partial: ``points`` (K, 3) float64 (time s, frequency Hz, amplitude)."""

    def __init__(self, engine, slot, request_id, points, trace, timings):
        super().__init__(engine, "snap", slot, request_id)
        self._points = points
        self.trace = trace
        self.timings: dict = timings

    @property
    def points(self) -> np.ndarray:
        """The points (a copy: the slot is released on first access)."""
        if self._slot is not None:
            self.copy()
        return self._points

    def _detach(self) -> None:
        self._points = np.array(self._points, copy=True)
        self._slot = None

    def copy(self) -> "SnapResult":
        with self._engine._lock:
            if self._slot is not None:
                slot = self._slot
                self._detach()
                self._engine._release_locked("snap", slot)
        return self


class RequestHandle:
    """Future-like handle of a submitted request."""

    def __init__(self, engine: "Engine", role: str, request_id: int):
        self._engine = engine
        self.role = role
        self.request_id = request_id
        self._future: Future = Future()

    def result(self, timeout: float | None = None):
        """Block until the result (or its error) is there; raises the request's typed error."""
        return self._future.result(timeout)

    def exception(self, timeout: float | None = None):
        return self._future.exception(timeout)

    def done(self) -> bool:
        return self._future.done()

    def cancel(self) -> bool:
        """Cancel the request (terminating its worker if it is computing). False if finished."""
        return self._engine._cancel_request(self.role, self.request_id)

    def add_done_callback(self, fn: Callable[["RequestHandle"], Any]) -> None:
        """Call ``fn(handle)`` when done (from the engine's supervisor thread: keep it short)."""
        self._future.add_done_callback(lambda _f: fn(self))

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<RequestHandle {self.role} #{self.request_id} {state}>"


# ------------------------------------------------------------------------------- internals
@dataclass
class _Request:
    id: int
    role: str
    op: str
    args: tuple  # op-specific message fields after the slot/generation
    handle: RequestHandle
    params: dict
    submitted: float
    on_result: Callable | None = None
    slot: int = -1
    generation: int = 0
    worker: "_Worker | None" = None
    started: float = 0.0
    deadline: float = math.inf


class _Worker:
    def __init__(self, role: str, proc, conn, started: float):
        self.role = role
        self.proc = proc
        self.conn = conn
        self.started = started
        self.ready = False
        self.ready_at = 0.0
        self.preloaded = False
        self.request: _Request | None = None
        self.terminating = False
        # The cancelled request whose slot stays leased until this (terminated) process is reaped.
        self.dying_request: _Request | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid


class _RoleState:
    def __init__(self, name: str, ring, slots: int):
        self.name = name
        self.ring = ring
        self.slot_owner: list[Any] = [None] * slots  # None | _Request | result object
        self.delivered: deque = deque()  # results holding slots, oldest first
        self.workers: list[_Worker] = []
        self.started = 0  # worker processes started for this role
        self.startup_failures = 0  # consecutive workers that died before becoming ready
        self.queue: deque[_Request] = deque()
        self.current: _Request | None = None
        self.stats = {
            "requests": 0,
            "done": 0,
            "errors": 0,
            "cancels": 0,
            "respawns": 0,
            "timeouts": 0,
            "crashes": 0,
            "dropped": 0,
            "bytes_sent": 0,
            "bytes_received": 0,
            "messages_sent": 0,
            "messages_received": 0,
            "spawn_to_ready_s": [],
        }


_ENGINES: "weakref.WeakSet[Engine]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:  # pragma: no cover - exercised by interpreter exit
    for engine in list(_ENGINES):
        try:
            engine.close()
        except Exception:
            pass


# ------------------------------------------------------------------------------------ engine
class Engine:
    """Shared audio, persistent workers, latest-wins viewports and queued snaps.

    Parameters
    ----------
    settings : AnalysisSettings, optional
        Analysis settings for every request (change with :meth:`set_settings`).
    options : EngineOptions, optional
        Process options; keyword arguments override single fields
        (``Engine(spares=False, timeout=30)``).

    Examples
    --------
    >>> import numpy as np, soma_shm
    >>> fs = 48000
    >>> x = np.sin(2 * np.pi * 440 * np.arange(5 * fs) / fs).astype(np.float32)
    >>> with soma_shm.Engine() as engine:                      # doctest: +SKIP
    ...     info = engine.open(x, sample_rate=fs)
    ...     overview = engine.overview(1024, 256)
    ...     res = engine.submit_viewport(1.0, 2.0, 50, 5000, 800, 300).result()
    ...     picture = res.copy().image
    """

    def __init__(self, settings: AnalysisSettings | None = None, options: EngineOptions | None = None, **overrides):
        if options is None:
            options = EngineOptions(**overrides)
        elif overrides:
            from dataclasses import replace

            options = replace(options, **overrides)
        if mp.current_process().name.startswith("soma-shm-"):
            # A script without `if __name__ == "__main__":` is re-imported by every worker.
            raise EngineClosed(
                "an Engine cannot be created inside a soma_shm worker process: guard the script's "
                "entry point with `if __name__ == '__main__':`"
            )
        self.options = options
        self.settings = _validate.settings_or_default(settings)
        _log.configure(options.level(), options.log_file)

        from .ipc.blocks import SlotRing
        from .ipc.shm import sweep_orphans

        sweep_orphans()
        self._ctx = mp.get_context(options.method)
        if options.method == "forkserver":
            self._ctx.set_forkserver_preload(["soma_shm.ipc._preload"])
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._commands: deque = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._closed = False
        self._audio_block = None
        self._audio = None
        self._pyramid_block = None
        self._pyramid = None
        self._pyramid_build_s = 0.0
        self._info: FileInfo | None = None
        self._generation = 0
        self.amp_reference: float | None = None
        self._roles: dict[str, _RoleState] = {}
        try:
            img_cap = SlotRing.image_capacity(options.max_width, options.max_height)
            self._roles["viewport"] = _RoleState(
                "viewport", SlotRing.create("viewport", options.viewport_slots, img_cap), options.viewport_slots
            )
            self._roles["snap"] = _RoleState(
                "snap", SlotRing.create("snap", options.snap_slots, 24 * options.max_snap_points), options.snap_slots
            )
        except BaseException:
            self._release_blocks()
            os.close(self._wake_r)
            os.close(self._wake_w)
            raise
        _ENGINES.add(self)
        with self._lock:
            for role in ROLES:
                self._ensure_workers(role)
        self._thread = threading.Thread(target=self._supervise, name="soma-shm-supervisor", daemon=True)
        self._thread.start()
        log.info("engine started method=%s spares=%s pid=%d", options.method, options.spares, os.getpid())

    # ------------------------------------------------------------------------- public API
    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def info(self) -> FileInfo | None:
        """The open file, or None."""
        return self._info

    @property
    def audio(self) -> np.ndarray:
        """Read-only view of the open file's samples (in shared memory)."""
        self._check_open()
        view = self._audio.view()
        view.flags.writeable = False
        return view

    def set_settings(self, settings: AnalysisSettings) -> None:
        """Use ``settings`` for requests submitted from now on."""
        self.settings = _validate.settings_or_default(settings)

    def open(
        self,
        source: Any,
        sample_rate: float | None = None,
        progress: Callable[[str, float], None] | None = None,
    ) -> FileInfo:
        """Open a file (path) or an array; the audio goes into shared memory once.

        Cancels every pending request of both roles (RequestCancelled). ``progress(stage,
        fraction)`` is called with stage ``"decode"`` while decoding, then ``"pyramid"`` while the
        file's STFT pyramid is built (``EngineOptions.pyramid``). On any error the previous file
        stays open and nothing of the new one is left behind.

        Raises
        ------
        AudioFormatError
            Unreadable/empty/corrupt file, NaN/Inf samples, unsupported sample rate.
        SharedMemoryError
            Not enough shared memory for the audio.
        """
        self._check_alive()
        from .ipc.blocks import AudioBlock

        if isinstance(source, (str, os.PathLike)):
            from .audio import audio_info, decode_into

            finfo = audio_info(source)
            path, frames, fs, channels = str(source), finfo.frames, finfo.sample_rate, finfo.channels
            if sample_rate is not None and float(sample_rate) != fs:
                raise ParameterError(
                    f"sample_rate={sample_rate!r} contradicts the file's own rate ({fs:g} Hz); omit it for files"
                )
            block = AudioBlock.create(frames, fs, self._generation + 1)
            try:
                samples = block.samples()
                decode_into(source, samples, None if progress is None else (lambda f: progress("decode", f)))
            except BaseException:
                samples = None
                block.unlink()
                block.close()
                raise
        else:
            if sample_rate is None:
                raise ParameterError("sample_rate is required when opening an array (e.g. sample_rate=48000)")
            fs = _validate.sample_rate(sample_rate)
            arr = np.asarray(source)
            channels = arr.shape[1] if arr.ndim == 2 else 1
            data = _validate.audio_array(arr)
            path, frames = None, int(data.shape[0])
            block = AudioBlock.create(frames, fs, self._generation + 1)
            samples = block.samples()
            samples[:] = data
            if progress is not None:
                progress("decode", 1.0)
        # The new file's 0 dB level is known before it replaces the old one, so no request ever
        # sees a file without it.
        from . import render

        pyr_block = pyramid = None
        try:
            reference = render.reference_level(samples, fs, self.settings)
            if self.options.pyramid:
                pyr_block, pyramid = self._build_pyramid(samples, fs, reference, progress)
        except BaseException:
            samples = pyramid = None
            for b in (pyr_block, block):
                if b is not None:
                    b.close()
                    b.unlink()
            raise
        # Swap in the new file: cancel everything that belonged to the old one.
        with self._lock:
            self._cancel_all("the file changed")
            old = (self._audio_block, self._pyramid_block)
            self._generation += 1
            self._audio_block = block
            self._audio = samples
            self._pyramid_block = pyr_block
            self._pyramid = pyramid
            self._info = FileInfo(path, frames, fs, channels, self._generation)
            self.amp_reference = reference
        for b in old:
            if b is not None:
                b.close()
                b.unlink()
        log.info("open %s frames=%d fs=%g generation=%d", path or "<array>", frames, fs, self._generation)
        return self._info

    def _build_pyramid(self, samples, fs, reference, progress):
        """Build the file's pyramid into a new shared block (this process, all threads)."""
        from .ipc.blocks import PyramidBlock
        from .pyramid import PyramidLayout, build_pyramid

        s = self.settings
        layout = PyramidLayout.for_recording(samples.shape[0], fs, s.stft_nfft(fs), s.stft_hop(fs))
        block = PyramidBlock.create(layout, self._generation + 1)
        try:
            t = time.perf_counter()
            pyramid = build_pyramid(samples, fs, s, reference, out=block.levels_buffer(),
                                    progress=None if progress is None else (lambda f: progress("pyramid", f)))
            block.mark_complete(pyramid.top, pyramid.scale)
        except BaseException:
            pyramid = None
            block.close()
            block.unlink()
            raise
        self._pyramid_build_s = time.perf_counter() - t
        log.info("pyramid built bytes=%d levels=%d in %.3f s", layout.nbytes, len(layout.blocks), self._pyramid_build_s)
        return block, pyramid

    def _pyramid_for(self, method: str, span: float):
        """The open file's pyramid if a view of ``method`` over ``span`` seconds is cut from it."""
        if (method != "stft" or self._pyramid is None or span <= self.options.stft_above_seconds
                or not self._pyramid.layout.matches(self.settings)):
            return None
        return self._pyramid

    def overview(self, width: int, height: int, fmin: float = 20.0, fmax: float | None = None) -> ImageResult:
        """Pooled STFT image of the whole file, made in this process (GIL released).

        Cut from the file's pyramid when there is one (milliseconds, any width), else computed
        from the audio.

        Returns an :class:`ImageResult` with the uint8 image tone-mapped against the file's
        ``amp_reference`` and the float32 magnitude.

        Notes
        -----
        ``engine.amp_reference`` (the magnitude shown at 0 dB) is set by :meth:`open`, not here:
        it is the maximum of a coarse (256 x 64) whole-file pooled STFT made by the overview's
        kernel (max-pooling over time keeps every frame's peak), so it exists before any viewport
        is requested and does not change when the overview is re-rendered at another size.
        Viewports use the same reference, so brightness never jumps while zooming.
        """
        self._check_open()
        info = self._info
        fmax = min(0.5 * info.sample_rate, 20_000.0) if fmax is None else fmax
        from . import render

        t = time.perf_counter()
        pyramid = self._pyramid_for("stft", math.inf)
        if pyramid is not None:
            mag = pyramid.image(0.0, info.duration, fmin, fmax, width, height, self.settings)
        else:
            mag = render.stft_image(self._audio, info.sample_rate, 0.0, info.duration, fmin, fmax, width, height,
                                    self.settings, check_finite=False)
        t_k = time.perf_counter() - t
        image = render.tone_map(mag, self.amp_reference, self.settings)
        return ImageResult(image, mag, 0.0, info.duration, fmin, fmax, "stft", self.amp_reference,
                           {"kernel_s": t_k, "total_s": time.perf_counter() - t, "pyramid": pyramid is not None})

    def submit_viewport(
        self,
        t0: float,
        t1: float,
        fmin: float,
        fmax: float,
        width: int,
        height: int,
        on_result: Callable[[Any], Any] | None = None,
        magnitude: bool = False,
        method: Literal["cwt", "stft"] | None = None,
    ) -> RequestHandle:
        """Render a viewport image in the viewport worker; the latest request wins.

        A request still computing when a newer one arrives is cancelled (its handle fails with
        RequestCancelled) by terminating its worker. ``on_result(result_or_exception)`` is called
        from the supervisor thread when the request finishes. The result is a
        :class:`ViewportResult` whose arrays are views of a shared slot.

        ``magnitude=True`` also exposes the float32 magnitude (a read-only view of the same slot,
        no extra transfer); otherwise ``result.magnitude`` is None. ``method`` forces ``"cwt"``
        or ``"stft"``; by default windows wider than ``stft_above_seconds`` use the STFT.

        Raises
        ------
        ParameterError
            Bad geometry, or an image larger than ``max_width`` x ``max_height``.
        EngineClosed
            No file open or the engine closed.
        """
        self._check_open()
        info = self._info
        t0, t1, fmin, fmax, width, height = _validate.view(
            t0, t1, fmin, fmax, width, height, info.sample_rate, info.duration,
            self.options.max_width, self.options.max_height,
        )
        if method is None:
            method = "stft" if (t1 - t0) > self.options.stft_above_seconds else "cwt"
        elif method not in ("cwt", "stft"):
            raise ParameterError(f"method={method!r} must be 'cwt', 'stft' or None (automatic)")
        if not isinstance(magnitude, (bool, np.bool_)):
            raise ParameterError(f"magnitude={magnitude!r} must be True or False")
        pyramid = self._pyramid_for(method, t1 - t0)
        params = dict(t0=t0, t1=t1, fmin=fmin, fmax=fmax, width=width, height=height, method=method,
                      settings=self.settings, amp_reference=self.amp_reference, magnitude=bool(magnitude),
                      pyramid=None if pyramid is None else self._pyramid_block.desc())
        return self._submit("viewport", "viewport", (params,), params, on_result)

    def submit_snap(self, trace: Any, on_result: Callable[[Any], Any] | None = None) -> RequestHandle:
        """Snap a drawn trace in the snap worker; requests queue in order.

        The result is a :class:`SnapResult` whose ``points`` are ``(K, 3)`` (time, frequency,
        amplitude). Past ``snap_queue`` waiting requests the oldest waiting one fails with
        QueueFull.
        """
        self._check_open()
        pts = _validate.trace(trace, self._info.sample_rate, self._info.duration)
        params = dict(trace=pts, settings=self.settings)
        return self._submit("snap", "snap", (params,), params, on_result)

    def cancel(self, role: Role | None = None) -> int:
        """Cancel pending and computing requests of one role (or both); returns how many."""
        if role is not None and role not in ROLES:
            raise ParameterError(f"role={role!r} must be 'viewport', 'snap' or None")
        with self._lock:
            n = 0
            for name in (role,) if role else ROLES:
                n += self._cancel_role(name, "cancelled by the caller")
            return n

    def stats(self) -> dict:
        """Counters per role: requests, done, errors, cancels, respawns, timeouts, crashes,
        dropped, bytes/messages over the pipes, worker pids, startup latencies, and the slots
        (``total``, ``computing`` = leased to a request, ``held`` = results the caller has not
        released, ``capacity_bytes`` per slot); ``pyramid``: the open file's pyramid (``bytes``,
        ``levels``, ``build_s``) or None."""
        with self._lock:
            out = {}
            for name, r in self._roles.items():
                s = dict(r.stats)
                lat = s.pop("spawn_to_ready_s")
                s["spawn_to_ready_s"] = list(lat)
                s["workers"] = [w.pid for w in r.workers]
                s["busy"] = r.current is not None
                s["queued"] = len(r.queue)
                s["preloaded"] = [w.preloaded for w in r.workers if w.ready]
                s["slots"] = {
                    "total": len(r.slot_owner),
                    "computing": sum(isinstance(o, _Request) for o in r.slot_owner),
                    "held": len(r.delivered),
                    "capacity_bytes": r.ring.capacity,
                }
                out[name] = s
            out["start_method"] = self.options.method
            out["generation"] = self._generation
            pyr = self._pyramid
            out["pyramid"] = None if pyr is None else {
                "bytes": pyr.nbytes, "levels": len(pyr.layout.blocks), "build_s": self._pyramid_build_s,
                "frames_per_block": pyr.layout.frames_per_block,
            }
            return out

    def worker_pids(self, role: Role | None = None) -> list[int]:
        """Live worker process ids (of one role, or both)."""
        with self._lock:
            names = (role,) if role else ROLES
            return [w.pid for n in names for w in self._roles[n].workers if w.pid is not None]

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Block until every role has a ready worker (useful before measuring latency)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                ready = [sum(w.ready and not w.terminating for w in r.workers) for r in self._roles.values()]
                if all(n >= (2 if self.options.spares else 1) for n in ready):
                    return True
            time.sleep(0.005)
        return False

    def close(self) -> None:
        """Cancel everything, stop the workers, unlink every shared block. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for name in ROLES:
                self._cancel_role(name, "the engine closed", terminate=False)
        self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)
        with self._lock:
            for r in self._roles.values():
                for w in list(r.workers):
                    self._stop_worker(w)
                r.workers.clear()
                for res in list(r.delivered):
                    res._detach()
                r.delivered.clear()
            self._audio = None
            self._release_blocks()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        _ENGINES.discard(self)
        log.info("engine closed pid=%d", os.getpid())

    # ----------------------------------------------------------------------- submission
    def _check_alive(self) -> None:
        if self._closed:
            raise EngineClosed("the engine is closed; create a new Engine")

    def _check_open(self) -> None:
        self._check_alive()
        if self._info is None:
            raise EngineClosed("no file is open; call engine.open(path_or_array) first")

    def _submit(self, role: str, op: str, args: tuple, params: dict, on_result) -> RequestHandle:
        rid = next(self._ids)
        handle = RequestHandle(self, role, rid)
        req = _Request(rid, role, op, args, handle, params, time.perf_counter(), on_result)
        if on_result is not None:
            handle._future.add_done_callback(lambda f: on_result(f.exception() or f.result()))
        with self._lock:
            self._check_alive()
            self._commands.append(("submit", req))
        self._wake()
        log.debug("submit role=%s request=%d op=%s", role, rid, op)
        return handle

    def _submit_test(self, role: str, op: str, *args) -> RequestHandle:
        """Test operations (sleep, raise, exit, kill, pattern) for the crash matrix."""
        self._check_alive()
        return self._submit(role, op, args, {"op": op}, None)

    def _cancel_request(self, role: str, request_id: int) -> bool:
        with self._lock:
            r = self._roles[role]
            if r.current is not None and r.current.id == request_id:
                self._terminate_current(r, RequestCancelled(f"{role} request {request_id} was cancelled"))
                r.stats["cancels"] += 1
                self._dispatch(r)
                return True
            for req in list(r.queue):
                if req.id == request_id:
                    r.queue.remove(req)
                    self._fail(req, RequestCancelled(f"{role} request {request_id} was cancelled"))
                    r.stats["cancels"] += 1
                    return True
            # Not yet picked up by the supervisor?
            for cmd in list(self._commands):
                if cmd[0] == "submit" and cmd[1].id == request_id:
                    self._commands.remove(cmd)
                    self._fail(cmd[1], RequestCancelled(f"{role} request {request_id} was cancelled"))
                    r.stats["cancels"] += 1
                    return True
        return False

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    # ----------------------------------------------------------------------- supervision
    def _supervise(self) -> None:
        while True:
            with self._lock:
                if self._closed and not self._commands:
                    return
                objs: list[Any] = [self._wake_r]
                for r in self._roles.values():
                    for w in r.workers:
                        objs.append(w.conn)
                        objs.append(w.proc.sentinel)
                deadline = min(
                    (r.current.deadline for r in self._roles.values() if r.current is not None), default=math.inf
                )
            timeout = None if deadline == math.inf else max(0.0, deadline - time.perf_counter())
            try:
                ready = mp.connection.wait(objs, timeout)
            except OSError:
                ready = []
            with self._lock:
                if self._wake_r in ready:
                    try:
                        os.read(self._wake_r, 4096)
                    except (BlockingIOError, OSError):
                        pass
                try:
                    self._step(set(ready))
                except Exception:  # pragma: no cover - a bug here must not kill supervision
                    log.exception("supervisor step failed")

    def _step(self, ready: set) -> None:
        while self._commands:
            cmd = self._commands.popleft()
            if cmd[0] == "submit":
                self._accept(cmd[1])
        for r in self._roles.values():
            for w in list(r.workers):
                if w.conn in ready:
                    self._receive(r, w)
            for w in list(r.workers):
                if w.proc.sentinel in ready or (not w.proc.is_alive() and w in r.workers):
                    self._on_death(r, w)
        now = time.perf_counter()
        for r in self._roles.values():
            if r.current is not None and now >= r.current.deadline:
                req = r.current
                log.warning("timeout role=%s request=%d pid=%s after %.1fs", r.name, req.id,
                            req.worker.pid if req.worker else None, self.options.timeout)
                r.stats["timeouts"] += 1
                self._terminate_current(
                    r, WorkerTimeout(f"{r.name} request {req.id} exceeded the timeout of {self.options.timeout:g} s; "
                                     "its worker was terminated (raise EngineOptions.timeout for longer work)")
                )
        if self._closed:
            return
        for name, r in self._roles.items():
            self._ensure_workers(name)
            self._dispatch(r)

    def _accept(self, req: _Request) -> None:
        r = self._roles[req.role]
        r.stats["requests"] += 1
        if req.role == "viewport":
            # Latest wins: everything older is superseded.
            reason = RequestCancelled(f"viewport request superseded by request {req.id}")
            for old in list(r.queue):
                r.queue.remove(old)
                self._fail(old, reason)
                r.stats["cancels"] += 1
            if r.current is not None:
                r.stats["cancels"] += 1
                self._terminate_current(r, reason)
            r.queue.append(req)
        else:
            if len(r.queue) >= self.options.snap_queue:
                dropped = r.queue.popleft()
                r.stats["dropped"] += 1
                self._fail(dropped, QueueFull(
                    f"snap request {dropped.id} was dropped: more than {self.options.snap_queue} snaps were "
                    "waiting (raise EngineOptions.snap_queue or wait for results)"))
            r.queue.append(req)
        self._ensure_workers(req.role)
        self._dispatch(r)

    def _dispatch(self, r: _RoleState) -> None:
        if self._closed or r.current is not None or not r.queue:
            return
        worker = next((w for w in r.workers if w.ready and w.request is None and not w.terminating), None)
        if worker is None:
            return
        if r.queue[0].op in ("viewport", "snap", "pattern") and None not in r.slot_owner and not r.delivered:
            return  # every slot belongs to a terminated worker not reaped yet: wait for it
        req = r.queue.popleft()
        if req.op in ("viewport", "snap", "pattern"):
            slot = self._lease(r, req)
            msg_tail = (self._audio_block.desc(), r.ring.desc(), slot, req.generation) if req.op != "pattern" else (
                r.ring.desc(), slot, req.generation)
            msg = (req.op, req.id, *msg_tail, *req.args)
        else:
            msg = (req.op, req.id, *req.args)
        req.worker = worker
        req.started = time.perf_counter()
        req.deadline = req.started + self.options.timeout
        worker.request = req
        r.current = req
        if not self._send(r, worker, msg):
            return
        log.debug("start role=%s request=%d pid=%d slot=%d", r.name, req.id, worker.pid, req.slot)

    def _send(self, r: _RoleState, w: _Worker, msg) -> bool:
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            w.conn.send_bytes(data)
        except (OSError, ValueError):
            self._on_death(r, w)
            return False
        r.stats["bytes_sent"] += len(data)
        r.stats["messages_sent"] += 1
        return True

    def _receive(self, r: _RoleState, w: _Worker) -> None:
        while True:
            try:
                if not w.conn.poll():
                    return
                data = w.conn.recv_bytes()
            except (EOFError, OSError):
                self._on_death(r, w)
                return
            r.stats["bytes_received"] += len(data)
            r.stats["messages_received"] += 1
            msg = pickle.loads(data)
            kind = msg[0]
            if kind == "ready":
                w.ready = True
                w.ready_at = time.perf_counter()
                w.preloaded = bool(msg[2])
                r.stats["spawn_to_ready_s"].append(w.ready_at - w.started)
                if self.options.method == "forkserver" and not w.preloaded:
                    log.warning("forkserver did not preload the kernels (pid=%d): workers start slowly", w.pid)
                log.debug("ready role=%s pid=%d after %.3fs (warm %.3fs)", r.name, w.pid, w.ready_at - w.started, msg[3])
                r.startup_failures = 0
            elif kind in ("done", "error"):
                req = w.request
                if req is None or req.id != msg[1]:
                    continue  # an answer to something already cancelled
                w.request = None
                r.current = None
                if kind == "done":
                    self._deliver(r, req, msg[2], msg[3], msg[4])
                else:
                    r.stats["errors"] += 1
                    self._free_slot(r, req)
                    exc_type = {"ParameterError": ParameterError, "AudioFormatError": AudioFormatError}.get(msg[2])
                    if exc_type is not None:
                        self._fail(req, exc_type(msg[3]))
                    else:
                        self._fail(req, WorkerError(f"{r.name} worker failed on request {req.id}: {msg[2]}: {msg[3]}", msg[4]))
                self._dispatch(r)

    def _deliver(self, r: _RoleState, req: _Request, slot: int, gen: int, meta: dict) -> None:
        now = time.perf_counter()
        timings = dict(meta)
        timings.update(queued_s=req.started - req.submitted, total_s=now - req.submitted,
                       overhead_s=now - req.submitted - meta.get("compute_s", 0.0))
        if req.op in ("sleep",):
            r.stats["done"] += 1
            self._resolve(req, timings)
            return
        if slot != req.slot or gen != req.generation or not r.ring.check(slot, req.id, gen):
            r.stats["errors"] += 1
            self._free_slot(r, req, bump=True)
            self._fail(req, WorkerError(f"{r.name} request {req.id}: the result slot did not check out (stale)"))
            return
        if req.op in ("viewport", "pattern"):
            image, mag = r.ring.image_views(slot)
            if not req.params.get("magnitude", False):
                mag = None  # the worker always fills it (the kernel's output); shown on request
            params = req.params if req.op == "viewport" else dict(
                t0=0.0, t1=0.0, fmin=0.0, fmax=0.0, method="pattern", amp_reference=1.0)
            result: Any = ViewportResult(self, slot, req.id, image, mag, params, timings)
        else:
            result = SnapResult(self, slot, req.id, r.ring.points_view(slot), req.params["trace"], timings)
        r.slot_owner[slot] = result
        r.delivered.append(result)
        r.stats["done"] += 1
        log.debug("done role=%s request=%d slot=%d total=%.1fms", r.name, req.id, slot, timings["total_s"] * 1e3)
        self._resolve(req, result)

    def _resolve(self, req: _Request, value) -> None:
        if not req.handle._future.done():
            req.handle._future.set_result(value)

    def _fail(self, req: _Request, exc: BaseException) -> None:
        if not req.handle._future.done():
            req.handle._future.set_exception(exc)

    # ----------------------------------------------------------------------- slots
    def _lease(self, r: _RoleState, req: _Request) -> int:
        free = [i for i, o in enumerate(r.slot_owner) if o is None]
        if not free:
            # Take back the slot of the oldest result the caller still holds: copy it out first.
            oldest = r.delivered.popleft()
            slot = oldest._slot
            oldest._detach()
            r.slot_owner[slot] = None
            free = [slot]
            log.debug("slot %s of role %s reclaimed from request %d (copied out)", slot, r.name, oldest.request_id)
        slot = free[0]
        req.slot = slot
        req.generation = r.ring.lease(slot, req.id)
        r.slot_owner[slot] = req
        log.debug("lease role=%s slot=%d request=%d generation=%d", r.name, slot, req.id, req.generation)
        return slot

    def _free_slot(self, r: _RoleState, req: _Request, bump: bool = False) -> None:
        if 0 <= req.slot < len(r.slot_owner) and r.slot_owner[req.slot] is req:
            r.slot_owner[req.slot] = None
            r.ring.free(req.slot, bump=bump)
            log.debug("release role=%s slot=%d request=%d bump=%s", r.name, req.slot, req.id, bump)

    def _release(self, role: str, slot: int, result) -> None:
        with self._lock:
            if result._slot == slot:
                for attr in ("image", "magnitude", "_points"):
                    if hasattr(result, attr):
                        setattr(result, attr, None)
                result._slot = None
                self._release_locked(role, slot)

    def _release_locked(self, role: str, slot: int) -> None:
        r = self._roles.get(role)
        if r is None:
            return
        owner = r.slot_owner[slot]
        if owner is not None and not isinstance(owner, _Request):
            r.slot_owner[slot] = None
            try:
                r.delivered.remove(owner)
            except ValueError:
                pass
            if not self._closed:
                r.ring.free(slot)
            log.debug("release role=%s slot=%d", role, slot)

    # ----------------------------------------------------------------------- workers
    def _ensure_workers(self, role: str) -> None:
        r = self._roles[role]
        if r.startup_failures >= MAX_STARTUP_FAILURES:
            # Workers die before they are ready (e.g. an unguarded __main__ that fails in them):
            # stop restarting and fail what waits, instead of a crash loop.
            for req in list(r.queue):
                r.queue.remove(req)
                self._fail(req, WorkerCrashed(
                    f"{role} workers fail to start ({r.startup_failures} in a row); check the log, and "
                    "guard the script's entry point with `if __name__ == '__main__':`", None))
            return
        wanted = 2 if self.options.spares else 1
        alive = [w for w in r.workers if not w.terminating]
        # Strict mode: never start while a terminated worker is still around.
        while len(r.workers) < wanted and len(alive) < wanted:
            w = self._start_worker(role)
            r.workers.append(w)
            alive.append(w)

    def _start_worker(self, role: str) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        from .ipc.worker import worker_main

        proc = self._ctx.Process(
            target=worker_main,
            args=(child_conn, role, self.options.level(), self.options.log_file, self.options.worker_threads),
            name=f"soma-shm-{role}",
            daemon=True,
        )
        started = time.perf_counter()
        proc.start()
        child_conn.close()
        r = self._roles[role]
        r.started += 1
        respawn = r.started > (2 if self.options.spares else 1)
        if respawn:
            r.stats["respawns"] += 1
        log.debug("%s role=%s pid=%d method=%s", "respawn" if respawn else "spawn", role, proc.pid,
                  self.options.method)
        return _Worker(role, proc, parent_conn, started)

    def _kill(self, w: _Worker) -> None:
        """Terminate and reap a worker (SIGTERM, then SIGKILL if it lingers)."""
        w.terminating = True
        if w.proc.is_alive():
            w.proc.terminate()
            w.proc.join(timeout=2.0)
            if w.proc.is_alive():  # pragma: no cover - SIGTERM has no handler in workers
                w.proc.kill()
                w.proc.join(timeout=2.0)
        else:
            w.proc.join(timeout=0.1)
        try:
            w.conn.close()
        except OSError:
            pass

    def _terminate_current(self, r: _RoleState, exc: BaseException) -> None:
        """Cancel the computing request by terminating its worker.

        The caller learns at once; the process is signalled but not waited for (the next
        request goes to the idle spare meanwhile). The supervisor reaps it when its sentinel
        fires, and only then frees its slot with a new generation (see :meth:`_on_death`), so
        nothing it half-wrote can be shown. No new worker starts for the role before that.
        """
        req = r.current
        if req is None:
            return
        w = req.worker
        r.current = None
        if w is not None:
            log.info("terminate role=%s request=%d pid=%s", r.name, req.id, w.pid)
            w.request = None
            w.terminating = True
            w.dying_request = req
            if w.proc.is_alive():
                w.proc.terminate()
        else:
            self._free_slot(r, req, bump=True)
        self._fail(req, exc)

    def _on_death(self, r: _RoleState, w: _Worker) -> None:
        if w not in r.workers:
            return
        w.proc.join(timeout=1.0)
        code = w.proc.exitcode
        r.workers.remove(w)
        try:
            w.conn.close()
        except OSError:
            pass
        req = w.request
        if w.terminating:
            if w.dying_request is not None:
                # Confirmed dead: its slot gets a new generation before anyone reuses it.
                self._free_slot(r, w.dying_request, bump=True)
                w.dying_request = None
                log.debug("reaped role=%s pid=%s exitcode=%s", r.name, w.pid, code)
            if not self._closed:
                self._ensure_workers(r.name)
            return
        if not w.ready:
            r.startup_failures += 1
        r.stats["crashes"] += 1
        log.warning("crash role=%s pid=%s exitcode=%s request=%s", r.name, w.pid, code, req.id if req else None)
        if req is not None:
            r.current = None
            self._free_slot(r, req, bump=True)
            self._fail(req, WorkerCrashed(
                f"the {r.name} worker (pid {w.pid}) died with exit code {code} while computing request {req.id}; "
                "it is restarted automatically", code))
        if not self._closed:
            self._ensure_workers(r.name)

    def _stop_worker(self, w: _Worker) -> None:
        w.terminating = True
        try:
            w.conn.send_bytes(pickle.dumps(("stop",)))
        except (OSError, ValueError):
            pass
        w.proc.join(timeout=1.0)
        if w.proc.is_alive():
            w.proc.terminate()
            w.proc.join(timeout=2.0)
        if w.proc.is_alive():  # pragma: no cover
            w.proc.kill()
            w.proc.join(timeout=2.0)
        try:
            w.conn.close()
        except OSError:
            pass

    def _cancel_role(self, name: str, why: str, terminate: bool = True) -> int:
        r = self._roles[name]
        n = 0
        for req in list(r.queue):
            r.queue.remove(req)
            self._fail(req, RequestCancelled(f"{name} request {req.id} cancelled: {why}"))
            n += 1
        for cmd in list(self._commands):
            if cmd[0] == "submit" and cmd[1].role == name:
                self._commands.remove(cmd)
                self._fail(cmd[1], RequestCancelled(f"{name} request {cmd[1].id} cancelled: {why}"))
                n += 1
        if r.current is not None:
            if terminate:
                self._terminate_current(r, RequestCancelled(f"{name} request {r.current.id} cancelled: {why}"))
            else:
                req = r.current
                r.current = None
                self._fail(req, RequestCancelled(f"{name} request {req.id} cancelled: {why}"))
            n += 1
        r.stats["cancels"] += n
        return n

    def _cancel_all(self, why: str) -> None:
        for name in ROLES:
            self._cancel_role(name, why)

    def _release_blocks(self) -> None:
        for r in self._roles.values():
            try:
                r.ring.close()
            except Exception:
                pass
            try:
                r.ring.unlink()
            except Exception:
                pass
        self._audio = self._pyramid = None
        for name in ("_pyramid_block", "_audio_block"):
            block = getattr(self, name)
            if block is not None:
                try:
                    block.close()
                finally:
                    block.unlink()
                setattr(self, name, None)
