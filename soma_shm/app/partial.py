"""One partial of a document (an immutable id, points, colour and mute state), the palette and
the checks of points and colours, and a file's MD5: what the document, its edits and the
``.soma`` files share."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ParameterError

__all__ = ["Partial", "PALETTE", "file_md5"]

PALETTE = ("#4fc3f7", "#ffb74d", "#81c784", "#e57373", "#ba68c8", "#fff176", "#4db6ac", "#f06292")


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
