"""The app's document: source audio, analysis settings, partials and the edit history.

A :class:`SomaDocument` is plain data kept by the backend (the page only ever shows it): the
source file (path, MD5, sample rate, duration), the :class:`~soma_shm.AnalysisSettings`, the
partials (:class:`~soma_shm.app.partial.Partial`, ``partial.py``) and an undo/redo history of
partial edits. It saves and loads ``.soma`` projects in the SOMA app's layout and exports
partials as CSV or JSON: :func:`read_project` (here, because it builds documents) reads a file,
while the format's keys, the amplitude convention, JSON parsing and atomic writing live in
``persistence.py``, which does not know this module.

Loading is tolerant where SOMA projects may differ (missing settings take the defaults, a
``wavelet`` name such as ``"cmor8.0-1.5"`` is understood, unknown setting keys are kept aside and
written back) and strict where data would be wrong (points that are not finite ``[t, f, a]``
rows, duplicate ids): those raise :class:`~soma_shm.ParameterError` naming the partial.

History: every edit (add, delete, mute, recolour, merge, crop, extend, erase, clear, a settings
change) is an :class:`Edit` holding only the partials it removed and added; ``undo`` applies its
inverse and ``redo`` applies it again, so an edit costs O(partials it touched) at any document
size. Partials are immutable, so an edit keeps references, never copies. Undo with nothing to
undo (and redo with nothing to redo) is a no-op returning None.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import ParameterError
from ..settings import AnalysisSettings
from . import persistence
from .partial import PALETTE, Partial, _color, _points, file_md5
from .persistence import _number, _parse_iso, _reason, _settings_from
from .somajson import PointsBlock

__all__ = ["Partial", "Edit", "SomaDocument", "PALETTE", "file_md5", "ProjectFile", "project_from_dict", "read_project"]

HISTORY_LIMIT = 500


@dataclass(frozen=True)
class Edit:
    """One undoable edit: the partials it removed and added (each as ``(order, Partial)``; a
    partial in both was changed in place) and, for a settings change, ``(before, after)``.

    Undo applies the inverse (added leave, removed come back at their places), so an edit costs
    O(partials it touched) in time and memory, whatever the size of the document.
    """

    label: str
    removed: tuple = ()
    added: tuple = ()
    settings: tuple | None = None

    def inverse(self) -> "Edit":
        s = None if self.settings is None else (self.settings[1], self.settings[0])
        return Edit(self.label, self.added, self.removed, s)

    def delta(self) -> dict[str, Any]:
        """``{"added": [Partial], "changed": [Partial], "removed": [id]}`` of applying this edit."""
        before = {p.id for _, p in self.removed}
        after = {p.id: p for _, p in self.added}
        return {
            "added": [p for pid, p in after.items() if pid not in before],
            "changed": [p for pid, p in after.items() if pid in before],
            "removed": [pid for pid in before if pid not in after],
        }


@dataclass
class SomaDocument:
    """Source, settings, partials and the undo/redo history of partial edits.

    Parameters
    ----------
    settings : AnalysisSettings, optional
        Analysis settings saved with the project.
    source_path : str, optional
        The audio file the partials belong to; ``source_md5`` is computed from it when omitted.
    """

    settings: AnalysisSettings = field(default_factory=AnalysisSettings)
    source_path: str | None = None
    source_md5: str | None = None
    project_path: str | None = None
    extra_settings: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # top-level .soma sections kept from the file read
    source_sample_rate: float | None = None
    source_duration: float | None = None
    source_size: int | None = None
    amp_reference: float | None = None  # the recording's 0 dB level (persistence.py: amplitudes)
    created: float = field(default_factory=time.time)
    dirty: bool = False
    _undo: list = field(default_factory=list, repr=False)
    _redo: list = field(default_factory=list, repr=False)
    _next_id: int = 1
    _parts: dict = field(default_factory=dict, repr=False)  # id -> Partial
    _order: dict = field(default_factory=dict, repr=False)  # id -> position key (document order)
    _next_order: int = 0
    _ordered: tuple | None = field(default=None, repr=False)  # cached document-order tuple
    revision: int = 0  # counts changes of the partials (snapshots are cached by it)

    # ------------------------------------------------------------------ source and settings
    def set_source(self, path: str | None, md5: str | None = None) -> None:
        """Point the document at an audio file (or an in-memory array when ``path`` is None)."""
        if path is None:
            self.source_path, self.source_md5 = None, md5
            return
        self.source_path = str(Path(path).resolve())
        self.source_md5 = md5 if md5 is not None else file_md5(self.source_path)
        try:
            self.source_size = os.path.getsize(self.source_path)
        except OSError:
            self.source_size = None

    def set_recording(self, sample_rate: float, duration: float, amp_reference: float | None) -> None:
        """What the open recording is: rate, length, and its 0 dB level (for the amplitudes' scale)."""
        self.source_sample_rate = float(sample_rate)
        self.source_duration = float(duration)
        self.amp_reference = float(amp_reference) if amp_reference else None

    def scale_amplitudes(self, factor: float) -> None:
        """Multiply every amplitude by ``factor`` (not an edit: used once when a project whose
        amplitudes are normalised meets its recording's level)."""
        parts = self.partials
        if not parts:
            return
        block = np.concatenate([p.points for p in parts])  # one pass over all points, then views
        block[:, 2] *= factor
        block.flags.writeable = False
        stops = np.cumsum([p.points.shape[0] for p in parts]).tolist()
        self.partials = tuple(Partial(p.id, block[a:b], p.color, p.is_muted)
                              for p, a, b in zip(parts, [0] + stops[:-1], stops))

    def set_settings(self, settings: AnalysisSettings) -> None:
        if not isinstance(settings, AnalysisSettings):
            raise ParameterError(f"settings must be an AnalysisSettings, got {type(settings).__name__}")
        self.settings = settings
        self.dirty = True

    # ---------------------------------------------------------------------------- partials
    @property
    def partials(self) -> tuple[Partial, ...]:
        """The partials in document order (creation order; an undone delete puts them back in place)."""
        if self._ordered is None:
            order = self._order
            self._ordered = tuple(sorted(self._parts.values(), key=lambda p: order[p.id]))
        return self._ordered

    @partials.setter
    def partials(self, value: Iterable[Partial]) -> None:
        # Replaces everything without history (a loaded project): ids must be unique.
        parts: dict[str, Partial] = {}
        for p in value:
            if p.id in parts:
                raise ParameterError(f"partial id {p.id!r} appears twice; ids must be unique")
            parts[p.id] = p
        self._parts = parts
        self._order = {pid: i for i, pid in enumerate(parts)}
        self._next_order = len(parts)
        self._ordered = tuple(parts.values())  # already in document order
        self.revision += 1

    def __len__(self) -> int:
        return len(self._parts)

    def partial(self, pid: str) -> Partial:
        try:
            return self._parts[pid]
        except (KeyError, TypeError):
            raise ParameterError(
                f"no partial with id={pid!r}; existing ids: {list(self._parts)[:20]}"
            ) from None

    def _new_id(self, taken: Iterable[str] = ()) -> str:
        taken = set(taken)
        while f"p{self._next_id}" in self._parts or f"p{self._next_id}" in taken:
            self._next_id += 1
        pid = f"p{self._next_id}"
        self._next_id += 1
        return pid

    def _new_partial(self, points: np.ndarray, color: str | None = None, is_muted: bool = False,
                     taken: Iterable[str] = ()) -> Partial:
        pid = self._new_id(taken)
        pts = _points(points, f"partial {pid}")
        if color is None:
            color = PALETTE[(self._next_id - 2) % len(PALETTE)]
        return Partial(pid, pts, _color(color, f"partial {pid}"), bool(is_muted))

    def _apply(self, removed: tuple, added: tuple) -> None:
        # ``removed`` / ``added``: ((order, Partial), ...). A partial in both keeps its place.
        gone = {p.id for _, p in removed}
        for _, p in removed:
            del self._parts[p.id]
        for order, p in added:
            self._parts[p.id] = p
            self._order[p.id] = order
        for pid in gone - self._parts.keys():
            del self._order[pid]
        self._ordered = None
        self.revision += 1

    def _commit(self, label: str, removed: Iterable[Partial] = (), added: Iterable[Partial] = (),
                settings: tuple | None = None) -> Edit:
        """Record and apply one edit: ``removed`` partials leave, ``added`` ones arrive (a partial
        in both is changed in place). Costs O(partials touched), not O(document)."""
        rem = tuple((self._order[p.id], p) for p in removed)
        orders = dict(rem and [(p.id, o) for o, p in rem])
        add = []
        for p in added:
            if p.id not in orders:
                orders[p.id] = self._next_order
                self._next_order += 1
            add.append((orders[p.id], p))
        edit = Edit(label, rem, tuple(add), settings)
        self._apply(edit.removed, edit.added)
        if settings is not None:
            self.settings = settings[1]
        self._undo.append(edit)
        del self._undo[:-HISTORY_LIMIT]
        self._redo.clear()
        self.dirty = True
        return edit

    def add_partial(self, points: Any, color: str | None = None, is_muted: bool = False) -> Partial:
        """Add a partial from ``(K, 3)`` points (an undoable edit); returns it."""
        partial = self._new_partial(points, color, is_muted)
        self._commit(f"add {partial.id}", added=(partial,))
        return partial

    def delete_partials(self, ids: Iterable[str]) -> int:
        """Delete partials by id (one undoable edit); unknown ids raise. Returns how many."""
        gone = self._existing(ids, "delete")
        self._commit(f"delete {_names(gone)}", removed=gone)
        return len(gone)

    def _existing(self, ids: Iterable[str], what: str, at_least: int = 1) -> list[Partial]:
        if isinstance(ids, str) or not isinstance(ids, Iterable):
            raise ParameterError(f"ids={ids!r} must be a list of partial ids")
        ids = list(dict.fromkeys(ids))
        if len(ids) < at_least:
            raise ParameterError(
                f"{what} needs at least {at_least} partial{'s' if at_least > 1 else ''}; got ids={ids!r}"
                if ids else f"ids is empty; select at least {at_least} partial{'s' if at_least > 1 else ''} to {what}")
        return [self.partial(pid) for pid in ids]

    def update_partial(self, pid: str, *, color: str | None = None, is_muted: bool | None = None) -> Partial:
        """Recolour or (un)mute a partial (an undoable edit)."""
        old = self.partial(pid)
        changes: dict[str, Any] = {}
        if color is not None:
            changes["color"] = _color(color, f"partial {pid}")
        if is_muted is not None:
            if not isinstance(is_muted, bool):
                raise ParameterError(f"is_muted={is_muted!r} must be true or false")
            changes["is_muted"] = is_muted
        if not changes:
            raise ParameterError("nothing to change: give color and/or is_muted")
        new = replace(old, **changes)
        self._commit(f"edit {pid}", removed=(old,), added=(new,))
        return new

    def set_muted(self, ids: Iterable[str], is_muted: bool) -> int:
        """Mute or unmute several partials (one undoable edit); returns how many changed."""
        if not isinstance(is_muted, bool):
            raise ParameterError(f"is_muted={is_muted!r} must be true or false")
        olds = [p for p in self._existing(ids, "mute") if p.is_muted != is_muted]
        if olds:
            news = [replace(p, is_muted=is_muted) for p in olds]
            self._commit(f"{'mute' if is_muted else 'unmute'} {_names(olds)}", removed=olds, added=news)
        return len(olds)

    def clear_partials(self) -> None:
        """Remove every partial (an undoable edit)."""
        if self._parts:
            self._commit("clear", removed=self.partials)

    def merge_partials(self, ids: Iterable[str]) -> Partial:
        """Connect two or more partials into one (an undoable edit); returns the merged partial.

        The partials are joined in order of their start times; where one starts before the
        previous one ends, the previous one's points are kept up to its end and the next one's
        points continue after it. A gap between them is bridged by points every
        ``settings.time_resolution_ms``, log-frequency and amplitude interpolated linearly. The
        merged partial keeps the id, colour and mute state of the earliest one.
        """
        parts = sorted(self._existing(ids, "merge", at_least=2), key=lambda p: (p.points[0, 0], p.points[-1, 0]))
        step = self.settings.time_resolution_ms / 1000.0
        out = [parts[0].points]
        for p in parts[1:]:
            end = out[-1][-1]
            nxt = p.points[p.points[:, 0] > end[0]]
            if nxt.shape[0] == 0:
                continue  # wholly inside what is already joined: nothing after it
            out.append(_bridge(end, nxt[0], step))
            out.append(nxt)
        first = parts[0]
        merged = Partial(first.id, _points(np.concatenate(out), f"partial {first.id}"), first.color, first.is_muted)
        self._commit(f"merge {_names(parts)}", removed=parts, added=(merged,))
        return merged

    def crop_partial(self, pid: str, t0: float, t1: float) -> Partial:
        """Keep only the points of a partial with ``t0 <= time <= t1`` (an undoable edit)."""
        old = self.partial(pid)
        try:
            t0, t1 = float(t0), float(t1)
        except (TypeError, ValueError):
            raise ParameterError(f"crop times t0={t0!r}, t1={t1!r} must be numbers (seconds)") from None
        if not (math.isfinite(t0) and math.isfinite(t1) and t0 < t1):
            raise ParameterError(f"crop needs finite t0 < t1; got t0={t0}, t1={t1}")
        p = old.points
        keep = p[(p[:, 0] >= t0) & (p[:, 0] <= t1)]
        if keep.shape[0] == p.shape[0]:
            raise ParameterError(
                f"crop {t0:.3f}-{t1:.3f} s keeps all of partial {pid} ({p[0, 0]:.3f}-{p[-1, 0]:.3f} s); nothing to crop")
        if keep.shape[0] < 2:
            raise ParameterError(
                f"crop {t0:.3f}-{t1:.3f} s would leave partial {pid} fewer than 2 points; delete it instead")
        new = replace(old, points=_points(keep, f"partial {pid}"))
        self._commit(f"crop {pid}", removed=(old,), added=(new,))
        return new

    def extend_partial(self, pid: str, points: Any) -> Partial:
        """Extend a partial with snapped ``(K, 3)`` points (an undoable edit): the points before its
        first point are put in front, those after its last point behind; points inside its time
        span are ignored (cropping is :meth:`crop_partial`)."""
        old = self.partial(pid)
        new_pts = _points(points, f"extension of partial {pid}")
        p = old.points
        before = new_pts[new_pts[:, 0] < p[0, 0]]
        after = new_pts[new_pts[:, 0] > p[-1, 0]]
        if before.shape[0] == 0 and after.shape[0] == 0:
            raise ParameterError(
                f"the extension ({new_pts[0, 0]:.3f}-{new_pts[-1, 0]:.3f} s) lies inside partial {pid} "
                f"({p[0, 0]:.3f}-{p[-1, 0]:.3f} s); drag an end handle beyond the end to extend")
        joined = np.concatenate([before[np.argsort(before[:, 0], kind="stable")], p,
                                 after[np.argsort(after[:, 0], kind="stable")]])
        new = replace(old, points=_points(joined, f"partial {pid}"))
        self._commit(f"extend {pid}", removed=(old,), added=(new,))
        return new

    def erase(self, trace: Any, radius_t: float, radius_octaves: float) -> dict[str, list[str]]:
        """Erase the points under a stroke (an undoable edit).

        ``trace`` is the stroke ``[[t, f], ...]``; a point is erased when it lies within the
        ellipse of half-axes ``radius_t`` seconds and ``radius_octaves`` octaves around any
        segment of the stroke. A partial whose middle is erased is split in two (the first piece
        keeps its id); pieces of fewer than 2 points go. Returns ``{"changed", "added",
        "removed"}`` ids; nothing under the stroke raises ParameterError and records nothing.
        """
        tr = _trace(trace)
        try:
            rt, ro = float(radius_t), float(radius_octaves)
        except (TypeError, ValueError):
            raise ParameterError(f"radius_t={radius_t!r}, radius_octaves={radius_octaves!r} must be numbers") from None
        if not (rt > 0 and ro > 0 and math.isfinite(rt) and math.isfinite(ro)):
            raise ParameterError(f"radius_t={rt} s and radius_octaves={ro} must be positive")
        seg_t, seg_l = tr[:, 0] / rt, np.log2(tr[:, 1]) / ro  # unit-circle space
        t_lo, t_hi = tr[:, 0].min() - rt, tr[:, 0].max() + rt
        l_lo, l_hi = np.log2(tr[:, 1]).min() - ro, np.log2(tr[:, 1]).max() + ro
        removed, added, taken = [], [], set()
        result: dict[str, list[str]] = {"changed": [], "added": [], "removed": []}
        for part in self._parts.values():
            p = part.points
            if p[-1, 0] < t_lo or p[0, 0] > t_hi:
                continue
            lf = np.log2(p[:, 1])
            if lf.max() < l_lo or lf.min() > l_hi:
                continue
            hit = _near_polyline(p[:, 0] / rt, lf / ro, seg_t, seg_l)
            if not hit.any():
                continue
            removed.append(part)
            runs = _runs(~hit)
            pieces = [p[a:b] for a, b in runs if b - a >= 2]
            for i, piece in enumerate(pieces):
                if i == 0:
                    new = replace(part, points=_points(piece, f"partial {part.id}"))
                    result["changed"].append(part.id)
                else:
                    new = self._new_partial(piece, part.color, part.is_muted, taken)
                    taken.add(new.id)
                    result["added"].append(new.id)
                added.append(new)
            if not pieces:
                result["removed"].append(part.id)
        if not removed:
            raise ParameterError("the eraser stroke touched no partial; draw over the points to erase")
        self._commit(f"erase {_names(removed)}", removed=removed, added=added)
        return result

    def change_settings(self, settings: AnalysisSettings) -> bool:
        """Change the analysis settings as an undoable edit; False (and no edit) when unchanged."""
        if not isinstance(settings, AnalysisSettings):
            raise ParameterError(f"settings must be an AnalysisSettings, got {type(settings).__name__}")
        if settings == self.settings:
            return False
        changed = [k for k, v in settings.to_dict().items() if self.settings.to_dict().get(k) != v]
        self._commit(f"settings {', '.join(changed)}", settings=(self.settings, settings))
        return True

    # ----------------------------------------------------------------------------- history
    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def history(self) -> dict[str, Any]:
        """Undo/redo availability and labels, and whether there are unsaved edits."""
        return {
            "can_undo": self.can_undo,
            "can_redo": self.can_redo,
            "undo_label": self._undo[-1].label if self._undo else None,
            "redo_label": self._redo[-1].label if self._redo else None,
            "dirty": self.dirty,
        }

    def undo(self) -> Edit | None:
        """Undo the last edit by applying its inverse; returns that inverse (what changed now),
        or None when there is nothing to undo (a no-op)."""
        if not self._undo:
            return None
        edit = self._undo.pop()
        self._apply(edit.added, edit.removed)
        if edit.settings is not None:
            self.settings = edit.settings[0]
        self._redo.append(edit)
        self.dirty = True
        return edit.inverse()

    def redo(self) -> Edit | None:
        """Redo the last undone edit; returns it, or None when there is nothing to redo."""
        if not self._redo:
            return None
        edit = self._redo.pop()
        self._apply(edit.removed, edit.added)
        if edit.settings is not None:
            self.settings = edit.settings[1]
        self._undo.append(edit)
        self.dirty = True
        return edit

    # ------------------------------------------------------------------------- save / load
    def to_dict(self) -> dict[str, Any]:
        """The ``.soma`` JSON structure (SOMA's layout; see ``persistence.py``)."""
        return persistence.project_to_dict(self, self.project_path)

    def save(self, path: str | os.PathLike, overwrite: bool = True) -> str:
        """Write the project as ``.soma`` JSON atomically; returns the absolute path written."""
        saved = persistence.write_project(self, path, overwrite=overwrite)
        self.project_path = saved
        self.dirty = False
        return saved

    @classmethod
    def from_dict(cls, data: Any, project_path: str | None = None) -> "SomaDocument":
        """Build a document from ``.soma`` JSON; raises ParameterError naming what is wrong."""
        return project_from_dict(data, project_path).document

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SomaDocument":
        """Read a ``.soma`` project."""
        return read_project(path).document

    def source_matches(self) -> bool | None:
        """Whether the source file on disk still has the saved MD5 (None if unknown/missing)."""
        if not self.source_path or not self.source_md5 or not os.path.isfile(self.source_path):
            return None
        return file_md5(self.source_path) == self.source_md5

    # ------------------------------------------------------------------------------ export
    def export_csv(self, include_muted: bool = True) -> str:
        """Partials as CSV: one row per point, ``partial_id,time_s,frequency_hz,amplitude,is_muted``."""
        return _csv(p for p in self.partials if include_muted or not p.is_muted)

    def export_json(self, include_muted: bool = True) -> str:
        """Partials as JSON: ``{"source": ..., "partials": [{id, is_muted, color, points}]}``."""
        parts = [p.to_dict() for p in self.partials if include_muted or not p.is_muted]
        return json.dumps({"source": {"path": self.source_path, "md5": self.source_md5}, "partials": parts})

    def export(self, path: str | os.PathLike, include_muted: bool = True, overwrite: bool = True) -> str:
        """Write partials to ``path`` atomically; the format follows the suffix (``.csv`` or ``.json``)."""
        p = Path(path).expanduser()
        suffix = p.suffix.lower()
        if suffix not in (".csv", ".json"):
            raise ParameterError(f"export path {str(p)!r} must end in .csv or .json")
        if not p.parent.is_dir():
            raise ParameterError(f"folder {str(p.parent)!r} does not exist; choose an existing folder")
        text = self.export_csv(include_muted) if suffix == ".csv" else self.export_json(include_muted)
        return persistence.atomic_write(p, text, overwrite=overwrite)

    # ------------------------------------------------------------------------------- views
    def points_block(self) -> np.ndarray:
        """Every partial's points in document order as one ``(sum K, 3)`` float32 array (the
        snapshot the page fetches as a binary blob; ``state()["partials"][i]["n"]`` rows each)."""
        parts = self.partials
        if not parts:
            return np.zeros((0, 3), dtype=np.float32)
        return np.concatenate([p.points for p in parts]).astype(np.float32)

    def state(self) -> dict[str, Any]:
        """What the page shows from scratch: partials (id, colour, mute, point count; the points
        themselves are :meth:`points_block`), history flags, source and settings."""
        return {
            "partials": [{"id": p.id, "is_muted": bool(p.is_muted), "color": p.color, "n": int(p.points.shape[0])}
                         for p in self.partials],
            **self.history(),
            "project_path": self.project_path,
            "source": {"path": self.source_path, "md5": self.source_md5},
            "settings": self.settings.to_dict(),
        }


def _bridge(a: np.ndarray, b: np.ndarray, step: float) -> np.ndarray:
    """Points every ``step`` s strictly between points ``a`` and ``b`` (time and amplitude linear,
    frequency linear in log); none when they are closer than ``step``."""
    gap = b[0] - a[0]
    n_bridge = int(np.floor(gap / step - 1e-9))
    if n_bridge <= 0:
        return np.zeros((0, 3))
    u = np.arange(1, n_bridge + 1) * step / gap
    return np.column_stack([a[0] + u * gap, np.exp(np.log(a[1]) + u * (np.log(b[1]) - np.log(a[1]))),
                            a[2] + u * (b[2] - a[2])])


def _csv(parts: Iterable[Partial]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["partial_id", "time_s", "frequency_hz", "amplitude", "is_muted"])
    for p in parts:
        for t, f, a in p.points:
            w.writerow([p.id, repr(float(t)), repr(float(f)), repr(float(a)), int(p.is_muted)])
    return buf.getvalue()


def _names(parts: Iterable[Partial]) -> str:
    ids = [p.id for p in parts]
    return ", ".join(ids) if len(ids) <= 4 else f"{', '.join(ids[:3])} and {len(ids) - 3} more"


def _trace(value: Any) -> np.ndarray:
    try:
        tr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError("trace must be a list of [time s, frequency Hz] points") from None
    if tr.ndim != 2 or tr.shape[1] < 2 or tr.shape[0] < 1:
        raise ParameterError(f"trace has shape {tr.shape}; expected (K >= 1, 2) rows of [time s, frequency Hz]")
    tr = tr[:, :2]
    if not np.isfinite(tr).all() or (tr[:, 1] <= 0).any():
        raise ParameterError("trace points must be finite with positive frequencies")
    return tr


def _near_polyline(x: np.ndarray, y: np.ndarray, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """Which points (x, y) lie within distance 1 of the polyline (sx, sy)."""
    hit = (x[:, None] - sx[None, :]) ** 2 + (y[:, None] - sy[None, :]) ** 2 <= 1.0
    hit = hit.any(axis=1)
    if sx.shape[0] > 1:
        ax, ay = sx[:-1], sy[:-1]
        dx, dy = sx[1:] - ax, sy[1:] - ay
        L = dx * dx + dy * dy
        u = ((x[:, None] - ax) * dx + (y[:, None] - ay) * dy) / np.where(L > 0, L, 1.0)
        u = np.clip(u, 0.0, 1.0)
        d2 = (x[:, None] - ax - u * dx) ** 2 + (y[:, None] - ay - u * dy) ** 2
        hit |= (d2 <= 1.0).any(axis=1)
    return hit


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of each run of True in ``mask``."""
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    d = np.diff(m)
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


# ------------------------------------------------------------------ reading .soma projects
@dataclass
class ProjectFile:
    """A project read from disk: the document, and how its amplitudes are to be scaled."""

    document: Any
    amplitude_reference: float | None  # None: normalised amplitudes whose reference is unknown yet
    calibrated: bool  # True: amplitudes are already calibrated (an earlier soma_shm project)

    @property
    def amplitudes_need_reference(self) -> bool:
        return not self.calibrated and self.amplitude_reference is None


def project_from_dict(data: Any, project_path: str | os.PathLike | None = None,
                      points: PointsBlock | None = None) -> ProjectFile:
    """Read the ``.soma`` structure (SOMA's layout or an earlier soma_shm one).

    Relative source paths are resolved against the project's folder. ``points`` (from
    :func:`~soma_shm.app.somajson.parse_with_points`) holds every partial's points when they are
    not in ``data``: the partials are then views of its one array, checked all at once. Raises
    :class:`~soma_shm.ParameterError` naming what is wrong.
    """
    if not isinstance(data, dict):
        raise ParameterError(f"a .soma project is a JSON object, got {type(data).__name__}")
    for key in ("meta", "source", "data"):
        if key in data and data[key] is not None and not isinstance(data[key], dict):
            raise ParameterError(f".soma field {key!r} must be an object")
    meta = data.get("meta") or {}
    source = data.get("source") or {}
    old = meta.get("format") == "soma" or ("path" in source and "file_path" not in source)
    settings, extra_settings = _settings_from(data.get("analysis_settings") or {})
    folder = Path(project_path).resolve().parent if project_path else None

    raw_path = source.get("file_path", source.get("path"))
    src = None
    if raw_path is not None:
        if not isinstance(raw_path, str):
            raise ParameterError(f".soma field source.file_path={raw_path!r} must be a path")
        if raw_path:
            q = Path(raw_path).expanduser()
            if not q.is_absolute() and folder is not None:
                q = folder / q
            src = os.path.normpath(str(q.absolute()))
    md5 = source.get("md5_hash", source.get("md5")) or None
    if md5 is not None and not isinstance(md5, str):
        raise ParameterError(f".soma field source.md5_hash={md5!r} must be a hex string")
    doc = SomaDocument(settings=settings, source_path=src, source_md5=md5,
                       project_path=str(Path(project_path).resolve()) if project_path else None,
                       extra_settings=extra_settings)
    if source.get("sample_rate") not in (None, 0):
        doc.source_sample_rate = _number(source["sample_rate"], "source.sample_rate")
    if source.get("duration_sec") not in (None, 0):
        doc.source_duration = _number(source["duration_sec"], "source.duration_sec")
    if isinstance(source.get("file_size"), int):
        doc.source_size = source["file_size"]
    ref = source.get("amplitude_reference")
    if ref is not None:
        ref = _number(ref, "source.amplitude_reference")
        if ref <= 0:
            raise ParameterError(f"source.amplitude_reference={ref!r} must be positive")
    created = _parse_iso(meta.get("created_at", meta.get("created")))
    if created is not None:
        doc.created = created
    doc.extra = {k: v for k, v in data.items() if k not in ("source", "analysis_settings", "data")}
    if old:
        doc.extra.pop("meta", None)

    part_section = data.get("data") or {}
    raw = part_section.get("partials", [])
    if not isinstance(raw, list):
        raise ParameterError(".soma field 'data.partials' must be a list")
    scale = 1.0 if old or ref is None else ref
    if points is not None and len(points.counts) != len(raw):
        raise ParameterError(f"{len(points.counts)} point arrays for {len(raw)} partials")
    partials, seen, kept, colors = [], set(), [], {}
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ParameterError(f"partial #{i} must be an object with id, is_muted, color, points")
        pid = str(item.get("id", f"p{i + 1}"))
        if pid in seen:
            raise ParameterError(f"partial id {pid!r} appears twice; ids must be unique")
        seen.add(pid)
        muted = item.get("is_muted", False)
        if not isinstance(muted, bool):
            raise ParameterError(f"partial {pid}: is_muted={muted!r} must be true or false")
        color = item.get("color", PALETTE[i % len(PALETTE)])
        if isinstance(color, str) and len(color) in (3, 6) and not color.startswith("#"):
            color = "#" + color
        if points is not None:
            if points.counts[i] == 0:
                continue  # SOMA can keep a partial with no points: nothing to draw or play
            checked = colors.get(color) if isinstance(color, str) else None  # a few colours, many partials
            if checked is None:
                checked = _color(color, f"partial {pid}")  # raises unless a '#rgb' / '#rrggbb' string
                colors[color] = checked
            partials.append((pid, checked, muted))
            kept.append(i)
            continue
        if isinstance(item.get("points"), list) and not item["points"]:
            continue
        pts = _points(item.get("points"), f"partial {pid}")
        _check_amplitudes(pts, pid)
        if scale != 1.0:
            pts = pts.copy()
            pts[:, 2] *= scale
            pts.flags.writeable = False
        partials.append(Partial(pid, pts, _color(color, f"partial {pid}"), muted))
    if points is not None:
        partials = _partials_from_block(partials, points, kept, scale)
    doc.partials = tuple(partials)
    nums = [int(p.id[1:]) for p in partials if p.id[:1] == "p" and p.id[1:].isdigit()]
    doc._next_id = max(nums, default=0) + 1
    doc.amp_reference = ref if not old else None
    return ProjectFile(doc, None if old else ref, old)


def _check_amplitudes(pts: np.ndarray, pid: str) -> None:
    if (pts[:, 2] < 0).any():
        bad = int(np.flatnonzero(pts[:, 2] < 0)[0])
        raise ParameterError(f"partial {pid}: point {bad} has amplitude {pts[bad, 2]}; amplitudes are >= 0")


def _partials_from_block(meta: list, points: PointsBlock, kept: list, scale: float) -> list:
    """Partials ``(id, colour, muted)`` whose points are rows of ``points`` (views of one array):
    the rows are checked as :func:`~soma_shm.app.document._points` and :func:`_check_amplitudes`
    check each partial's, all at once, and the first bad one is named the same way."""
    rows = points.rows
    starts, counts = points.starts, points.counts
    if rows.shape[0] and not (np.isfinite(rows).all() and rows[:, 1].min() > 0 and rows[:, 2].min() >= 0):
        bad = ~np.isfinite(rows).all(axis=1) | ~(rows[:, 1] > 0) | (rows[:, 2] < 0)
        first = int(np.flatnonzero(bad)[0])
        i = int(np.searchsorted(starts, first, side="right") - 1)
        j = kept.index(i) if i in kept else None
        if j is not None:  # raises naming the partial and the point
            pid = meta[j][0]
            pts = _points(rows[starts[i]:starts[i] + counts[i]], f"partial {pid}")
            _check_amplitudes(pts, pid)
    if scale != 1.0:
        rows = rows.copy()
        rows[:, 2] *= scale
    rows.flags.writeable = False
    starts, stops = starts.tolist(), (starts + counts).tolist()
    return [Partial(pid, rows[starts[i]:stops[i]], color, muted) for (pid, color, muted), i in zip(meta, kept)]


def read_project(path: str | os.PathLike) -> ProjectFile:
    """Read a ``.soma`` file; raises :class:`~soma_shm.ParameterError` naming the problem."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ParameterError(f"project file {str(p)!r} does not exist")
    try:
        with open(p, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ParameterError(f"cannot read {str(p)!r}: {_reason(exc)}") from None
    try:
        data, block = persistence._parse_json(raw, points=True)
        if block is not None:
            try:
                return project_from_dict(data, project_path=p, points=block)
            except ParameterError:  # read again the ordinary way: the same error, found in file order
                data, block = persistence._parse_json(raw), None
    except UnicodeDecodeError:
        raise ParameterError(f"{str(p)!r} is not a .soma project (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise ParameterError(f"{str(p)!r} is not a .soma project (invalid JSON at line {exc.lineno}: {exc.msg})") from None
    return project_from_dict(data, project_path=p)
