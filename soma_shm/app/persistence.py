"""Projects on disk: the ``.soma`` format (SOMA's layout), atomic writes, audio next to the
project, relinking moved audio, the recent-projects list and the recovery file.

``.soma`` layout (read and written; the SOMA app reads and writes the same keys)::

    {
      "meta":   {"format_version": "1.0.0", "app_name": "soma_shm", "app_version": "0.1.0",
                 "created_at": "2026-01-02T10:00:00+00:00", "modified_at": ...},
      "source": {"file_path": "take1_assets/take1.wav",      # relative to the project's folder
                 "sample_rate": 48000, "duration_sec": 12.0, "md5_hash": "...",
                 "amplitude_reference": 0.25, "file_size": 1152044},
      "analysis_settings": {
        "spectrogram": {"min_db": -80.0, "max_db": 0.0, "gamma": 1.0,
                        "stft_window_ms": 42.67, "stft_hop_fraction": 0.5, ...},
        "snap": {"wavelet_bandwidth": 8.0, "wavelet_center_freq": 1.5, "bins_per_octave": 96,
                 "time_resolution_ms": 10.0, "freq_window_octaves": 0.5, ...}
      },
      "data": {"partials": [{"id": "p1", "is_muted": false, "color": "#4fc3f7",
                             "points": [[time_s, frequency_hz, amplitude_0_1], ...]}]}
    }

Keys the app does not use (SOMA's ``freq_min``, ``method``, ``playback_settings``, ...) are kept
from the file that was opened and written back unchanged.

Amplitudes. soma_shm's partials carry calibrated linear amplitudes (a sine of amplitude A reads
A). SOMA stores amplitudes normalised to 0-1, 1.0 being the loudest level of the recording. On
writing, every amplitude is divided by a reference ``R`` stored as
``source.amplitude_reference``: ``R`` is the recording's reference level (the loudest magnitude
of its pooled STFT, :attr:`soma_shm.Engine.amp_reference`, what the images show at 0 dB), raised
to the largest partial amplitude if one is louder, so every written value lies in [0, 1]. On
reading, the values are multiplied by the stored ``R``; a file without it (one SOMA wrote) gets
the reference level of its recording once that is open (:meth:`~soma_shm.app.document.ProjectFile.amplitudes_need_reference`).

Reading: a project's points are read into one float64 array (``somajson.py``) and its partials
are views of it, checked all at once; a file of another layout is parsed whole and checked
partial by partial, with the same errors.

Projects written by earlier soma_shm versions (``meta.format == "soma"``, ``source.path``,
wavelet settings in ``spectrogram``, calibrated amplitudes) are read too.

Writes (projects, exports, recovery, the recent list) go through :func:`atomic_write`: a unique
temporary file in the destination's folder, flushed and fsynced, renamed over the destination,
then the folder fsynced; a symbolic link at the destination is refused, and nothing is left
behind when any step fails.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import stat
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ParameterError, ProjectAudioMissing
from .partial import file_md5
from .somajson import parse_with_points

try:  # optional: a faster parser for large projects (the standard one is the fallback)
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the installation
    _orjson = None

__all__ = [
    "FORMAT_VERSION",
    "atomic_write",
    "project_to_dict",
    "write_project",
    "ensure_soma_suffix",
    "bundle_audio",
    "locate_audio",
    "RecentProjects",
    "Recovery",
    "Autosaver",
    "snapshot",
    "config_dir",
    "state_dir",
]

FORMAT_VERSION = "1.0.0"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".m4a", ".wv", ".caf")
# Our settings: where each lives in SOMA's layout and under which name.
SETTINGS_PLACES = {
    "min_db": ("spectrogram", "min_db"),
    "max_db": ("spectrogram", "max_db"),
    "gamma": ("spectrogram", "gamma"),
    "stft_window_ms": ("spectrogram", "stft_window_ms"),
    "stft_hop_fraction": ("spectrogram", "stft_hop_fraction"),
    "wavelet_bandwidth": ("snap", "wavelet_bandwidth"),
    "wavelet_center": ("snap", "wavelet_center_freq"),
    "bins_per_octave": ("snap", "bins_per_octave"),
    "time_resolution_ms": ("snap", "time_resolution_ms"),
    "freq_window_octaves": ("snap", "freq_window_octaves"),
}
# Names earlier soma_shm projects used (any section).
OLD_NAMES = {"wavelet_center": "wavelet_center"}


# ----------------------------------------------------------------------------- atomic write
def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - platforms without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view[: 1 << 22])
        view = view[n:]


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.EROFS:
        return "the disk is read-only"
    return exc.strerror or str(exc)


def atomic_write(path: str | os.PathLike, data: bytes | str, *, overwrite: bool = True) -> str:
    """Write ``data`` to ``path`` so that it holds either the old content or the whole new one.

    A unique temporary file (``O_CREAT | O_EXCL``, so never a link) is created in the same folder,
    written, fsynced and renamed over ``path``; the folder is fsynced after the rename. A symbolic
    link or a non-file at ``path`` is refused. On any failure the temporary file is removed and
    ``path`` is untouched.

    Returns the absolute path written. Raises :class:`~soma_shm.ParameterError` naming the path
    and the reason (missing folder, link, ``overwrite=False`` and the file exists, disk full, no
    permission).
    """
    p = Path(path).expanduser()
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise ParameterError(f"folder {str(folder)!r} does not exist; choose an existing folder")
    if isinstance(data, str):
        data = data.encode("utf-8")
    mode = 0o666 & ~_umask()
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        st = None
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            raise ParameterError(f"{str(p)!r} is a symbolic link; save to the file it points to or choose another name")
        if not stat.S_ISREG(st.st_mode):
            raise ParameterError(f"{str(p)!r} exists and is not a regular file; choose another name")
        if not overwrite:
            raise ParameterError(f"{str(p)!r} already exists; choose another name or allow overwriting it")
        mode = stat.S_IMODE(st.st_mode)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".part", dir=folder)
        try:
            _write_all(fd, data)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p)
        tmp = None
        _fsync_dir(folder)
    except OSError as exc:
        raise ParameterError(f"cannot write {str(p)!r}: {_reason(exc)}; nothing was changed there") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return str(p.resolve())


def ensure_soma_suffix(path: str | os.PathLike) -> Path:
    """``path`` with ``.soma`` appended when it does not end in it (any case)."""
    p = Path(path).expanduser()
    if not p.name or p.name in (".", ".."):
        raise ParameterError(f"path={str(path)!r} names no file; give a file name such as 'take1.soma'")
    return p if p.suffix.lower() == ".soma" else p.with_name(p.name + ".soma")


# ------------------------------------------------------------------------------ the format
def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")


def _parse_iso(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        d = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return d.timestamp()


def _hex6(color: str) -> str:
    """'#rgb' -> '#rrggbb' (SOMA reads six hex digits only)."""
    c = color.lower()
    if len(c) == 4:
        return "#" + "".join(ch * 2 for ch in c[1:])
    return c


def amplitude_reference(doc: Any) -> float:
    """``R`` of the module docstring: the recording's level, at least the loudest partial."""
    ref = doc.amp_reference if doc.amp_reference and math.isfinite(doc.amp_reference) and doc.amp_reference > 0 else 0.0
    loudest = max((float(p.points[:, 2].max()) for p in doc.partials), default=0.0)
    ref = max(ref, loudest)
    return ref if ref > 0 else 1.0


