"""Reading a ``.soma`` file with every partial's points as one numpy block, never as Python floats.

A 10,000-partial project holds about 850,000 points: tens of MB of JSON numbers. The ordinary
parsers (``json``, ``orjson``) make a Python list per point and a float object per number, and
that dominates loading the project. Here pysimdjson parses the file (numbers decoded exactly,
as by any JSON parser) and each partial's ``points`` array is copied straight into one float64
buffer; only the other fields become Python objects.

This fast path takes only the layout that SOMA and soma_shm write: ``data.partials`` a list of
objects, each with a ``points`` array whose every row is three numbers. Anything else (the
library missing, a syntax error, ``NaN`` literals, rows of another length or depth, a
``points`` key elsewhere) makes :func:`parse_with_points` return None, and the caller parses the
whole file the ordinary way, which also phrases any error exactly as before.

Rows are checked on the text itself: deleting whitespace and the characters of numbers leaves
each row of three numbers as ``[,,]``; the file passes when those account for every row found
and every ``points`` value is made of such rows only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

try:  # optional: without it every project is read by the ordinary parser
    import simdjson as _simdjson
except ImportError:  # pragma: no cover - depends on the installation
    _simdjson = None

__all__ = ["PointsBlock", "parse_with_points", "available"]

_NUMBER_AND_SPACE = b" \t\r\n0123456789.eE+-"
_ROW = b"[,,]"
_MARK = b"\x00"  # never in JSON text (control characters are escaped inside strings)
_MISSING = object()


@dataclass(frozen=True)
class PointsBlock:
    """Every partial's points in file order.

    ``rows`` is a read-only ``(sum K, 3)`` float64 array; ``counts[i]`` is how many of its rows
    belong to the i-th entry of ``data.partials`` (0 for a partial with no points).
    """

    rows: np.ndarray
    counts: np.ndarray

    @property
    def starts(self) -> np.ndarray:
        """Index of each partial's first row in :attr:`rows`."""
        out = np.zeros(self.counts.shape[0], dtype=np.int64)
        np.cumsum(self.counts[:-1], out=out[1:])
        return out


def available() -> bool:
    """Whether the fast path can be taken (pysimdjson is installed)."""
    return _simdjson is not None


def parse_with_points(raw: bytes) -> tuple[dict, PointsBlock] | None:
    """``(data, points)``: the ``.soma`` JSON with each partial's ``points`` left out of ``data``
    and gathered in ``points`` instead; None when the fast path does not apply (see the module
    docstring): the caller then parses ``raw`` the ordinary way."""
    if _simdjson is None:
        return None
    try:
        doc = _simdjson.Parser().parse(raw)
    except Exception:  # any refusal: the ordinary parser reads it or says what is wrong
        return None
    try:
        return _split(doc, raw)
    except (TypeError, ValueError, KeyError):  # a value of an unexpected type in the points
        return None


def _plain(value: Any) -> Any:
    if isinstance(value, _simdjson.Object):
        return value.as_dict()
    if isinstance(value, _simdjson.Array):
        return value.as_list()
    return value


def _split(doc: Any, raw: bytes) -> tuple[dict, PointsBlock] | None:
    Object, Array = _simdjson.Object, _simdjson.Array
    if not isinstance(doc, Object):
        return None
    section = doc.get("data")
    items = section.get("partials") if isinstance(section, Object) else None
    if not isinstance(items, Array):
        return None
    data = {k: _plain(doc[k]) for k in doc.keys() if k != "data"}
    data["data"] = {k: _plain(section[k]) for k in section.keys() if k != "partials"}
    entries: list[dict] = []
    counts = np.zeros(len(items), dtype=np.int64)
    buffers = []
    for i, item in enumerate(items):
        if not isinstance(item, Object):
            return None
        pts = item.get("points")
        if not isinstance(pts, Array):
            return None
        entry = {}
        get = item.get
        for key in ("id", "is_muted", "color"):
            v = get(key, _MISSING)
            if v is not _MISSING:
                if isinstance(v, (Object, Array)):
                    return None
                entry[key] = v
        n = len(pts)
        if n:
            buf = pts.as_buffer(of_type="d")
            if memoryview(buf).nbytes != 24 * n:
                return None
            buffers.append(buf)
        counts[i] = n
        entries.append(entry)
    total = int(counts.sum())
    shape = raw.translate(None, _NUMBER_AND_SPACE).replace(_ROW, _MARK)
    if shape.count(_MARK) != total or shape.count(b'"points":') != len(entries):
        return None
    whole = shape.replace(b"," + _MARK, b"")  # a points array of rows only is now "[\0]"
    if whole.count(b'"points":[' + _MARK + b"]") != int(np.count_nonzero(counts)):
        return None
    rows = np.frombuffer(b"".join(buffers), dtype=np.float64).reshape(total, 3)
    data["data"]["partials"] = entries
    return data, PointsBlock(rows, counts)
