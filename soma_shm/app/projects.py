"""Projects through the backend: save, load (a failure changes nothing), the recent list, and
the recovery file (autosave, offers of earlier runs, restore, discard)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


from ..errors import ParameterError
from .document import SomaDocument, read_project
from .params import _inside, _path_param
from .persistence import bundle_audio, ensure_soma_suffix, locate_audio


class ProjectsMixin:
    """Saving, loading and recovering projects in :class:`~soma_shm.app.backend.AppBackend`."""

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
            # The project's path travels with the clean history: the page may see this event
            # before the answer to its call, and its next Ctrl+S must write the same project.
            self.events.publish({"type": "edit", "label": None, "added": [], "changed": [], "removed": [],
                                 "history": history, "project_path": saved})
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
                    # The same settings: the overview is the same image (no new blob for the page
                    # to fetch and colour, no new view to compute while the document arrives).
                    if doc.settings != settings_before:
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
