"""The Engine: one open file in shared memory, persistent workers, terminate-and-respawn.

A facade (``docs/design.md``, "Processes and roles"): it owns the open file's blocks, makes the
overview in-process, validates requests in the caller's thread (:mod:`soma_shm._requests`) and hands them to the
:class:`soma_shm.ipc.supervisor.Supervisor`, whose thread alone owns workers, queues, slots and
deadlines of the roles in :data:`soma_shm.ipc.protocol.ROLES`.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import threading
import time
import weakref
from typing import Any, Callable, Literal

import numpy as np

from . import _requests, _validate
from .errors import EngineClosed, ParameterError
from .ipc import _log
from .options import EngineOptions
from .results import FileInfo, ImageResult, RequestHandle, SnapResult, ViewportResult
from .settings import AnalysisSettings

__all__ = ["Engine", "EngineOptions", "FileInfo", "ImageResult", "ViewportResult", "SnapResult", "RequestHandle"]

log = logging.getLogger("soma_shm.engine")

Role = Literal["viewport", "snap", "synth"]

_ENGINES: "weakref.WeakSet[Engine]" = weakref.WeakSet()


class Engine:
    """Shared audio, persistent workers, latest-wins viewports and queued snaps.

    Parameters
    ----------
    settings : AnalysisSettings, optional
        Analysis settings for every request (change with :meth:`set_settings`).
    options : EngineOptions, optional
        Process options; keyword arguments override single fields
        (``Engine(spares=False, timeout=30)``).

    Notes
    -----
    Close it (or use it as a context manager); an engine dropped without :meth:`close` is closed
    when it is garbage collected, and at the latest when the interpreter exits. Its workers never
    import the caller's main module, so scripts need no ``if __name__ == "__main__":`` guard
    and work when piped to ``python -``.

    Examples
    --------
    >>> import numpy as np, soma_shm
    >>> fs = 48000
    >>> x = np.sin(2 * np.pi * 440 * np.arange(5 * fs) / fs).astype(np.float32)
    >>> with soma_shm.Engine() as engine:                      # doctest: +SKIP
    ...     info = engine.open(x, sample_rate=fs)
    ...     overview = engine.overview(1024, 256)
    ...     picture = engine.submit_viewport(1.0, 2.0, 50, 5000, 800, 300).result().image
    """

    def __init__(self, settings: AnalysisSettings | None = None, options: EngineOptions | None = None, **overrides):
        if options is None:
            options = EngineOptions(**overrides)
        elif overrides:
            from dataclasses import replace

            options = replace(options, **overrides)
        if mp.current_process().name.startswith("soma-shm-"):
            raise EngineClosed("an Engine cannot be created inside a soma_shm worker process")
        self.options = options
        self.settings = _validate.settings_or_default(settings)
        _log.configure(options.level(), options.log_file)
        from .ipc.shm import sweep_orphans
        from .ipc.supervisor import Supervisor

        sweep_orphans()
        ctx = mp.get_context(options.method)
        if options.method == "forkserver":
            ctx.set_forkserver_preload(["soma_shm.ipc._preload"])
        self._files: dict[str, Any] = {}  # "open": the open file's blocks (shared with the finalizer)
        self._info: FileInfo | None = None
        self._generation = 0
        # Held by open() while it swaps the file and by every submit while it reads the open file
        # and hands its request over: a request is built and submitted on one file only.
        self._switch = threading.RLock()
        self.amp_reference: float | None = None
        self._sup = Supervisor(options, ctx)
        from ._files import shutdown

        self._finalizer = weakref.finalize(self, shutdown, self._sup, self._files)
        _ENGINES.add(self)
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
        view = self._files["open"].samples.view()
        view.flags.writeable = False
        return view

    def set_settings(self, settings: AnalysisSettings) -> None:
        """Use ``settings`` for requests submitted from now on."""
        self.settings = _validate.settings_or_default(settings)

    def open(self, source: Any, sample_rate: float | None = None,
             progress: Callable[[str, float], None] | None = None) -> FileInfo:
        """Open a file (path) or an array; the audio goes into shared memory once.

        Cancels every pending request of every role (RequestCancelled). ``progress(stage,
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
        from ._files import load

        opened = load(source, sample_rate, self.settings, self.options.pyramid, self._generation + 1, progress,
                      lambda build: setattr(self, "_building", build))
        with self._switch:  # no submit between noting the pending requests and the swap
            stale = self._sup.pending_ids()
            old = self._files.get("open")
            self._generation += 1
            self._files["open"] = opened
            self.amp_reference = opened.reference
            self._info = FileInfo(opened.path, opened.frames, opened.sample_rate, opened.channels, self._generation)
        # Outside the lock: cancelling runs the requests' callbacks, which may submit (to the new file).
        self._sup.cancel(ids=stale, why="the file changed")
        if old is not None:
            t = time.perf_counter()
            # Workers still mapping it keep their mapping; the names go now, the memory is
            # unmapped in a thread (the new file need not wait for it).
            old.discard(background=True)
            if opened.stages is not None:
                opened.stages["old_file_closed"] = time.perf_counter() - t
        log.info("open %s frames=%d fs=%g generation=%d", opened.path or "<array>", opened.frames,
                 opened.sample_rate, self._generation)
        return self._info

    def partial_overview(self, width: int, height: int, fmin: float = 20.0,
                         fmax: float | None = None) -> ImageResult | None:
        """While :meth:`open` decodes a long 16-bit or lossy file (call it from another thread):
        the overview of the part decoded so far, or None (:func:`soma_shm._files.partial_overview`)."""
        from ._files import partial_overview

        return partial_overview(getattr(self, "_building", None), width, height, fmin, fmax)

    def overview(self, width: int, height: int, fmin: float = 20.0, fmax: float | None = None) -> ImageResult:
        """Pooled STFT image of the whole file, made in this process (GIL released).

        Cut from the file's pyramid when there is one (milliseconds, any width), else computed
        from the audio. Returns an :class:`ImageResult` with the uint8 image tone-mapped against
        the file's ``amp_reference`` and the float32 magnitude.

        ``engine.amp_reference`` (the magnitude shown at 0 dB, also used by viewports so brightness
        never jumps while zooming) is set by :meth:`open` from the whole file, before any request.
        """
        self._check_open()
        opened = self._files["open"]
        return opened.overview(width, height, fmin, fmax, self.settings,
                               _requests.pyramid_for(opened, "stft", math.inf, self.settings, self.options))

    def submit_viewport(self, t0: float, t1: float, fmin: float, fmax: float, width: int, height: int,
                        on_result: Callable[[Any], Any] | None = None, magnitude: bool = False,
                        method: Literal["cwt", "stft"] | None = None) -> RequestHandle:
        """Render a viewport image in the viewport worker; the latest request wins.

        A request still computing when a newer one arrives is cancelled (its handle fails with
        RequestCancelled) by terminating its worker. ``on_result(result_or_exception)`` is called
        when the request ends (see :class:`RequestHandle` for the thread). The result is a
        :class:`ViewportResult` that owns its (read-only) arrays.

        ``magnitude=True`` also returns the float32 magnitude; otherwise ``result.magnitude`` is
        None. ``method`` forces ``"cwt"`` or ``"stft"``; by default windows wider than
        ``stft_above_seconds`` use the STFT.

        Raises
        ------
        ParameterError
            Bad geometry, an image larger than ``max_width`` x ``max_height``, or a request that
            would need more than ``max_request_bytes`` of memory (e.g. a very low ``fmin``).
        EngineClosed
            No file open or the engine closed.
        """
        with self._switch:
            self._check_open()
            params = _requests.viewport(self._files["open"], self.settings, self.options, self.amp_reference,
                                        t0, t1, fmin, fmax, width, height, magnitude, method)
            return self._submit("viewport", params, lambda rid, payload, t: ViewportResult(rid, payload, params, t),
                                on_result)

    def submit_snap(self, trace: Any, on_result: Callable[[Any], Any] | None = None) -> RequestHandle:
        """Snap a drawn trace in the snap worker; requests queue in order.

        The result is a :class:`SnapResult` whose ``points`` are ``(K, 3)`` (time, frequency,
        amplitude). Past ``snap_queue`` waiting requests the oldest waiting one fails with
        QueueFull.
        """
        with self._switch:
            self._check_open()
            params = _requests.snap(self._files["open"], self.settings, self.options, trace)
            return self._submit("snap", params, lambda rid, payload, t: SnapResult(rid, payload, params["trace"], t),
                                on_result)

    def mix(self):
        """The open file's resynthesis mix (:class:`soma_shm.ipc.mix.MixBlock`: float32, zeros at
        first), made on first use and unlinked with the file; :meth:`submit_synth` changes it."""
        with self._switch:
            self._check_open()
            return self._files["open"].mix(self._generation)

    def submit_synth(self, add: Any = (), remove: Any = (), rebuild: bool = False, fade_ms: float = 5.0,
                     on_result: Callable[[Any], Any] | None = None) -> RequestHandle:
        """Subtract the partials ``remove`` from the mix (exactly what adding them put there) and
        add ``add`` (``rebuild``: zero it first), in the synth worker; requests queue in order.
        See :func:`soma_shm.synth.synth_request` for the arguments and the result."""
        from .synth import synth_request

        with self._switch:
            self._check_open()
            params, counts = synth_request(self._info.sample_rate, add, remove, rebuild, fade_ms)
            params["mix"] = self.mix().desc()
            return self._submit("synth", params, lambda rid, payload, t: {**counts, "timings": t}, on_result)

    def cancel(self, role: Role | None = None) -> int:
        """Cancel pending and computing requests of one role (or all); returns how many."""
        if role is not None and role not in self._sup.roles:
            raise ParameterError(f"role={role!r} must be one of {', '.join(map(repr, self._sup.roles))} or None")
        return self._sup.cancel(role=role)

    def stats(self) -> dict:
        """Counters per role: requests, done, errors, cancels, respawns, retries, timeouts,
        crashes, dropped, bytes/messages over the pipes, worker pids (``workers``; ``busy_pid``
        and ``idle_pids``), startup latencies, and the slots (``total``, ``computing``,
        ``capacity_bytes``); ``pyramid``: the open file's pyramid (``bytes``, ``levels``,
        ``build_s``) or None; ``open``: seconds per stage of the last open
        (:func:`soma_shm._files.load`). A snapshot: never waits for the workers."""
        out: dict[str, Any] = self._sup.stats()
        out["start_method"] = self.options.method
        out["generation"] = self._generation
        opened = self._files.get("open")
        out["pyramid"] = None if opened is None else opened.pyramid_stats()
        out["open"] = None if opened is None else opened.stages
        return out

    def worker_pids(self, role: Role | None = None) -> list[int]:
        """Live worker process ids (of one role, or all)."""
        return self._sup.worker_pids(role)

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Block until every role has its ready workers (useful before measuring latency)."""
        return self._sup.wait_ready(timeout)

    def close(self) -> None:
        """Cancel everything, stop the workers, unlink every shared block. Safe to call twice."""
        self._finalizer()
        self._info = None
        _ENGINES.discard(self)

    @property
    def _closed(self) -> bool:
        return self._sup.closed

    # ----------------------------------------------------------------------- submission
    def _check_alive(self) -> None:
        if self._sup.closed:
            raise EngineClosed("the engine is closed; create a new Engine")

    def _check_open(self) -> None:
        self._check_alive()
        if self._info is None:
            raise EngineClosed("no file is open; call engine.open(path_or_array) first")

    def _submit(self, role: str, params: Any, make_result: Callable | None, on_result=None,
                task: str | None = None) -> RequestHandle:
        """Hand a request for ``role`` to the supervisor; ``task`` overrides the role's task
        (``"module:function"``, e.g. the test tasks of ``tests/worker_tasks.py``)."""
        with self._switch:
            self._check_alive()
            opened = self._files.get("open")
            return self._sup.request(role, params, make_result, on_result,
                                     None if opened is None else opened.audio_block.desc(), task)
