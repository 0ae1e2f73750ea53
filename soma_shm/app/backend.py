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

import gc
import inspect
import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EngineClosed, ParameterError, SomaError
from ..settings import AnalysisSettings
from .document import SomaDocument
from .editing import EditingMixin
from .events import BlobStore, EventBus, error_payload
from .exporting import ExportingMixin
from .params import _json_kind, _path_param
from .persistence import Autosaver, RecentProjects, Recovery
from .projects import ProjectsMixin
from .views import SUPERSEDE_COST_S, ViewsMixin, _ViewScheduler

__all__ = ["AppBackend", "EventBus", "BlobStore", "API_METHODS", "error_payload", "SUPERSEDE_COST_S"]

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


class AppBackend(ViewsMixin, EditingMixin, ProjectsMixin, ExportingMixin):
    """The app's state and operations, shared by the browser mode and the pywebview window.

    Parameters
    ----------
    engine_options : dict, optional
        Keyword overrides for :class:`soma_shm.EngineOptions` (e.g. ``{"spares": False}``).
    settings : AnalysisSettings, optional
        Initial analysis settings.
    freeze_heap : bool, optional
        Once the kernels are ready, move everything made so far (modules, compiled kernels, the
        engine: what lives as long as the app) out of the cyclic garbage collector's sight
        (:func:`gc.freeze`), so a full collection walks only what came after (documents,
        events). For the app's own process (``soma-shm app`` / ``serve``); off by default, so an
        interpreter that merely uses the backend is left alone.
    """

    def __init__(self, engine_options: dict | None = None, settings: AnalysisSettings | None = None,
                 autosave: bool = True, freeze_heap: bool = False) -> None:
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
        self._freeze_heap = freeze_heap
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
        if self._freeze_heap:
            # A full collection walked ~130,000 objects of modules and kernels (0.1-0.4 s here),
            # and one fell in about every third load of a 10,000-partial project.
            gc.collect()  # what is garbage now is not kept for good
            gc.freeze()

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


def _warm_overview() -> None:
    from ..audio import prepare_decoders
    from ..pyramid import build_pyramid
    from ..render import reference_level, tone_map

    try:
        x = np.zeros(48_000, dtype=np.float32)
        x[::100] = 0.1
        pyramid = build_pyramid(x, 48_000, reference=reference_level(x, 48_000))
        tone_map(pyramid.image(0.0, 1.0, OVERVIEW_FMIN, 20_000.0, 16, 8), 1.0)
        prepare_decoders()
    except Exception:  # pragma: no cover - warming is an optimisation; opening reports real errors
        log.debug("overview warm-up failed", exc_info=True)