def _relative_source(source: str | None, project_path: Path | None) -> str | None:
    """The source as SOMA expects it: relative to the project's folder when inside it."""
    if not source:
        return None
    if project_path is None:
        return source
    folder = project_path.resolve().parent
    try:
        return Path(source).resolve().relative_to(folder).as_posix()
    except ValueError:
        return str(Path(source).resolve())


def project_to_dict(doc: Any, project_path: str | os.PathLike | None = None, arrays: bool = False) -> dict[str, Any]:
    """The ``.soma`` structure of a :class:`~soma_shm.app.document.SomaDocument`.

    ``project_path`` is where the file will be written: the source path is stored relative to
    its folder when the audio lies inside it. ``arrays=True`` leaves each partial's points as a
    ``(K, 3)`` float64 array (for :func:`_dumps`) instead of nested lists.
    """
    from .. import __version__

    ref = amplitude_reference(doc)
    s = doc.settings.to_dict()
    sections: dict[str, dict] = {"spectrogram": {}, "snap": {}}
    for name, (section, key) in SETTINGS_PLACES.items():
        sections[section][key] = s[name]
    for section, values in doc.extra_settings.items():
        if section in sections and isinstance(values, dict):
            for k, v in values.items():
                sections[section].setdefault(k, v)
    source: dict[str, Any] = {
        # SOMA converts these with int()/float()/str(): unknown values are written as its own
        # defaults (0, 0.0, ""), never null.
        "file_path": _relative_source(doc.source_path, Path(project_path) if project_path else None) or "",
        "sample_rate": int(doc.source_sample_rate) if doc.source_sample_rate else 0,
        "duration_sec": float(doc.source_duration) if doc.source_duration else 0.0,
        "md5_hash": doc.source_md5 or "",
        "amplitude_reference": ref,
    }
    if doc.source_size is not None:
        source["file_size"] = doc.source_size
    partials = []
    for p in doc.partials:
        pts = p.points
        order = np.argsort(pts[:, 0], kind="stable")
        rows = np.column_stack([pts[order, 0], pts[order, 1], pts[order, 2] / ref])
        partials.append({"id": p.id, "is_muted": bool(p.is_muted), "color": _hex6(p.color), "points": rows if arrays else rows.tolist()})
    out: dict[str, Any] = {}
    for key, value in doc.extra.items():  # unknown top-level sections, first (ours win)
        out[key] = value
    meta = dict(out.get("meta") or {}) if isinstance(out.get("meta"), dict) else {}
    meta.update({"format_version": FORMAT_VERSION, "app_name": "soma_shm", "app_version": __version__,
                 "created_at": _iso(doc.created), "modified_at": _iso(time.time())})
    out["meta"] = meta
    out["source"] = source
    out["analysis_settings"] = sections
    out["data"] = {"partials": partials}
    return out


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ParameterError(f"{where}={value!r} must be a finite number")
    return float(value)


