"""The app's backend: one Engine, one SomaDocument, events out, image blobs kept for the page.

Everything the page can ask for is a method listed in :data:`API_METHODS`; the HTTP server maps
``POST /api/<method>`` with a JSON object body to ``AppBackend.<method>(**body)``. Results of
long work (opening a file, viewport images, snapped partials) are not returned by the call that
starts them: they are *pushed* as events to every subscriber (the server's SSE streams, or the
pywebview window's ``evaluate_js`` pusher). Images travel as binary blobs (raw uint8 rows) that
the page fetches by id; events only carry their id and geometry.

Events (``{"type": ..., ...}``):

``progress``  {stage: "kernels"|"decode"|"overview", fraction}   ("kernels": first run only,
              with ``label`` and ``message``; the compiled kernels are cached for later runs)
``partial_overview`` {overview, fraction}  while a long 16-bit or lossy file decodes: the overview
              of what is there so far (the rest silent), about every PARTIAL_EVERY_S
``opened``    {file, overview, document}    a file is open and its overview blob is ready
``overview``  {overview}                    the overview blob changed (new dB range / gamma)
``viewport``  {blob, request_id, t0, t1, fmin, fmax, width, height, method, timings}
``document``  {document}                    a whole new document (open, load): partials without
                                            points, plus ``points_blob``, the id of one float32
                                            ``(sum n, 3)`` blob of all their points in order
``edit``      {label, added, changed, removed, history, settings?}
                                            one edit, undo or redo: the partials added and changed
                                            (with points), the ids removed, the history flags and,
                                            when they changed, the settings
``snapped``   {request_id, partial_id, timings}   after the edit event that added the partial
``status``    {status}                      worker state and last timings
``error``     {op, error: {type, message}, request_id?}
"""

from __future__ import annotations

import inspect
import itertools
import logging
import math
import os
import queue
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import EngineClosed, ParameterError, RequestCancelled, SomaError
from ..settings import AnalysisSettings
from .document import SomaDocument
from .persistence import (Autosaver, RecentProjects, Recovery, bundle_audio, ensure_soma_suffix, locate_audio,
                          read_project)

__all__ = ["AppBackend", "EventBus", "API_METHODS", "error_payload"]

log = logging.getLogger("soma_shm.app")

API_METHODS = (
    "state",
    "open_file",
    "open_demo",
    "view",
    "snap",
    "delete_partials",
    "update_partial",
    "set_muted",
    "merge_partials",
    "crop_partial",
    "extend_partial",
    "erase",
    "undo",
    "redo",
    "set_settings",
    "save_project",
    "load_project",
    "recent_projects",
    "recovery_offers",
    "restore_recovery",
    "discard_recovery",
    "export",
    "export_as",
    "status",
    "dialog",
)

OVERVIEW_WIDTH = 2048
OVERVIEW_HEIGHT = 384
PROGRESS_STEP = 0.1  # a progress event at least every tenth of a stage
PARTIAL_EVERY_S = 0.3  # while a long file decodes, its partial overview this often
OVERVIEW_FMIN = 20.0
BLOBS_KEPT = 6
SUPERSEDE_COST_S = 0.12  # a viewport computation expected to end within this is not cancelled
COST_SAMPLES = 12  # recent results per method that predict how long a request takes


def error_payload(exc: BaseException, hide: str | None = None) -> dict[str, str]:
    """``{type, message}`` of an error, phrased for a person: the family's own errors keep their
    type and message; anything else becomes ``InternalError`` with a message that names no
    exception class. Paths inside ``hide`` (the app's temporary folder) show only their name."""
    if isinstance(exc, SomaError):
        kind, message = type(exc).__name__, str(exc)
    elif isinstance(exc, MemoryError):
        kind, message = "InternalError", "not enough memory for this; close other programs or use a shorter window"
    elif isinstance(exc, OSError) and exc.strerror:
        where = f" ({Path(exc.filename).name})" if isinstance(exc.filename, str) else ""
        kind, message = "InternalError", f"the system refused: {exc.strerror.lower()}{where}"
    else:
        kind, message = "InternalError", "something went wrong inside the app; the details are in its log"
    if hide:
        message = re.sub(re.escape(hide.rstrip("/")) + r"/(?:[^/'\"]+/)*", "", message)
    return {"type": kind, "message": message}


