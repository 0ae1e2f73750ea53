"""Exports through the backend (the points as CSV or JSON, SOMA's MIDI and audio outputs) and the
window's native file dialogs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


from ..errors import ParameterError
from .params import _path_param


class ExportingMixin:
    """Exports and native dialogs of :class:`~soma_shm.app.backend.AppBackend`."""

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