def _settings_from(analysis: Any) -> tuple[Any, dict]:
    from ..settings import AnalysisSettings

    if not isinstance(analysis, dict):
        raise ParameterError(".soma field 'analysis_settings' must be an object")
    if not any(isinstance(analysis.get(k), dict) for k in ("spectrogram", "snap")) and analysis:
        analysis = {"spectrogram": analysis, "snap": analysis}  # a flat (oldest SOMA) layout
    values: dict[str, Any] = {}
    extra: dict[str, dict] = {}
    lookup = {(section, key): name for name, (section, key) in SETTINGS_PLACES.items()}
    for section in ("spectrogram", "snap"):
        sec = analysis.get(section) or {}
        if not isinstance(sec, dict):
            raise ParameterError(f".soma field 'analysis_settings.{section}' must be an object")
        for k, v in sec.items():
            name = lookup.get((section, k))
            if name is None and k in SETTINGS_PLACES:  # ours, in the other section (earlier soma_shm)
                name = k
            if name is None and k == "wavelet_center_freq":
                name = "wavelet_center"
            if name is not None:
                values.setdefault(name, v)
            elif k == "wavelet":
                w = AnalysisSettings.from_wavelet(v)
                values.setdefault("wavelet_bandwidth", w.wavelet_bandwidth)
                values.setdefault("wavelet_center", w.wavelet_center)
            else:
                extra.setdefault(section, {})[k] = v
    bpo = values.get("bins_per_octave")
    if isinstance(bpo, float) and bpo.is_integer():
        values["bins_per_octave"] = int(bpo)
    try:
        return AnalysisSettings(**values), extra
    except ParameterError as exc:
        raise ParameterError(f"analysis_settings in the project: {exc}") from None


def _parse_json(raw: bytes, points: bool = False) -> Any:
    """JSON from bytes: orjson where installed (a 10,000-partial project is tens of MB of numbers,
    and parsing dominates opening it), else, or for what orjson refuses (NaN literals, bad
    UTF-8), the standard parser, whose errors say where the text is wrong.

    ``points=True`` (a whole ``.soma`` file): ``(data, block)``, where ``block`` is a
    :class:`~soma_shm.app.somajson.PointsBlock` of every partial's points, read without a Python
    object per number, when the file has the usual layout (their ``points`` are then left out
    of ``data``), else None and ``data`` is the whole file."""
    if points:
        fast = parse_with_points(raw)
        if fast is not None:
            return fast
        return _parse_json(raw), None
    if _orjson is not None:
        try:
            return _orjson.loads(raw)
        except _orjson.JSONDecodeError:
            pass
    return json.loads(raw.decode("utf-8"))


