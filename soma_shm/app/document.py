"""The app's document: source audio, analysis settings, partials and the edit history.

A :class:`SomaDocument` is plain data kept by the backend (the page only ever shows it): the
source file (path and MD5), the :class:`~soma_shm.AnalysisSettings`, the partials and an
undo/redo history of partial edits. It saves and loads ``.soma`` projects in the SOMA app's JSON
layout and exports partials as CSV or JSON.

``.soma`` layout (version 1)::

    {
      "meta": {"format": "soma", "version": 1, "app": "soma_shm 0.1.0", "created": ..., "modified": ...},
      "source": {"path": "/abs/take1.wav", "md5": "..."},
      "analysis_settings": {
        "spectrogram": {"wavelet_bandwidth": 8.0, "wavelet_center": 1.5, "min_db": -80.0,
                        "max_db": 0.0, "gamma": 1.0, "stft_window_ms": 42.67, "stft_hop_fraction": 0.5},
        "snap": {"bins_per_octave": 96, "time_resolution_ms": 10.0, "freq_window_octaves": 0.5}
      },
      "data": {"partials": [{"id": "p1", "is_muted": false, "color": "#4fc3f7",
                             "points": [[t, f, a], ...]}]}
    }

Loading is tolerant where SOMA projects may differ (missing settings take the defaults, a
``wavelet`` name such as ``"cmor8.0-1.5"`` is understood, unknown setting keys are kept aside and
written back) and strict where data would be wrong (points that are not finite ``[t, f, a]``
rows, duplicate ids): those raise :class:`~soma_shm.ParameterError` naming the partial.

History: every edit (add, delete, mute, recolour, clear, load of partials) records the partial
list before it; ``undo``/``redo`` swap whole snapshots. Partials are immutable, so a snapshot is a
tuple of references and costs nothing to keep.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import ParameterError
from ..settings import AnalysisSettings

__all__ = ["Partial", "SomaDocument", "SPECTROGRAM_KEYS", "SNAP_KEYS", "PALETTE", "file_md5"]

FORMAT_VERSION = 1
SPECTROGRAM_KEYS = ("wavelet_bandwidth", "wavelet_center", "min_db", "max_db", "gamma", "stft_window_ms", "stft_hop_fraction")
SNAP_KEYS = ("bins_per_octave", "time_resolution_ms", "freq_window_octaves")
PALETTE = ("#4fc3f7", "#ffb74d", "#81c784", "#e57373", "#ba68c8", "#fff176", "#4db6ac", "#f06292")
HISTORY_LIMIT = 500


def file_md5(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """MD5 hex digest of a file, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _color(value: Any, where: str) -> str:
    if not (isinstance(value, str) and len(value) in (4, 7) and value.startswith("#")):
        raise ParameterError(f"{where}: color={value!r} must be '#rgb' or '#rrggbb'")
    try:
        int(value[1:], 16)
    except ValueError:
        raise ParameterError(f"{where}: color={value!r} must be '#rgb' or '#rrggbb'") from None
    return value.lower()


def _points(value: Any, where: str) -> np.ndarray:
    try:
        p = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError(f"{where}: points must be a list of [time, frequency, amplitude] rows") from None
    if p.ndim != 2 or p.shape[1] != 3 or p.shape[0] < 1:
        raise ParameterError(
            f"{where}: points have shape {p.shape}; expected (K >= 1, 3) rows of [time s, frequency Hz, amplitude]"
        )
    if not np.isfinite(p).all():
        bad = int(np.flatnonzero(~np.isfinite(p).all(axis=1))[0])
        raise ParameterError(f"{where}: point {bad} is not finite ({p[bad].tolist()})")
    if (p[:, 1] <= 0).any():
        bad = int(np.flatnonzero(p[:, 1] <= 0)[0])
        raise ParameterError(f"{where}: point {bad} has frequency {p[bad, 1]} Hz; frequencies must be positive")
    p.flags.writeable = False
    return p


