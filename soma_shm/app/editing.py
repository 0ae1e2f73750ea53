"""Editing the document through the backend: each edit, undo and redo applied under the backend's
lock and pushed as an ``edit`` event of only what it touched; the whole document (snapshot) for
open, load and a page that connects; settings changes."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..settings import AnalysisSettings
from .params import _ids


class EditingMixin:
    """Edits, undo/redo and settings changes of :class:`~soma_shm.app.backend.AppBackend`."""

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