class EventBus:
    """Fan-out of events to subscribers: SSE queues and plain callbacks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: list[queue.Queue] = []
        self._listeners: list[Callable[[dict], None]] = []

    def subscribe(self) -> queue.Queue:
        q: queue.Queue = queue.Queue(maxsize=1000)
        with self._lock:
            self._queues.append(q)
        return q

    def unsubscribe(self, q: queue.Queue) -> None:
        with self._lock:
            if q in self._queues:
                self._queues.remove(q)

    def listen(self, fn: Callable[[dict], None]) -> None:
        with self._lock:
            self._listeners.append(fn)

    def publish(self, event: dict | None) -> None:
        with self._lock:
            queues, listeners = list(self._queues), list(self._listeners)
        if event is None:  # the server is stopping: wake every stream, tell no listener
            listeners = []
        for q in queues:
            try:
                q.put_nowait(event)
            except queue.Full:  # a stalled client: drop its oldest event rather than block
                try:
                    q.get_nowait()
                    q.put_nowait(event)
                except (queue.Empty, queue.Full):
                    pass
        for fn in listeners:
            try:
                fn(event)
            except Exception:  # pragma: no cover - a listener must not break publishing
                log.exception("event listener failed")

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._queues) + len(self._listeners)


class BlobStore:
    """The last few images, by id: raw uint8 bytes plus width and height."""

    def __init__(self, keep: int = BLOBS_KEPT) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._blobs: OrderedDict[int, tuple[bytes, int, int]] = OrderedDict()
        self._pins: dict[str, int] = {}  # slot -> the blob kept for it (the overview, the document)
        self._keep = keep

    def put(self, image: np.ndarray, pin: bool | str = False) -> int:
        """Keep ``image`` (2-D uint8); ``pin`` (True: the overview, or a slot name) keeps it until
        the next one of the same slot, whatever the number of other images."""
        h, w = image.shape
        data = np.ascontiguousarray(image, dtype=np.uint8).tobytes()
        with self._lock:
            bid = next(self._ids)
            self._blobs[bid] = (data, w, h)
            if pin:  # the slot's previous blob is no longer pinned: evicted later like a new one
                old = self._pins.get("overview" if pin is True else pin)
                self._pins["overview" if pin is True else pin] = bid
                if old in self._blobs:
                    self._blobs.move_to_end(old)
                    self._blobs.move_to_end(bid)
            pinned = set(self._pins.values())
            while len(self._blobs) > self._keep + len(pinned):
                for old in self._blobs:
                    if old not in pinned:
                        del self._blobs[old]
                        break
                else:  # pragma: no cover
                    break
            return bid

    def get(self, bid: int) -> tuple[bytes, int, int] | None:
        with self._lock:
            return self._blobs.get(bid)


class AppBackend:
    """The app's state and operations, shared by the browser mode and the pywebview window.

    Parameters
    ----------
    engine_options : dict, optional
        Keyword overrides for :class:`soma_shm.EngineOptions` (e.g. ``{"spares": False}``).
    settings : AnalysisSettings, optional
        Initial analysis settings.
    """

    def __init__(self, engine_options: dict | None = None, settings: AnalysisSettings | None = None,
                 autosave: bool = True) -> None:
        from ..engine import Engine

        self.events = EventBus()
        self.blobs = BlobStore()
        self.engine = Engine(settings=settings, **(engine_options or {}))
        self.document = SomaDocument(settings=self.engine.settings)
        self.dialogs: Any = None  # set by the window: native open/save dialogs
        self._lock = threading.RLock()
        self._overview: dict | None = None
        self._overview_mag: np.ndarray | None = None
        self._file: dict | None = None
        self._loading: threading.Thread | None = None  # set while a file is being opened
        self._load_thread: threading.Thread | None = None
        self._load_token = 0
        self._last: dict[str, Any] = {"viewport": None, "snap": None, "overview": None}
        self._pending_snaps: set[int] = set()
        self._points_blob: tuple | None = None  # ((document id, revision), blob id) of the last snapshot
        self._views = _ViewScheduler(self)
        self._last_error: dict | None = None  # the last failed open, for a page that connects later
        self._pending_document: tuple[str, Any, bool] | None = None  # (audio, ProjectFile, recovered)
        self._tmp = tempfile.mkdtemp(prefix="soma_shm_app_")
        self._closed = False
        self.recent = RecentProjects()
        self.recovery = Recovery(temporary=self._tmp)
        self.autosaver: Autosaver | None = None
        if autosave:
            self.autosaver = Autosaver(self._unsaved_snapshot, self.recovery.write)
            self.events.listen(self._autosave_poke)
        # Compile the kernels if this is the first run (progress events, stage "kernels"), then
        # load the overview kernels so the first file opened shows sooner.
        self._kernels: dict | None = None  # {fraction, message} while the kernels are prepared
        self._warm_thread = threading.Thread(target=self._prepare_kernels, name="soma-app-warm", daemon=True)
        self._warm_thread.start()
        from .playback import Playback

        self.playback = Playback(self)  # audio chunks for the page; keeps the resynthesis current

    # ------------------------------------------------------------------------ lifecycle
    def close(self, keep_recovery: bool = True) -> None:
        """Stop the engine (workers, shared memory) and remove uploaded files. Safe twice.

        Unsaved edits are written to the recovery file first (offered at the next start) unless
        ``keep_recovery`` is False (the user chose to discard them).
        """
        if self._closed:
            return
        self._closed = True
        if self.autosaver is not None:
            self.autosaver.stop()
            if keep_recovery:
                self.autosaver.flush()
        if not keep_recovery or not self.document.dirty:
            self.recovery.discard()
        for t in (self._load_thread, self._warm_thread):
            if t is not None and t.is_alive():
                t.join(timeout=30)
        self._views.stop()
        self.playback.stop()
        self.engine.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "AppBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def call(self, method: str, params: dict | None) -> Any:
        """Run API method ``method`` with keyword ``params`` (as the server does).

        Parameters are matched against the method's signature first, so a missing, unknown or
        misspelt one is a ParameterError naming what the method takes.
        """
        if not isinstance(method, str) or method not in API_METHODS:
            shown = method if isinstance(method, str) and len(method) <= 60 and method.isprintable() else "that"
            raise ParameterError(f"unknown API method {shown!r}; known: {', '.join(API_METHODS)}")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ParameterError(f"the body of {method} must be a JSON object, got {_json_kind(params)}")
        fn = getattr(self, method)
        sig = inspect.signature(fn)
        try:
            sig.bind(**params)
        except TypeError:
            takes = [n for n, p in sig.parameters.items() if p.kind is not p.VAR_KEYWORD]
            needed = [n for n, p in sig.parameters.items()
                      if p.default is p.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
            missing = [n for n in needed if n not in params]
            unknown = [k for k in params if k not in sig.parameters] if all(
                p.kind is not p.VAR_KEYWORD for p in sig.parameters.values()) else []
            parts = []
            if missing:
                parts.append(f"needs {', '.join(missing)}")
            if unknown:
                parts.append(f"does not take {', '.join(repr(u[:40]) for u in unknown)}")
            raise ParameterError(f"{method} {' and '.join(parts) or 'was called wrongly'}; "
                                 f"it takes: {', '.join(takes) or 'nothing'}") from None
        return fn(**params)

    def describe_error(self, exc: BaseException, method: str | None = None) -> dict[str, str]:
        """:func:`error_payload` with this app's temporary folder hidden."""
        if not isinstance(exc, SomaError):
            log.error("api %s failed", method, exc_info=exc)
        return error_payload(exc, hide=self._tmp)

    # ----------------------------------------------------------------------------- state
    def state(self) -> dict:
        """Everything the page needs to draw from scratch."""
        with self._lock:
            return {
                "file": self._file,
                "overview": self._overview,
                "document": self._document_snapshot(),
                "status": self.status(),
                "loading": self._loading is not None and self._loading.is_alive(),
                "window": self.dialogs is not None,
                "last_error": self._last_error,
                "recovery_offers": self.recovery.count(),
                "kernels": self._kernels,
            }

    def status(self) -> dict:
        """Worker state and last timings."""
        s = self.engine.stats()
        out = {"start_method": s["start_method"]}
        for role in ("viewport", "snap"):
            r = s[role]
            out[role] = {
                "busy": r["busy"],
                "queued": r["queued"],
                "workers": len(r["workers"]),
                "done": r["done"],
                "cancels": r["cancels"],
                "crashes": r["crashes"],
                "respawns": r["respawns"],
                "last": self._last[role],
            }
        out["overview"] = self._last["overview"]
        return out

    def _publish_status(self) -> None:
        self.events.publish({"type": "status", "status": self.status()})

    def _prepare_kernels(self) -> None:
        """First run only: compile the kernels (or wait for the process that does), telling the
        page; then load the overview's kernels."""
        from ..kernel_cache import ensure_kernels
        from ..warmup import LABEL

        last = [0.0]

        def progress(fraction: float, message: str) -> None:
            now = time.perf_counter()
            if fraction < 1.0 and now - last[0] < 0.25:
                return
            last[0] = now
            self._kernels = {"fraction": float(fraction), "message": message}
            self.events.publish({"type": "progress", "stage": "kernels", "fraction": float(fraction),
                                 "label": LABEL, "message": message})

        try:
            if ensure_kernels(progress):
                progress(1.0, "ready")
        except Exception:  # pragma: no cover - the first request then compiles and reports errors
            log.exception("preparing the kernels failed")
        finally:
            self._kernels = None
        _warm_overview()

    # ------------------------------------------------------------------------------ open
    def open_file(self, path: str) -> dict:
        """Start opening an audio file in the background; progress and the result are pushed.

        The current file and document stay as they are until the new file decoded: a file that
        cannot be read leaves everything intact (an ``error`` event says why).
        """
        p = Path(_path_param("path", path, "an audio file")).expanduser()
        if not p.is_file():
            raise ParameterError(f"audio file {str(p)!r} does not exist")
        return self._start_loading(str(p.resolve()), None, None)

    def open_demo(self, seconds: float = 12.0) -> dict:
        """Open the built-in demo recording (in memory)."""
        from ..demo_audio import demo_recording

        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 1.0 <= seconds <= 600.0:
            raise ParameterError(f"seconds={seconds!r} must be a number of seconds between 1 and 600")
        import soundfile as sf

        fs = 48_000
        # On disk (in the session's temporary folder) like an upload: a saved project copies it.
        target = Path(tempfile.mkdtemp(dir=self._tmp)) / "demo recording.wav"
        sf.write(target, demo_recording(float(seconds), fs), fs, subtype="FLOAT")
        return self._start_loading(str(target), None, None)

    def save_upload(self, name: str, stream: Any, length: int, chunk: int = 1 << 20) -> str:
        """Keep an uploaded (dropped or picked) file for this session, streamed to disk in chunks;
        returns its path."""
        safe = "".join(c for c in Path(name or "upload").name if c.isalnum() or c in "._- ")[:120] or "upload"
        if length <= 0:
            raise ParameterError(f"the file {safe!r} is empty (0 bytes); nothing to open")
        folder = tempfile.mkdtemp(dir=self._tmp)
        target = Path(folder) / safe
        left = length
        with open(target, "wb") as f:
            while left > 0:
                block = stream.read(min(chunk, left))
                if not block:
                    raise ParameterError(f"the upload of {safe!r} stopped after {length - left} of {length} bytes")
                f.write(block)
                left -= len(block)
        return str(target)

    def _start_loading(self, path: str | None, array: np.ndarray | None, fs: float | None) -> dict:
        with self._lock:
            if self._closed:
                raise EngineClosed("the app is closing")
            if self._loading is not None and self._loading.is_alive():
                raise ParameterError("a file is already being opened; wait for it to finish")
            self._load_token += 1
            token = self._load_token
            t = threading.Thread(target=self._load, args=(token, path, array, fs), name="soma-app-open", daemon=True)
            self._loading = t
            self._load_thread = t
        self.events.publish({"type": "progress", "stage": "decode", "fraction": 0.0, "path": path})
        t.start()
        return {"loading": True, "path": path}

    def _load(self, token: int, path: str | None, array: np.ndarray | None, fs: float | None) -> None:
        t_start = time.perf_counter()
        last = {"time": 0.0, "stage": "", "fraction": 0.0}

        partial = {"time": 0.0, "busy": False}

        def show_partial() -> None:
            # A long 16-bit or lossy file: the overview of what is decoded so far.
            try:
                res = self.engine.partial_overview(OVERVIEW_WIDTH, OVERVIEW_HEIGHT, OVERVIEW_FMIN)
                if res is not None and token == self._load_token:
                    bid = self.blobs.put(res.image)
                    h, w = res.image.shape
                    self.events.publish({"type": "partial_overview", "fraction": res.timings["fraction"],
                                         "overview": {"blob": bid, "width": w, "height": h, "t0": res.t0,
                                                      "t1": res.t1, "fmin": res.fmin, "fmax": res.fmax}})
            except Exception:  # pragma: no cover - a preview; the open itself reports errors
                log.debug("partial overview failed", exc_info=True)
            finally:
                partial["busy"] = False

        def progress(stage: str, fraction: float) -> None:
            # At most one event per 50 ms, but always the ends of a stage and every step of at
            # least PROGRESS_STEP, so a fast stage still shows its steps and a slow one is smooth.
            # The engine's "pyramid" stage is what the page shows as the overview being made.
            stage = "overview" if stage == "pyramid" else stage
            now = time.perf_counter()
            if stage == "decode" and fraction < 1.0 and not partial["busy"] and now - partial["time"] >= PARTIAL_EVERY_S:
                # Off the decoding thread that reports: cutting the image takes tens of ms.
                partial.update(time=now, busy=True)
                threading.Thread(target=show_partial, name="soma-app-partial", daemon=True).start()
            if (stage != last["stage"] or fraction >= 1.0 or now - last["time"] > 0.05
                    or fraction - last["fraction"] >= PROGRESS_STEP):
                last.update(time=now, stage=stage, fraction=fraction)
                self.events.publish({"type": "progress", "stage": stage, "fraction": float(fraction)})

        pending = self._pending_document if self._pending_document and self._pending_document[0] == path else None
        prev_settings, prev_file = self.engine.settings, self._file
        switched = False
        try:
            # Everything that can fail on the new file alone comes before the engine switches.
            md5 = None
            if path is not None:
                from .document import file_md5

                md5 = file_md5(path)
            if pending is not None:  # the project's settings shape the file's pyramid
                self.engine.set_settings(pending[1].document.settings)
            if path is not None:
                info = self.engine.open(path, progress=progress)
            else:
                info = self.engine.open(array, sample_rate=fs, progress=progress)
            switched = True
            t_decode = time.perf_counter() - t_start
            overview = self._render_overview()
        except BaseException as exc:  # the previous file (if any) stays open and the document intact
            self._restore_after_failed_open(switched, prev_settings, prev_file)
            with self._lock:
                self._loading = None
                if pending is not None and self._pending_document is pending:
                    self._pending_document = None
            self._last_error = {"op": "open", "error": self.describe_error(exc, "open")}
            self.events.publish({"type": "error", **self._last_error})
            if not isinstance(exc, Exception):
                raise
            return
        with self._lock:
            self._file = {
                "path": info.path,
                "name": Path(info.path).name if info.path else "recording",
                "duration": info.duration,
                "sample_rate": info.sample_rate,
                "frames": info.frames,
                "channels": info.channels,
                "generation": info.generation,
                "fmin": OVERVIEW_FMIN,
                "fmax": overview["fmax"],
            }
            if pending is not None and self._pending_document is pending:
                project = pending[1]
                doc = project.document
                if project.amplitudes_need_reference:  # SOMA's 0-1 amplitudes meet their recording
                    doc.scale_amplitudes(self.engine.amp_reference)
                doc.set_recording(info.sample_rate, info.duration, self.engine.amp_reference)
                if doc.source_md5 is None:
                    doc.source_md5 = md5
                self.document = doc
            else:
                self.document = SomaDocument(settings=self.engine.settings)
                self.document.set_source(path, md5)
                self.document.set_recording(info.sample_rate, info.duration, self.engine.amp_reference)
            self._pending_document = None
            self._last_error = None
            self._loading = None  # a new open may start as soon as this one is announced
            self._last["overview"] = {**overview["timings"], "decode_s": t_decode}
            document = self._document_snapshot()
        if pending is not None and self.document.project_path and not pending[2]:
            self.recent.add(self.document.project_path)
        self.events.publish({"type": "opened", "file": self._file, "overview": overview, "document": document})
        self._publish_status()

    def _restore_after_failed_open(self, switched: bool, settings: AnalysisSettings, prev_file: dict | None) -> None:
        """After a failed open: the engine back on the previous settings, and on the previous file
        when it had already switched (or on no file the app shows, if that cannot be reopened), so
        the app and the engine never show different files."""
        self.engine.set_settings(settings)
        if not switched:
            return
        try:
            if prev_file is None or not prev_file.get("path"):
                raise ParameterError("no previous file to reopen")
            info = self.engine.open(prev_file["path"])
            overview = self._render_overview()
        except Exception:
            log.warning("could not reopen %s after a failed open", prev_file and prev_file.get("path"))
            with self._lock:
                self._file = None
                self._overview = self._overview_mag = None
            self.events.publish({"type": "closed", "document": self._document_snapshot()})
            return
        with self._lock:
            self._file = {**prev_file, "generation": info.generation, "fmax": overview["fmax"]}
        self.events.publish({"type": "opened", "file": self._file, "overview": overview,
                             "document": self._document_snapshot()})

    def _render_overview(self) -> dict:
        """The whole-file STFT overview, cut from the file's pyramid (built, with real progress,
        while the engine opened the file)."""
        info = self.engine.info
        fmax = min(0.5 * info.sample_rate, 20_000.0)
        width = int(min(OVERVIEW_WIDTH, max(64, info.frames // 64)))
        res = self.engine.overview(width, OVERVIEW_HEIGHT, OVERVIEW_FMIN, fmax)
        self._overview_mag = res.magnitude
        bid = self.blobs.put(res.image, pin=True)
        ov = {"blob": bid, "t0": 0.0, "t1": info.duration, "fmin": OVERVIEW_FMIN, "fmax": fmax, "width": width,
              "height": OVERVIEW_HEIGHT, "method": "stft", "timings": res.timings}
        self._overview = ov
        return ov

    # ----------------------------------------------------------------------------- views
    def view(self, t0: float, t1: float, fmin: float, fmax: float, width: int, height: int) -> dict:
        """Request a viewport image; the result is pushed as a ``viewport`` event (latest wins).

        Returns ``{"request_id": id}``: the event of this request carries the same id, and ids
        increase with every call. A request does not always reach the engine at once: while the
        computing one is expected to finish within :data:`SUPERSEDE_COST_S`, the newest request
        waits for it (and older waiting ones are dropped) instead of cancelling it, which would
        cost a worker termination and respawn; it starts the moment that computation ends.
        """
        if self._file is None:
            raise EngineClosed("no file is open; open an audio file first")
        from .. import _validate

        info, opts = self.engine.info, self.engine.options
        geometry = _validate.view(t0, t1, fmin, fmax, width, height, info.sample_rate, info.duration,
                                  opts.max_width, opts.max_height)
        return {"request_id": self._views.request(geometry, self._file["generation"])}

    def _on_view(self, result: Any, generation: int, view_id: int, held_s: float = 0.0) -> None:
        # Runs on the engine's supervisor thread: copy the image out, give the slot back, push.
        if isinstance(result, BaseException):
            if isinstance(result, RequestCancelled):
                return
            self.events.publish({"type": "error", "op": "view", "request_id": view_id, "error": self.describe_error(result)})
            self._publish_status()
            return
        try:
            if self._file is None or self._file["generation"] != generation:
                return
            bid = self.blobs.put(result.image)
            h, w = result.image.shape
            timings = {k: float(v) for k, v in result.timings.items() if isinstance(v, (int, float))}
            timings["held_s"] = held_s  # from the page's call to the engine (waiting for a computation to end)
            event = {"type": "viewport", "blob": bid, "request_id": view_id, "t0": result.t0,
                     "t1": result.t1, "fmin": result.fmin, "fmax": result.fmax, "width": w, "height": h,
                     "method": result.method, "timings": timings}
        finally:
            result.release()
        self._last["viewport"] = {"method": result.method, "request_id": view_id,
                                  "window_s": result.t1 - result.t0, **timings}
        self.events.publish(event)
        self._publish_status()

    # ------------------------------------------------------------------------------ snap
    def snap(self, trace: list, _extend: str | None = None) -> dict:
        """Snap a drawn stroke ``[[t, f], ...]``; the partial is added when the result arrives."""
        if self._file is None:
            raise EngineClosed("no file is open; open an audio file before drawing")
        generation = self._file["generation"]
        ids: dict[str, int] = {}

        def done(result: Any) -> None:
            self._on_snap(result, generation, ids.get("id"), _extend)

        # The stroke is of the file the page shows: if the engine is on another one (a file is
        # being opened), it is refused, so a snap of one file never lands in another's document.
        before = self.engine.info.generation if self.engine.info is not None else None
        if before != generation:
            raise EngineClosed("a file is being opened; draw again once it is shown")
        handle = self.engine.submit_snap(trace, on_result=done)
        if self.engine.info is None or self.engine.info.generation != generation:
            handle.cancel()
            raise EngineClosed("a file is being opened; draw again once it is shown")
        ids["id"] = handle.request_id
        self._pending_snaps.add(handle.request_id)
        self._publish_status()
        return {"request_id": handle.request_id}

    def _on_snap(self, result: Any, generation: int, rid: int | None, extend: str | None = None) -> None:
        if isinstance(result, BaseException):
            self._pending_snaps.discard(rid)
            if isinstance(result, RequestCancelled) and (self._file is None or self._file["generation"] != generation):
                return  # the file changed: the stroke belonged to the old file
            self.events.publish({"type": "error", "op": "snap", "request_id": rid, "error": self.describe_error(result)})
            self._publish_status()
            return
        rid = result.request_id
        self._pending_snaps.discard(rid)
        points = result.points
        timings = {k: float(v) for k, v in result.timings.items() if isinstance(v, (int, float))}
        if self._file is None or self._file["generation"] != generation:
            return
        with self._lock:
            if points.shape[0] < 1:
                self.events.publish({"type": "error", "op": "snap", "request_id": rid, "error": {
                    "type": "ParameterError", "message": "the stroke found no ridge to snap to; draw over a visible partial"}})
                return
            try:
                if extend is None:
                    partial = self.document.add_partial(points)
                else:
                    partial = self.document.extend_partial(extend, points)
            except ParameterError as exc:  # the partial went meanwhile, or nothing lies beyond its end
                self.events.publish({"type": "error", "op": "snap", "request_id": rid, "error": error_payload(exc)})
                return
            self._last["snap"] = {"request_id": rid, "points": int(points.shape[0]), **timings}
            event = self._edit_event(self._last_edit())
        # The partial first, then the answer to the stroke: the page drops the stroke's dashed line
        # only once the partial is there.
        self.events.publish(event)
        self.events.publish({"type": "snapped", "request_id": rid, "partial_id": partial.id, "timings": timings})
        self._publish_status()

    # --------------------------------------------------------------------------- editing
    def _document_snapshot(self) -> dict:
        """The whole document for the page (open, load, a page connecting): partials without their
        points plus ``points_blob``, the id of one float32 blob of all points in order."""
        doc = self.document.state()
        key = (id(self.document), self.document.revision)
        cached = self._points_blob
        if cached is not None and cached[0] == key and self.blobs.get(cached[1]) is not None:
            doc["points_blob"] = cached[1]
            return doc
        block = self.document.points_block()
        doc["points_blob"] = self.blobs.put(block.view(np.uint8).reshape(1, -1) if block.size
                                            else np.zeros((1, 0), np.uint8), pin="document")
        self._points_blob = (key, doc["points_blob"])
        return doc

    def _edit_event(self, edit: Any) -> dict:
        """The ``edit`` event of one applied edit (or inverse): only what it touched."""
        delta = edit.delta()
        event = {"type": "edit", "label": edit.label,
                 "added": [p.to_dict() for p in delta["added"]],
                 "changed": [p.to_dict() for p in delta["changed"]],
                 "removed": delta["removed"], "history": self.document.history()}
        if edit.settings is not None:
            event["settings"] = self.document.settings.to_dict()
        return event

    def _edited(self, edit: Any) -> dict:
        """Publish one edit and return its summary: ids added / changed / removed, history."""
        if edit is None:  # nothing to undo / redo: a no-op, the page learns the flags
            self.events.publish({"type": "edit", "label": None, "added": [], "changed": [], "removed": [],
                                 "history": self.document.history()})
            return {"label": None, "added": [], "changed": [], "removed": [], "history": self.document.history()}
        if edit.settings is not None:
            self._apply_settings(self.document.settings)
        event = self._edit_event(edit)
        self.events.publish(event)
        return {"label": edit.label, "added": [p["id"] for p in event["added"]],
                "changed": [p["id"] for p in event["changed"]], "removed": event["removed"],
                "history": event["history"]}

    def _last_edit(self) -> Any:
        return self.document._undo[-1]

    def delete_partials(self, ids: list) -> dict:
        """Delete partials by id (undoable)."""
        _ids(ids)
        with self._lock:
            self.document.delete_partials(ids)
            return self._edited(self._last_edit())

    def update_partial(self, id: str, color: str | None = None, is_muted: bool | None = None) -> dict:
        """Recolour or (un)mute a partial (undoable)."""
        with self._lock:
            self.document.update_partial(id, color=color, is_muted=is_muted)
            return self._edited(self._last_edit())

    def set_muted(self, ids: list, is_muted: bool) -> dict:
        """Mute or unmute several partials (one undoable edit)."""
        _ids(ids)
        with self._lock:
            if self.document.set_muted(ids, is_muted) == 0:
                return {"label": None, "added": [], "changed": [], "removed": [], "history": self.document.history()}
            return self._edited(self._last_edit())

    def merge_partials(self, ids: list) -> dict:
        """Connect two or more partials into one, bridging the gaps (undoable)."""
        _ids(ids)
        with self._lock:
            self.document.merge_partials(ids)
            return self._edited(self._last_edit())

    def crop_partial(self, id: str, t0: float, t1: float) -> dict:
        """Keep only the points of partial ``id`` between ``t0`` and ``t1`` seconds (undoable)."""
        with self._lock:
            self.document.crop_partial(id, t0, t1)
            return self._edited(self._last_edit())

    def extend_partial(self, id: str, trace: list) -> dict:
        """Extend partial ``id`` along a stroke ``[[t, f], ...]`` drawn from one of its ends: the
        stroke is snapped like a pencil stroke and the snapped points beyond the end are joined
        (undoable) when the result arrives (``snapped`` + ``edit`` events)."""
        with self._lock:
            self.document.partial(id)
        return self.snap(trace, _extend=id)

    def erase(self, trace: list, radius_t: float, radius_octaves: float) -> dict:
        """Erase the points under a stroke ``[[t, f], ...]`` (within ``radius_t`` s and
        ``radius_octaves`` of it); partials cut in the middle are split (undoable)."""
        with self._lock:
            self.document.erase(trace, radius_t, radius_octaves)
            return self._edited(self._last_edit())

    def undo(self) -> dict:
        """Undo the last edit (a no-op when there is none)."""
        with self._lock:
            return self._edited(self.document.undo())

    def redo(self) -> dict:
        """Redo the last undone edit (a no-op when there is none)."""
        with self._lock:
            return self._edited(self.document.redo())

    # -------------------------------------------------------------------------- settings
    def set_settings(self, **values: Any) -> dict:
        """Change analysis settings (wavelet B/C, bins/octave, dB range, gamma, ...) as an undoable
        edit.

        The overview is re-tone-mapped at once (pushed as ``overview``); the page asks for a new
        viewport. Invalid values raise ParameterError and change nothing.
        """
        with self._lock:
            settings = self.engine.settings.replace(**values)
            if self.document.change_settings(settings):
                self._edited(self._last_edit())
            else:
                self._apply_settings(settings)
        return {"settings": settings.to_dict()}

    def _apply_settings(self, settings: AnalysisSettings) -> None:
        """Use ``settings`` in the engine and re-tone-map the overview (pushed as ``overview``)."""
        self.engine.set_settings(settings)
        if self._overview is None or self._overview_mag is None:
            return
        from ..render import tone_map

        image = tone_map(self._overview_mag, self.engine.amp_reference, settings)
        overview = {**self._overview, "blob": self.blobs.put(image, pin=True)}
        self._overview = overview
        self.events.publish({"type": "overview", "overview": overview})

    # ---------------------------------------------------------------------- save / load
    def save_project(self, path: str, overwrite: bool = False) -> dict:
        """Save the document as a ``.soma`` project (``.soma`` is added when missing).

        An existing file is replaced only with ``overwrite=True``; otherwise the answer is
        ``{"status": "exists", "path": ...}`` and nothing is written (the page asks the user).
        Audio that lives in the app's temporary folder (uploaded, dropped, demo) is copied to
        ``<name>_assets/`` beside the project first and referenced relatively. Answer on success:
        ``{"status": "saved", "path", "document", "copied_audio"}``.
        """
        path = _path_param("path", path, "a .soma file to write")
        if not isinstance(overwrite, bool):
            raise ParameterError(f"overwrite={overwrite!r} must be true or false")
        target = ensure_soma_suffix(path)
        if not target.parent.is_dir():
            raise ParameterError(f"folder {str(target.parent)!r} does not exist; choose an existing folder")
        target = target.parent.resolve() / target.name
        if os.path.lexists(target) and not overwrite:
            return {"status": "exists", "path": str(target)}
        copied = None
        with self._lock:
            doc = self.document
            src = doc.source_path
            if src and _inside(src, self._tmp):
                name = Path(src).name
                copied = bundle_audio(src, target, doc.source_md5, name=name)
            doc.source_path = copied or src
            try:
                saved = doc.save(target, overwrite=True)
            except BaseException:
                doc.source_path = src
                raise
            history = self.document.history()
            self.events.publish({"type": "edit", "label": None, "added": [], "changed": [], "removed": [],
                                 "history": history})
        self.recovery.discard()
        self.recent.add(saved)
        return {"status": "saved", "path": saved, "history": history, "copied_audio": copied}

    def load_project(self, path: str, search_dir: str | None = None) -> dict:
        """Load a ``.soma`` project (SOMA's or ours); its audio is opened when it is not the open file.

        Audio that moved is found again by MD5 beside the project, in its ``<name>_assets/``
        folder or in ``search_dir`` (a :class:`~soma_shm.errors.ProjectAudioMissing` names the
        places looked at otherwise). Nothing changes until the project and its audio are read:
        a failure leaves the document, the open file and the engine's settings as they were.

        Returns ``{document, opening, relinked, source_matches}``: the document's state (the
        page draws it from the ``document`` event, or from ``opened`` when its audio is being
        opened: ``opening`` is then that file), where moved audio was found, and whether the
        open file's MD5 matched the project's (None when unknown).
        """
        path = _path_param("path", path, "a .soma project")
        if search_dir is not None:
            search_dir = _path_param("search_dir", search_dir, "the folder that holds the project's audio")
        project = read_project(os.path.expanduser(path))
        return self._open_project(project, search_dir, recovered=False)

    def _open_project(self, project: Any, search_dir: str | None, recovered: bool) -> dict:
        doc = project.document
        saved_at = doc.source_path
        audio = locate_audio(saved_at, doc.source_md5, doc.project_path if not recovered else None,
                             [search_dir] if search_dir else [], size=doc.source_size)
        relinked = audio != saved_at
        doc.source_path = audio
        if relinked or recovered:
            doc.dirty = True
        with self._lock:
            if self._loading is not None and self._loading.is_alive():
                raise ParameterError("a file is being opened; wait for it to finish")
            current = self._file["path"] if self._file else None
            matches = None  # known once the audio is read (the open file's MD5 is known already)
            if current and os.path.realpath(audio) == os.path.realpath(current):
                open_md5 = self.document.source_md5
                matches = None if not (doc.source_md5 and open_md5) else doc.source_md5 == open_md5
                settings_before = self.engine.settings
                try:
                    self._apply_settings(doc.settings)
                except BaseException:
                    self.engine.set_settings(settings_before)
                    raise
                if project.amplitudes_need_reference:
                    doc.scale_amplitudes(self.engine.amp_reference)
                info = self.engine.info
                doc.set_recording(info.sample_rate, info.duration, self.engine.amp_reference)
                self.document = doc
                state = self._document_snapshot()
                self.events.publish({"type": "document", "document": state})
                opening = None
            else:
                self._pending_document = (os.path.realpath(audio), project, recovered)
                opening = audio
        if opening is not None:
            try:
                self._start_loading(os.path.realpath(audio), None, None)
            except BaseException:
                with self._lock:
                    self._pending_document = None
                raise
            state = doc.state()
        elif doc.project_path and not recovered:
            self.recent.add(doc.project_path)
        return {"document": state, "opening": opening, "relinked": audio if relinked else None,
                "source_matches": matches}

    def recent_projects(self) -> dict:
        """The recently opened or saved projects, newest first: ``{"projects": [{path, name, opened_at, exists}]}``."""
        return {"projects": self.recent.list()}

    # ------------------------------------------------------------------------- recovery
    def _unsaved_snapshot(self) -> SomaDocument | None:
        from .persistence import snapshot

        with self._lock:
            if not self.document.dirty:
                return None
            return snapshot(self.document)

    def _autosave_poke(self, event: dict | None) -> None:
        if event is not None and event.get("type") not in ("progress", "viewport", "status", "overview", "error"):
            self.autosaver.poke()

    def recovery_offers(self) -> dict:
        """Recovery files left by earlier runs that ended with unsaved edits, newest first:
        ``{"offers": [{path, project_path, written_at, partials}]}``."""
        return {"offers": self.recovery.offers()}

    def restore_recovery(self, path: str, search_dir: str | None = None) -> dict:
        """Open a recovery file as the document (unsaved; saving writes to its project's path).
        The offer is removed once the document is back."""
        offer = self._offer(path)
        if search_dir is not None:
            search_dir = _path_param("search_dir", search_dir, "the folder that holds the project's audio")
        project = read_project(offer["path"])
        project.document.project_path = offer.get("project_path") if isinstance(offer.get("project_path"), str) else None
        out = self._open_project(project, search_dir, recovered=True)
        self.recovery.discard(offer["path"])
        return out

    def discard_recovery(self, path: str) -> dict:
        """Delete a recovery file that was offered (the user does not want it)."""
        offer = self._offer(path)
        self.recovery.discard(offer["path"])
        return {"offers": self.recovery.offers()}

    def _offer(self, path: Any) -> dict:
        if not isinstance(path, str):
            raise ParameterError(f"path={path!r} must be the path of an offered recovery file")
        for offer in self.recovery.offers():
            if offer["path"] == path:
                return offer
        raise ParameterError(f"{path!r} is not an offered recovery file (it was restored or discarded already)")

    def export(self, path: str, include_muted: bool = True, overwrite: bool = False) -> dict:
        """Export partials to ``path`` (``.csv`` or ``.json``), written atomically.

        An existing file is replaced only with ``overwrite=True``; otherwise the answer is
        ``{"status": "exists", "path": ...}`` and nothing is written.
        """
        path = _path_param("path", path, "a .csv or .json file to write")
        for name, v in (("include_muted", include_muted), ("overwrite", overwrite)):
            if not isinstance(v, bool):
                raise ParameterError(f"{name}={v!r} must be true or false")
        target = Path(os.path.expanduser(path))
        if os.path.lexists(target) and not overwrite:
            return {"status": "exists", "path": str(target.resolve())}
        with self._lock:
            written = self.document.export(target, include_muted=include_muted, overwrite=True)
            n = len(self.document.partials)
        return {"status": "saved", "path": written, "partials": n}

    def export_as(self, path: str, format: str, include_muted: bool = False, overwrite: bool = False,
                  **options: Any) -> dict:
        """Export the partials as SOMA's outputs (:mod:`soma_shm.export`): ``format`` ``"mpe"``,
        ``"midi"`` (multi-track), ``"mono"`` (``.mid``), ``"audio"`` (sine resynthesis) or ``"cv"``
        (``.wav``/``.flac``). MIDI ``options``: ``pitch_bend_range``, ``amplitude`` (pressure,
        cc74, cc1), ``curve`` (linear, db), ``cc_rate``; audio: ``sample_rate`` (default the
        file's), ``bit_depth``, ``speed`` (audio), ``normalize`` (audio), ``mode`` (cv: mono,
        poly), ``curve`` (cv). Muted partials stay out unless ``include_muted``.

        An existing file (or the first of a numbered series) is replaced only with
        ``overwrite=True``; otherwise the answer is ``{"status": "exists", "path": ...}``.
        Returns ``{"paths": [...], "partials": n}``.
        """
        from .. import export as ex

        formats = {"mpe": (".mid", ".midi"), "midi": (".mid", ".midi"), "mono": (".mid", ".midi"),
                   "audio": (".wav", ".flac"), "cv": (".wav", ".flac")}
        if format not in formats:
            raise ParameterError(f"format={format!r} must be one of {', '.join(formats)}")
        path = _path_param("path", path, f"a {' or '.join(formats[format])} file to write")
        for name, v in (("include_muted", include_muted), ("overwrite", overwrite)):
            if not isinstance(v, bool):
                raise ParameterError(f"{name}={v!r} must be true or false")
        target = Path(os.path.expanduser(path))
        if target.suffix.lower() not in formats[format]:
            raise ParameterError(f"a {format} export is a {' or '.join(formats[format])} file; {str(target)!r} is not")
        first = target.with_name(f"{target.stem}_01{target.suffix}")
        if not overwrite and (os.path.lexists(target) or os.path.lexists(first)):
            return {"status": "exists", "path": str((target if os.path.lexists(target) else first).resolve())}
        with self._lock:
            parts = [p.points for p in self.document.partials if include_muted or not p.is_muted]
            info = self.engine.info
        if format in ("mpe", "midi", "mono"):
            allowed = {"pitch_bend_range", "amplitude", "curve", "cc_rate"}
        else:
            allowed = {"sample_rate", "bit_depth", "speed", "normalize"} if format == "audio" else \
                {"sample_rate", "bit_depth", "mode", "curve"}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ParameterError(f"{format} export options are {', '.join(sorted(allowed))}; not {', '.join(unknown)}")
        if format in ("mpe", "midi", "mono"):
            fn = {"mpe": ex.write_mpe, "midi": ex.write_multitrack, "mono": ex.write_mono}[format]
            paths = fn(parts, target, **options)
        else:
            rate = options.pop("sample_rate", None) or (int(info.sample_rate) if info else 48_000)
            depth = options.pop("bit_depth", 24)
            duration = info.duration if info else None
            if format == "audio":
                speed = options.pop("speed", 1.0)
                if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 0.125 <= speed <= 8:
                    raise ParameterError(f"speed={speed!r} must be from 1/8 to 8")
                paths = [ex.write_audio(parts, target, rate, depth, duration=duration, stretch=1.0 / speed,
                                        **options)["path"]]
            else:
                paths = ex.write_cv(parts, target, rate, depth, duration=duration, **options)
        return {"status": "written", "paths": [str(p) for p in paths], "partials": len(parts)}

    # --------------------------------------------------------------------------- dialogs
    def dialog(self, kind: str) -> dict:
        """Native file dialog (pywebview window only): ``open_audio``, ``open_project``,
        ``save_project``, ``export``. Returns ``{"path": str | None}``."""
        if self.dialogs is None:
            raise ParameterError("native dialogs exist only in the desktop window; type a path instead")
        if kind not in ("open_audio", "open_project", "save_project", "export"):
            raise ParameterError(f"kind={kind!r} must be open_audio, open_project, save_project or export")
        return {"path": self.dialogs(kind)}


class _ViewScheduler:
    """Viewport requests between the page and the engine: latest wins, but a computation that is
    about to finish is not cancelled.

    Cancelling costs the engine a worker termination, a respawn and a cold worker (tens of
    milliseconds, more on a loaded machine; see ``perf/bench_ui.py``). So the newest request
    supersedes the computing one only when that one is expected to need more than
    :data:`SUPERSEDE_COST_S` still; otherwise it waits (replacing any waiting one) and starts the
    moment the computing one ends, or once that one overruns its expected time by
    ``SUPERSEDE_COST_S``. Expected durations come from the last results of the same method (time
    per pixel, linear in the window length); a window longer than any seen is never waited for.

    A request that need not wait is submitted by the caller's thread at once; a waiting one by
    the ``soma-app-views`` thread. Submissions are serialised (``_submit_lock``) so requests reach
    the engine in order. The engine reports results holding no lock of its own (docs/design.md,
    "Supervisor and lock order"), and its thread only ever takes ``_cond`` here.
    """

    def __init__(self, backend: "AppBackend") -> None:
        self._backend = backend
        self._cond = threading.Condition()
        self._submit_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._running: dict | None = None  # {id, generation, submitted, held_s, expected, span, pixels}
        self._wanted: tuple | None = None  # (id, geometry, generation, asked) not yet submitted
        self._costs: dict[str, deque] = {"cwt": deque(maxlen=COST_SAMPLES), "stft": deque(maxlen=COST_SAMPLES)}
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="soma-app-views", daemon=True)
        self._thread.start()

    def request(self, geometry: tuple, generation: int) -> int:
        """The newest view (an older one not yet submitted is dropped); returns its id."""
        with self._cond:
            vid = next(self._ids)
            self._wanted = (vid, geometry, generation, time.perf_counter())
            self._cond.notify()
        self._pump()
        return vid

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def expected(self, method: str, span: float, pixels: int) -> float:
        """Expected seconds from submit to result of a request (inf when unknown)."""
        samples = self._costs[method]
        if not samples:
            return math.inf
        xs = np.array([c[0] for c in samples])
        ys = np.array([c[1] / c[2] for c in samples])  # seconds per pixel
        if span > 1.25 * xs.max():
            return math.inf  # longer than any seen: assume long
        if len(samples) >= 3 and np.ptp(xs) > 0:
            slope, icpt = np.polyfit(xs, ys, 1)
            per_pixel = float(np.clip(icpt + slope * span, ys.min(), ys.max()))
        else:
            per_pixel = float(ys.max())
        return per_pixel * pixels

    def _wait(self) -> float | None:
        """With ``_cond``: 0.0 to submit the wanted view now, else seconds to wait (None: until told)."""
        if self._wanted is None or self._stopped:
            return None
        run = self._running
        if run is None or run["generation"] != self._wanted[2]:
            return 0.0
        # Superseding costs about SUPERSEDE_COST_S: worth it only if the computing one needs longer.
        left = run["expected"] - (time.perf_counter() - run["submitted"])
        if left > SUPERSEDE_COST_S or left < -SUPERSEDE_COST_S:
            return 0.0
        return left + SUPERSEDE_COST_S + 1e-3

    def _pump(self) -> None:
        """Submit the wanted view if it should start now."""
        with self._submit_lock:
            with self._cond:
                if self._wait() != 0.0:
                    return
                vid, geometry, generation, asked = self._wanted
                self._wanted = None
                t0, t1, _, _, width, height = geometry
                span, now = t1 - t0, time.perf_counter()
                method = "stft" if span > self._backend.engine.options.stft_above_seconds else "cwt"
                run = {"id": vid, "generation": generation, "submitted": now, "held_s": now - asked,
                       "expected": self.expected(method, span, width * height), "span": span,
                       "pixels": width * height}
                self._running = run
            self._submit(run, geometry)

    def _loop(self) -> None:
        # Starts the views that waited for a computation to end.
        while True:
            with self._cond:
                while not self._stopped and (wait := self._wait()) != 0.0:
                    self._cond.wait(wait)
                if self._stopped:
                    return
            self._pump()

    def _submit(self, run: dict, geometry: tuple) -> None:
        backend, vid, generation = self._backend, run["id"], run["generation"]

        def done(result: Any) -> None:
            self._finished(run, result)
            backend._on_view(result, generation, vid, run["held_s"])

        try:
            backend.engine.submit_viewport(*geometry, on_result=done)
        except Exception as exc:  # the file changed or the engine closed meanwhile: the page is told
            with self._cond:
                if self._running is run:
                    self._running = None
            if not self._stopped:
                backend.events.publish({"type": "error", "op": "view", "request_id": vid, "error": backend.describe_error(exc, "view")})

    def _finished(self, run: dict, result: Any) -> None:
        # On the engine's supervisor thread: learn the cost; a waiting view may start now.
        with self._cond:
            if not isinstance(result, BaseException) and result.timings.get("total_s"):
                self._costs[result.method].append((run["span"], float(result.timings["total_s"]), run["pixels"]))
            if self._running is run:
                self._running = None
                self._cond.notify()


def _ids(ids: Any) -> None:
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ParameterError(f"ids={ids!r} must be a list of partial ids")


def _path_param(name: str, value: Any, what: str) -> str:
    """A path given to the API: a non-empty string without NUL bytes, of a sane length."""
    if not isinstance(value, str) or not value.strip():
        raise ParameterError(f"{name}={value!r} must be the path of {what}")
    if "\x00" in value or len(value) > 4096:
        raise ParameterError(f"{name} is not a usable path (it holds a NUL byte or is too long); give the path of {what}")
    return value.strip()


def _json_kind(value: Any) -> str:
    return {list: "a list", str: "a string", bool: "true/false", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__)


def _inside(path: str, folder: str) -> bool:
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


def _warm_overview() -> None:
    from ..pyramid import build_pyramid
    from ..render import reference_level, tone_map

    try:
        x = np.zeros(48_000, dtype=np.float32)
        x[::100] = 0.1
        pyramid = build_pyramid(x, 48_000, reference=reference_level(x, 48_000))
        tone_map(pyramid.image(0.0, 1.0, OVERVIEW_FMIN, 20_000.0, 16, 8), 1.0)
    except Exception:  # pragma: no cover - warming is an optimisation; opening reports real errors
        log.debug("overview warm-up failed", exc_info=True)