@dataclass(frozen=True)
class Partial:
    """One partial: ``points`` is a read-only ``(K, 3)`` float64 array of (time s, frequency Hz, amplitude)."""

    id: str
    points: np.ndarray
    color: str = PALETTE[0]
    is_muted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "is_muted": bool(self.is_muted),
            "color": self.color,
            "points": self.points.tolist(),
        }

    def summary(self) -> dict[str, Any]:
        """Small description for lists (no points)."""
        p = self.points
        return {
            "id": self.id,
            "is_muted": bool(self.is_muted),
            "color": self.color,
            "n": int(p.shape[0]),
            "t0": float(p[0, 0]),
            "t1": float(p[-1, 0]),
            "f_mean": float(np.exp(np.mean(np.log(p[:, 1])))),
            "amp_max": float(np.max(p[:, 2])),
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
    partials: tuple[Partial, ...] = ()
    extra_settings: dict = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    dirty: bool = False
    _undo: list = field(default_factory=list, repr=False)
    _redo: list = field(default_factory=list, repr=False)
    _next_id: int = 1

    # ------------------------------------------------------------------ source and settings
    def set_source(self, path: str | None, md5: str | None = None) -> None:
        """Point the document at an audio file (or an in-memory array when ``path`` is None)."""
        if path is None:
            self.source_path, self.source_md5 = None, md5
            return
        self.source_path = str(Path(path).resolve())
        self.source_md5 = md5 if md5 is not None else file_md5(self.source_path)

    def set_settings(self, settings: AnalysisSettings) -> None:
        if not isinstance(settings, AnalysisSettings):
            raise ParameterError(f"settings must be an AnalysisSettings, got {type(settings).__name__}")
        self.settings = settings
        self.dirty = True

    # ---------------------------------------------------------------------------- partials
    def partial(self, pid: str) -> Partial:
        for p in self.partials:
            if p.id == pid:
                return p
        raise ParameterError(f"no partial with id={pid!r}; existing ids: {[p.id for p in self.partials][:20]}")

    def _new_id(self) -> str:
        ids = {p.id for p in self.partials}
        while f"p{self._next_id}" in ids:
            self._next_id += 1
        pid = f"p{self._next_id}"
        self._next_id += 1
        return pid

    def _commit(self, partials: Iterable[Partial], label: str) -> None:
        self._undo.append((label, self.partials))
        del self._undo[:-HISTORY_LIMIT]
        self._redo.clear()
        self.partials = tuple(partials)
        self.dirty = True

    def add_partial(self, points: Any, color: str | None = None, is_muted: bool = False) -> Partial:
        """Add a partial from ``(K, 3)`` points (an undoable edit); returns it."""
        pid = self._new_id()
        pts = _points(points, f"partial {pid}")
        if color is None:
            color = PALETTE[(self._next_id - 2) % len(PALETTE)]
        partial = Partial(pid, pts, _color(color, f"partial {pid}"), bool(is_muted))
        self._commit((*self.partials, partial), f"add {pid}")
        return partial

    def delete_partials(self, ids: Iterable[str]) -> int:
        """Delete partials by id (one undoable edit); unknown ids raise. Returns how many."""
        ids = list(ids)
        if not ids:
            raise ParameterError("ids is empty; select at least one partial to delete")
        for pid in ids:
            self.partial(pid)
        gone = set(ids)
        keep = tuple(p for p in self.partials if p.id not in gone)
        removed = len(self.partials) - len(keep)
        self._commit(keep, f"delete {', '.join(sorted(gone))}")
        return removed

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
        self._commit(tuple(new if p.id == pid else p for p in self.partials), f"edit {pid}")
        return new

    def clear_partials(self) -> None:
        """Remove every partial (an undoable edit)."""
        if self.partials:
            self._commit((), "clear")

    # ----------------------------------------------------------------------------- history
    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self) -> str:
        """Undo the last edit; returns its label. Raises ParameterError when there is none."""
        if not self._undo:
            raise ParameterError("nothing to undo")
        label, partials = self._undo.pop()
        self._redo.append((label, self.partials))
        self.partials = partials
        self.dirty = True
        return label

    def redo(self) -> str:
        """Redo the last undone edit; returns its label. Raises ParameterError when there is none."""
        if not self._redo:
            raise ParameterError("nothing to redo")
        label, partials = self._redo.pop()
        self._undo.append((label, self.partials))
        self.partials = partials
        self.dirty = True
        return label

    # ------------------------------------------------------------------------- save / load
    def to_dict(self) -> dict[str, Any]:
        """The ``.soma`` JSON structure."""
        s = self.settings.to_dict()
        spectrogram = {k: s[k] for k in SPECTROGRAM_KEYS}
        spectrogram["wavelet"] = self.settings.wavelet
        snap = {k: s[k] for k in SNAP_KEYS}
        for section, values in self.extra_settings.items():
            target = spectrogram if section == "spectrogram" else snap if section == "snap" else None
            if target is not None:
                for k, v in values.items():
                    target.setdefault(k, v)
        from .. import __version__

        return {
            "meta": {
                "format": "soma",
                "version": FORMAT_VERSION,
                "app": f"soma_shm {__version__}",
                "created": _iso(self.created),
                "modified": _iso(time.time()),
            },
            "source": {"path": self.source_path, "md5": self.source_md5},
            "analysis_settings": {"spectrogram": spectrogram, "snap": snap},
            "data": {"partials": [p.to_dict() for p in self.partials]},
        }

    def save(self, path: str | os.PathLike) -> str:
        """Write the project as ``.soma`` JSON (atomically: a temporary file then a rename)."""
        p = Path(path)
        if p.suffix.lower() != ".soma":
            raise ParameterError(f"project path {str(p)!r} must end in .soma")
        if not p.parent.is_dir():
            raise ParameterError(f"folder {str(p.parent)!r} does not exist; choose an existing folder")
        tmp = p.with_name(p.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)
        os.replace(tmp, p)
        self.project_path = str(p.resolve())
        self.dirty = False
        return self.project_path

    @classmethod
    def from_dict(cls, data: Any, project_path: str | None = None) -> "SomaDocument":
        """Build a document from ``.soma`` JSON; raises ParameterError naming what is wrong."""
        if not isinstance(data, dict):
            raise ParameterError(f"a .soma project is a JSON object, got {type(data).__name__}")
        for key in ("source", "data"):
            if key in data and not isinstance(data[key], dict):
                raise ParameterError(f".soma field {key!r} must be an object")
        source = data.get("source") or {}
        analysis = data.get("analysis_settings") or {}
        if not isinstance(analysis, dict):
            raise ParameterError(".soma field 'analysis_settings' must be an object")
        settings, extra = _settings_from_sections(analysis)
        doc = cls(settings=settings, source_path=source.get("path"), source_md5=source.get("md5"),
                  project_path=project_path, extra_settings=extra)
        created = (data.get("meta") or {}).get("created")
        if isinstance(created, str):
            try:
                doc.created = time.mktime(time.strptime(created[:19], "%Y-%m-%dT%H:%M:%S"))
            except ValueError:
                pass
        raw = (data.get("data") or {}).get("partials", [])
        if not isinstance(raw, list):
            raise ParameterError(".soma field 'data.partials' must be a list")
        partials, seen = [], set()
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
            color = _color(item.get("color", PALETTE[i % len(PALETTE)]), f"partial {pid}")
            partials.append(Partial(pid, _points(item.get("points"), f"partial {pid}"), color, muted))
        doc.partials = tuple(partials)
        nums = [int(p.id[1:]) for p in partials if p.id[:1] == "p" and p.id[1:].isdigit()]
        doc._next_id = max(nums, default=0) + 1
        return doc

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SomaDocument":
        """Read a ``.soma`` project."""
        p = Path(path)
        if not p.is_file():
            raise ParameterError(f"project file {str(p)!r} does not exist")
        try:
            with open(p, encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ParameterError(f"{str(p)!r} is not a .soma project (invalid JSON: {exc})") from None
        return cls.from_dict(data, project_path=str(p.resolve()))

    def source_matches(self) -> bool | None:
        """Whether the source file on disk still has the saved MD5 (None if unknown/missing)."""
        if not self.source_path or not self.source_md5 or not os.path.isfile(self.source_path):
            return None
        return file_md5(self.source_path) == self.source_md5

    # ------------------------------------------------------------------------------ export
    def export_csv(self, include_muted: bool = True) -> str:
        """Partials as CSV: one row per point, ``partial_id,time_s,frequency_hz,amplitude,is_muted``."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["partial_id", "time_s", "frequency_hz", "amplitude", "is_muted"])
        for p in self.partials:
            if p.is_muted and not include_muted:
                continue
            for t, f, a in p.points:
                w.writerow([p.id, repr(float(t)), repr(float(f)), repr(float(a)), int(p.is_muted)])
        return buf.getvalue()

    def export_json(self, include_muted: bool = True) -> str:
        """Partials as JSON: ``{"source": ..., "partials": [{id, is_muted, color, points}]}``."""
        parts = [p.to_dict() for p in self.partials if include_muted or not p.is_muted]
        return json.dumps({"source": {"path": self.source_path, "md5": self.source_md5}, "partials": parts})

    def export(self, path: str | os.PathLike, include_muted: bool = True) -> str:
        """Write partials to ``path``; the format follows the suffix (``.csv`` or ``.json``)."""
        p = Path(path)
        suffix = p.suffix.lower()
        if suffix not in (".csv", ".json"):
            raise ParameterError(f"export path {str(p)!r} must end in .csv or .json")
        if not p.parent.is_dir():
            raise ParameterError(f"folder {str(p.parent)!r} does not exist; choose an existing folder")
        text = self.export_csv(include_muted) if suffix == ".csv" else self.export_json(include_muted)
        p.write_text(text, encoding="utf-8")
        return str(p.resolve())

    # ------------------------------------------------------------------------------- views
    def state(self) -> dict[str, Any]:
        """What the page shows: partials (with points), history flags, source and settings."""
        return {
            "partials": [p.to_dict() for p in self.partials],
            "can_undo": self.can_undo,
            "can_redo": self.can_redo,
            "undo_label": self._undo[-1][0] if self._undo else None,
            "redo_label": self._redo[-1][0] if self._redo else None,
            "dirty": self.dirty,
            "project_path": self.project_path,
            "source": {"path": self.source_path, "md5": self.source_md5},
            "settings": self.settings.to_dict(),
        }


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ts))


def _settings_from_sections(analysis: dict) -> tuple[AnalysisSettings, dict]:
    values: dict[str, Any] = {}
    extra: dict[str, dict] = {}
    for section, keys in (("spectrogram", SPECTROGRAM_KEYS), ("snap", SNAP_KEYS)):
        sec = analysis.get(section) or {}
        if not isinstance(sec, dict):
            raise ParameterError(f".soma field 'analysis_settings.{section}' must be an object")
        for k, v in sec.items():
            if k in keys:
                values[k] = v
            elif k == "wavelet" and section == "spectrogram":
                w = AnalysisSettings.from_wavelet(v)
                values.setdefault("wavelet_bandwidth", w.wavelet_bandwidth)
                values.setdefault("wavelet_center", w.wavelet_center)
            else:
                extra.setdefault(section, {})[k] = v
    try:
        return AnalysisSettings(**values), extra
    except TypeError as exc:  # pragma: no cover - keys are filtered above
        raise ParameterError(f"bad analysis_settings: {exc}") from None
    except ParameterError as exc:
        raise ParameterError(f"analysis_settings in the project: {exc}") from None