def _dumps(data: Any) -> bytes:
    """JSON bytes; point arrays written straight from numpy by orjson where installed (saving a
    10,000-partial project: about 0.3 s instead of 10 s with the standard encoder), else by the
    standard encoder. Floats are written in their shortest exact form either way."""
    if _orjson is not None:
        return _orjson.dumps(data, option=_orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(data, allow_nan=False, default=lambda a: a.tolist()).encode("utf-8")


def write_project(doc: Any, path: str | os.PathLike, *, overwrite: bool = True) -> str:
    """Write ``doc`` as a ``.soma`` file atomically (see :func:`atomic_write`)."""
    p = Path(path).expanduser()
    if p.suffix.lower() != ".soma":
        raise ParameterError(f"project path {str(p)!r} must end in .soma")
    text = _dumps(project_to_dict(doc, p, arrays=True))
    return atomic_write(p, text, overwrite=overwrite)


# --------------------------------------------------------------------------- audio on disk
def _safe_name(name: str) -> str:
    keep = "".join(c for c in Path(name).name if c.isalnum() or c in "._- ")[:120].strip(" .")
    return keep or "audio.wav"


def bundle_audio(source: str, project_path: str | os.PathLike, md5: str | None, name: str | None = None) -> str:
    """Copy ``source`` into ``<project>_assets/`` beside the project; returns the copy's path.

    A file of the same name and MD5 already there is reused; another of the same name is kept
    and the copy gets a numbered name. The copy is written atomically.
    """
    p = Path(project_path).expanduser().resolve()
    assets = p.parent / f"{p.stem}_assets"
    try:
        assets.mkdir(exist_ok=True)
    except OSError as exc:
        raise ParameterError(f"cannot create {str(assets)!r}: {_reason(exc)}") from None
    if assets.is_symlink() or not assets.is_dir():
        raise ParameterError(f"{str(assets)!r} is not a folder; move it away to save the project's audio there")
    base = _safe_name(name or Path(source).name)
    stem, suffix = os.path.splitext(base)
    for i in range(1000):
        target = assets / (base if i == 0 else f"{stem}_{i}{suffix}")
        if not os.path.lexists(target):
            break
        if target.is_file() and not target.is_symlink() and md5 and file_md5(target) == md5:
            return str(target)
    else:  # pragma: no cover
        raise ParameterError(f"{str(assets)!r} holds too many files named {base!r}")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=assets)
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 22)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
        tmp = None
        _fsync_dir(assets)
    except OSError as exc:
        raise ParameterError(f"cannot copy the audio to {str(target)!r}: {_reason(exc)}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return str(target)


def locate_audio(source: str | None, md5: str | None, project_path: str | os.PathLike | None,
                 search: list[str] | tuple[str, ...] = (), size: int | None = None) -> str:
    """Where the project's audio is now.

    ``source`` when it exists; otherwise a file with the same MD5 beside the project, in its
    ``<name>_assets/`` folder, or in one of the ``search`` folders (same name first, then any
    audio file there of the stored size). Raises :class:`~soma_shm.errors.ProjectAudioMissing`
    naming the places looked at.
    """
    if source and os.path.isfile(source):
        return source
    name = Path(source).name if source else None
    places: list[Path] = []
    if project_path is not None:
        pp = Path(project_path).expanduser().resolve()
        places += [pp.parent, pp.parent / f"{pp.stem}_assets"]
    for s in search:
        if not isinstance(s, str) or not s:
            raise ParameterError(f"search folder {s!r} must be a folder path")
        q = Path(s).expanduser()
        if not q.is_dir():
            raise ParameterError(f"search folder {s!r} does not exist")
        places.append(q.resolve())
    seen: set[str] = set()
    for folder in places:
        if not folder.is_dir():
            continue
        candidates: list[Path] = []
        if name and (folder / name).is_file():
            candidates.append(folder / name)
        if md5:
            try:
                entries = sorted(folder.iterdir())
            except OSError:
                entries = []
            for e in entries:
                if e.suffix.lower() in AUDIO_SUFFIXES and e.is_file() and e not in candidates:
                    if size is None or e.stat().st_size == size:
                        candidates.append(e)
        for c in candidates:
            key = str(c.resolve())
            if key in seen:
                continue
            seen.add(key)
            if md5 is None:  # nothing to compare: the same name is the best there is
                return key
            try:
                if file_md5(c) == md5:
                    return key
            except OSError:
                continue
    where = ", ".join(repr(str(p)) for p in places) or "nowhere (the project was never saved)"
    raise ProjectAudioMissing(
        f"the project's audio {name or source!r} was not found at {source!r} nor in {where}; "
        "choose the folder that holds it (files are matched by content)")


# ----------------------------------------------------------------- recent list and recovery
def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/soma_shm`` (default ``~/.config/soma_shm``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "soma_shm"


def state_dir() -> Path:
    """``$XDG_STATE_HOME/soma_shm`` (default ``~/.local/state/soma_shm``): recovery files."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "soma_shm"


class RecentProjects:
    """The recently opened or saved projects, newest first, in ``config_dir()/recent.json``."""

    def __init__(self, path: str | os.PathLike | None = None, limit: int = 10) -> None:
        self.path = Path(path) if path is not None else config_dir() / "recent.json"
        self.limit = limit
        self._lock = threading.Lock()

    def list(self) -> list[dict[str, Any]]:
        """``[{path, name, opened_at, exists}]``; a missing or damaged list reads as empty."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        items = data.get("projects") if isinstance(data, dict) else None
        out = []
        for it in items if isinstance(items, list) else []:
            if isinstance(it, dict) and isinstance(it.get("path"), str):
                out.append({"path": it["path"], "name": Path(it["path"]).name,
                            "opened_at": it.get("opened_at") if isinstance(it.get("opened_at"), str) else None,
                            "exists": os.path.isfile(it["path"])})
        return out[: self.limit]

    def add(self, project: str | os.PathLike) -> None:
        """Put ``project`` first. A list that cannot be written is left as it was (logged)."""
        p = str(Path(project).expanduser().resolve())
        with self._lock:
            items = [{"path": it["path"], "opened_at": it["opened_at"]} for it in self.list() if it["path"] != p]
            items.insert(0, {"path": p, "opened_at": _iso(time.time())})
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(self.path, json.dumps({"projects": items[: self.limit]}, indent=1))
            except (OSError, ParameterError):
                import logging

                logging.getLogger("soma_shm.app").warning("cannot update the recent projects list %s", self.path)


class Recovery:
    """This run's recovery file, ``state_dir()/recovery-<pid>.soma``, and offers of others.

    The recovery file is a ``.soma`` project with an extra ``recovery`` section (the project's
    own path, when it has one, and when it was written). Audio that lives in the app's temporary
    folder is copied once beside it (``recovery-<pid>_assets/``) so the recovery outlives it.
    """

    def __init__(self, folder: str | os.PathLike | None = None, temporary: str | None = None) -> None:
        self.folder = Path(folder) if folder is not None else state_dir()
        self.path = self.folder / f"recovery-{os.getpid()}.soma"
        self.temporary = temporary  # audio under this folder is copied
        self._lock = threading.Lock()
        self._copies: dict = {}  # (temporary audio, md5) -> its copy beside the recovery file

    def write(self, doc: Any) -> str:
        """Write ``doc`` (a snapshot) as this run's recovery file; returns its path."""
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            snap = snapshot(doc)
            if snap.source_path and self.temporary and _inside(snap.source_path, self.temporary):
                key = (snap.source_path, snap.source_md5)
                copy = self._copies.get(key)
                if copy is None or not os.path.isfile(copy):  # copied once per recording, not per write
                    copy = self._copies[key] = bundle_audio(snap.source_path, self.path, snap.source_md5)
                snap.source_path = copy
            data = project_to_dict(snap, self.path, arrays=True)
            data["recovery"] = {"project_path": doc.project_path, "written_at": _iso(time.time()),
                                "source_path": snap.source_path}
            return atomic_write(self.path, _dumps(data))

    def discard(self, path: str | os.PathLike | None = None) -> None:
        """Remove a recovery file (this run's by default) and its audio copies."""
        target = Path(path) if path is not None else self.path
        if target.parent.resolve() != self.folder.resolve() or not target.name.startswith("recovery-"):
            raise ParameterError(f"{str(target)!r} is not a recovery file of this app")
        with self._lock:
            try:
                target.unlink()
            except FileNotFoundError:
                pass
            shutil.rmtree(target.with_name(target.stem + "_assets"), ignore_errors=True)

    def count(self) -> int:
        """How many recovery files of ended runs there are (cheap: nothing is read)."""
        n = 0
        try:
            entries = list(self.folder.glob("recovery-*.soma"))
        except OSError:
            return 0
        for f in entries:
            try:
                pid = int(f.stem.split("-", 1)[1])
            except (IndexError, ValueError):
                continue
            n += pid != os.getpid() and not _alive(pid)
        return n

    def offers(self) -> list[dict[str, Any]]:
        """Recovery files left by runs that are no longer alive, newest first."""
        out = []
        try:
            entries = list(self.folder.glob("recovery-*.soma"))
        except OSError:
            return []
        for f in entries:
            try:
                pid = int(f.stem.split("-", 1)[1])
            except (IndexError, ValueError):
                continue
            if pid == os.getpid() or _alive(pid):
                continue
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
                rec = data.get("recovery") or {}
                n = len((data.get("data") or {}).get("partials") or [])
            except (OSError, ValueError, AttributeError):
                continue
            out.append({"path": str(f), "project_path": rec.get("project_path"), "written_at": rec.get("written_at"),
                        "partials": n, "mtime": f.stat().st_mtime})
        out.sort(key=lambda o: -o["mtime"])
        return out


def snapshot(doc: Any) -> Any:
    """A copy of ``doc``'s saved content (no history) that later edits do not touch: partials are
    immutable, so it holds references. Take it while the document cannot change."""
    snap = type(doc)(settings=doc.settings, source_path=doc.source_path, source_md5=doc.source_md5,
                        project_path=doc.project_path, extra_settings=dict(doc.extra_settings), created=doc.created)
    snap.partials = tuple(doc.partials)
    for k in ("source_sample_rate", "source_duration", "source_size", "amp_reference"):
        setattr(snap, k, getattr(doc, k))
    snap.extra = dict(doc.extra)
    snap.dirty = doc.dirty
    return snap


def _inside(path: str, folder: str) -> bool:
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited: its recovery file is free
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


class Autosaver:
    """Writes the recovery file in the background: ``debounce_s`` after the last edit, and at
    most ``max_delay_s`` after the first unsaved one while edits keep coming.

    ``snapshot()`` returns the document to write (or None when it has no unsaved changes); it is
    called on this thread and must be cheap (partials are immutable: a snapshot is references).
    """

    def __init__(self, snapshot: Callable[[], Any], write: Callable[[Any], Any],
                 debounce_s: float = 2.0, max_delay_s: float = 30.0) -> None:
        self._snapshot, self._write = snapshot, write
        self.debounce_s, self.max_delay_s = debounce_s, max_delay_s
        self._cond = threading.Condition()
        self._first: float | None = None
        self._last: float | None = None
        self._stopped = False
        self.writes = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._loop, name="soma-app-autosave", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """An edit happened."""
        with self._cond:
            now = time.monotonic()
            if self._first is None:
                self._first = now
            self._last = now
            self._cond.notify()

    def flush(self) -> bool:
        """Write now if there is anything unsaved (on this thread); True when written."""
        with self._cond:
            self._first = self._last = None
        return self._save()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def _save(self) -> bool:
        try:
            doc = self._snapshot()
            if doc is None:
                return False
            self._write(doc)
            self.writes += 1
            self.last_error = None
            return True
        except Exception as exc:  # the next edit tries again; the page can show last_error
            import logging

            self.last_error = str(exc)
            logging.getLogger("soma_shm.app").warning("autosave failed: %s", exc)
            return False

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if self._first is None:
                        self._cond.wait()
                        continue
                    now = time.monotonic()
                    due = min(self._last + self.debounce_s, self._first + self.max_delay_s)
                    if now >= due:
                        break
                    self._cond.wait(due - now)
                if self._stopped:
                    return
                self._first = self._last = None
            self._save()
