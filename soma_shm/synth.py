"""Sine resynthesis of partials: one sine per partial, summed.

:func:`render_partials` renders a list of partials (``(K, 3)`` rows of time s, frequency Hz,
amplitude) into a float32 buffer, optionally time-stretched (pitch kept). :class:`Resynthesis`
keeps the mix of a whole document and updates it edit by edit: a changed partial's old samples
are subtracted and its new ones added, so an edit costs the length of the partials it touches,
not of the document. Muted partials are silent.

The phase of every partial starts at 0 at its first point and is the integral of its frequency;
frequency and amplitude are monotone cubic curves through the points, with a 5 ms smoothstep
fade at both ends (see :mod:`soma_shm.kernels.synth`).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .errors import ParameterError

__all__ = ["render_partials", "Resynthesis", "EngineResynthesis", "PartialArrays", "pack_partials", "synth_request", "FADE_MS",
           "MIN_STRETCH", "MAX_STRETCH"]

FADE_MS = 5.0
SERIAL_PARTIALS = 4  # renders of at most this many partials stay on the calling thread
MIN_STRETCH = 0.125
MAX_STRETCH = 8.0


@dataclass(frozen=True)
class PartialArrays:
    """Partials packed for the kernel: knots of partial ``p`` are ``offsets[p]:offsets[p+1]``."""

    t: np.ndarray
    f: np.ndarray
    a: np.ndarray
    mf: np.ndarray
    ma: np.ndarray
    phase: np.ndarray
    offsets: np.ndarray

    @property
    def count(self) -> int:
        return self.offsets.shape[0] - 1

    def knots(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(t, f, a, offsets)``: all that :meth:`from_knots` needs to rebuild this pack."""
        lo, hi = int(self.offsets[0]), int(self.offsets[-1])
        return self.t[lo:hi], self.f[lo:hi], self.a[lo:hi], self.offsets - lo

    @classmethod
    def from_knots(cls, t: np.ndarray, f: np.ndarray, a: np.ndarray, offsets: np.ndarray) -> "PartialArrays":
        """A pack from checked knots (slopes and knot phases recomputed: the same values, bit
        for bit, as the pack they came from)."""
        from .kernels import synth as k

        t, f, a = (np.ascontiguousarray(x, dtype=np.float64) for x in (t, f, a))
        offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        mf, ma, phase = np.empty_like(t), np.empty_like(t), np.empty_like(t)
        if offsets.shape[0] > 1:
            (k.prepare if offsets.shape[0] > SERIAL_PARTIALS + 1 else k.prepare_serial)(t, f, a, offsets, mf, ma, phase)
        return cls(t, f, a, mf, ma, phase, offsets)

    @classmethod
    def empty(cls) -> "PartialArrays":
        z = np.zeros(0)
        return cls(z, z, z, z, z, z, np.zeros(1, dtype=np.int64))


def _check_points(points: Any, where: str, sample_rate: float | None) -> np.ndarray:
    try:
        p = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError(f"{where}: points must be (K, 3) rows of [time s, frequency Hz, amplitude]") from None
    if p.ndim != 2 or p.shape[1] != 3 or p.shape[0] < 1:
        raise ParameterError(f"{where}: points have shape {p.shape}; expected (K >= 1, 3) rows of [time, frequency, amplitude]")
    if not np.isfinite(p).all():
        bad = int(np.flatnonzero(~np.isfinite(p).all(axis=1))[0])
        raise ParameterError(f"{where}: point {bad} is not finite ({p[bad].tolist()})")
    if (p[:, 0] < 0).any():
        bad = int(np.flatnonzero(p[:, 0] < 0)[0])
        raise ParameterError(f"{where}: point {bad} has time {p[bad, 0]} s; times must be >= 0")
    if p.shape[0] > 1 and not (np.diff(p[:, 0]) > 0).all():
        bad = int(np.flatnonzero(np.diff(p[:, 0]) <= 0)[0]) + 1
        raise ParameterError(f"{where}: point {bad} (time {p[bad, 0]} s) is not after the one before; "
                             "sort the points by time and drop repeated times")
    if (p[:, 1] <= 0).any():
        bad = int(np.flatnonzero(p[:, 1] <= 0)[0])
        raise ParameterError(f"{where}: point {bad} has frequency {p[bad, 1]} Hz; frequencies must be positive")
    if sample_rate is not None and (p[:, 1] >= 0.5 * sample_rate).any():
        bad = int(np.flatnonzero(p[:, 1] >= 0.5 * sample_rate)[0])
        raise ParameterError(f"{where}: point {bad} has frequency {p[bad, 1]} Hz, at or above Nyquist "
                             f"({0.5 * sample_rate} Hz) for sample_rate={sample_rate}; render at a higher rate")
    if (p[:, 2] < 0).any():
        bad = int(np.flatnonzero(p[:, 2] < 0)[0])
        raise ParameterError(f"{where}: point {bad} has amplitude {p[bad, 2]}; amplitudes must be >= 0")
    return p


def pack_partials(partials: Iterable[Any], sample_rate: float | None = None) -> PartialArrays:
    """Validate and pack partials (each ``(K, 3)``) for the synthesis kernel.

    Raises ParameterError naming the partial (by position) and the point that is wrong. The
    checks run once over all points together; only a failure looks at partials one by one.
    """
    from .kernels import synth as k

    arrays = []
    for i, p in enumerate(partials):
        x = p if isinstance(p, np.ndarray) and p.dtype == np.float64 else None
        if x is None or x.ndim != 2 or x.shape[1] != 3 or x.shape[0] < 1:
            x = _check_points(p, f"partial #{i}", sample_rate)
        arrays.append(x)
    counts = np.array([x.shape[0] for x in arrays], dtype=np.int64)
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    if arrays:
        t, f, a = (np.concatenate([x[:, c] for x in arrays]) for c in range(3))
    else:
        t = f = a = np.zeros(0)
    ok = bool(np.isfinite(t).all() and np.isfinite(f).all() and np.isfinite(a).all()
              and (t >= 0).all() and (f > 0).all() and (a >= 0).all())
    if ok and sample_rate is not None:
        ok = bool((f < 0.5 * sample_rate).all())
    if ok and t.shape[0] > 1:
        rising = np.diff(t) > 0
        rising[offsets[1:-1] - 1] = True  # a partial's first point need not follow the last one's
        ok = bool(rising.all())
    if not ok:
        for i, x in enumerate(arrays):
            _check_points(x, f"partial #{i}", sample_rate)
    mf = np.empty_like(t)  # every element is written by prepare
    ma = np.empty_like(t)
    phase = np.empty_like(t)
    if arrays:
        (k.prepare if offsets.shape[0] > SERIAL_PARTIALS + 1 else k.prepare_serial)(t, f, a, offsets, mf, ma, phase)
    return PartialArrays(t, f, a, mf, ma, phase, offsets)


def _points_of(packed: PartialArrays, n: int) -> np.ndarray:
    """The checked ``(K, 3)`` points of partial ``n`` of a pack (a read-only copy)."""
    lo, hi = packed.offsets[n], packed.offsets[n + 1]
    p = np.stack([packed.t[lo:hi], packed.f[lo:hi], packed.a[lo:hi]], axis=1)
    p.flags.writeable = False
    return p


def _check_render(sample_rate: Any, stretch: Any, fade_ms: Any) -> tuple[float, float, float]:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float, np.integer, np.floating)) \
            or not 8000 <= float(sample_rate) <= 384000:
        raise ParameterError(f"sample_rate={sample_rate!r} must be a number from 8000 to 384000 Hz")
    if isinstance(stretch, bool) or not isinstance(stretch, (int, float, np.integer, np.floating)) \
            or not MIN_STRETCH <= float(stretch) <= MAX_STRETCH:
        raise ParameterError(f"stretch={stretch!r} must be from {MIN_STRETCH} to {MAX_STRETCH} "
                             "(output duration / source duration; 2 = half speed)")
    if isinstance(fade_ms, bool) or not isinstance(fade_ms, (int, float, np.integer, np.floating)) \
            or not 0.0 <= float(fade_ms) <= 1000.0:
        raise ParameterError(f"fade_ms={fade_ms!r} must be from 0 to 1000 ms")
    return float(sample_rate), float(stretch), float(fade_ms)


def render_packed(
    packed: PartialArrays,
    sample_rate: float,
    out: np.ndarray,
    start: int = 0,
    *,
    which: np.ndarray | None = None,
    stretch: float = 1.0,
    fade_ms: float = FADE_MS,
    gain: float = 1.0,
) -> np.ndarray:
    """Add the packed partials (all, or the indices ``which``) to ``out`` (``out[0]`` is output
    sample ``start``), in parallel over chunks of the output. No validation: see
    :func:`render_partials`."""
    from .kernels import synth as k

    if which is None:
        which = np.arange(packed.count, dtype=np.int64)
    n_lo, n_hi = int(start), int(start) + out.shape[0]
    fade = fade_ms * 1e-3 * sample_rate
    if which.shape[0] <= SERIAL_PARTIALS:  # an edit: the calling thread is quicker than a hand-off
        k.render_serial(packed.t, packed.f, packed.a, packed.mf, packed.ma, packed.phase, packed.offsets, which,
                        float(sample_rate), float(stretch), fade, float(gain), n_lo, n_hi, out)
        return out
    nc = max(1, -(-(n_hi - n_lo) // k.CHUNK))
    counts = np.zeros(nc, dtype=np.int64)
    starts = np.zeros(nc + 1, dtype=np.int64)
    args = (packed.t, packed.offsets, which, float(sample_rate), float(stretch), n_lo, n_hi, k.CHUNK, counts, starts)
    total = k.chunk_lists(*args, np.zeros(0, dtype=np.int64))
    if total == 0:
        return out
    items = np.zeros(total, dtype=np.int64)
    k.chunk_lists(*args, items)
    k.render_chunks(packed.t, packed.f, packed.a, packed.mf, packed.ma, packed.phase, packed.offsets,
                    float(sample_rate), float(stretch), fade, float(gain), n_lo, n_hi, k.CHUNK, starts, items, out)
    return out


def render_partials(
    partials: Sequence[Any],
    sample_rate: float,
    frames: int | None = None,
    *,
    start: int = 0,
    stretch: float = 1.0,
    fade_ms: float = FADE_MS,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Sum of one sine per partial, as float32 samples.

    Parameters
    ----------
    partials : sequence of array_like
        Each ``(K, 3)`` rows ``(time s, frequency Hz, amplitude)``, times increasing, frequencies
        below Nyquist, amplitudes >= 0. A partial sounds from its first point to its last.
    sample_rate : float
        Output rate (8 kHz .. 384 kHz).
    frames : int, optional
        Output length in samples (default: up to the end of the last partial). Ignored with ``out``.
    start : int
        Output sample index of the first sample (render a window of a long output).
    stretch : float
        Output time / source time, 1/8 .. 8 (2 = twice as long, same pitch).
    fade_ms : float
        Fade-in and fade-out length at both ends of every partial (output time), at most half
        the partial.
    out : ndarray, optional
        float32 or float64 1-D buffer to *add* to (a mix); returned.

    Returns
    -------
    ndarray
        ``out`` (or a new float32 array) with the partials added.

    Raises
    ------
    ParameterError
        A malformed partial (named by position and point), a bad rate, stretch or fade.

    Notes
    -----
    Cost is proportional to the summed length of the partials in the window (about 1 ns per
    partial per output sample on one core); the output is split over the numba threads.

    Examples
    --------
    >>> import numpy as np
    >>> y = render_partials([[(0.0, 440.0, 0.5), (1.0, 440.0, 0.5)]], 48_000)
    >>> y.shape
    (48001,)
    """
    fs, stretch, fade_ms = _check_render(sample_rate, stretch, fade_ms)
    packed = pack_partials(partials, fs)
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
        raise ParameterError(f"start={start!r} must be a sample index >= 0")
    if out is None:
        if frames is None:
            end = float(packed.t.max()) if packed.count else 0.0
            frames = int(math.floor(end * fs * stretch)) + 1 - int(start)
        if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 0:
            raise ParameterError(f"frames={frames!r} must be an integer >= 0")
        out = np.zeros(max(0, int(frames)), dtype=np.float32)
    elif not isinstance(out, np.ndarray) or out.ndim != 1 or out.dtype not in (np.float32, np.float64) \
            or not out.flags.writeable or not out.flags.c_contiguous:
        raise ParameterError("out must be a writeable, contiguous 1-D float32 or float64 array")
    if out.shape[0]:
        render_packed(packed, fs, out, int(start), stretch=stretch, fade_ms=fade_ms)
    return out


def synth_request(sample_rate: float, add: Any = (), remove: Any = (), rebuild: Any = False,
                  fade_ms: Any = FADE_MS) -> tuple[dict, dict]:
    """The parameters of a synth-worker request (:meth:`soma_shm.Engine.submit_synth`) and the
    counts its result reports, validated here, in the caller.

    ``add`` and ``remove`` are sequences of ``(K, 3)`` points (time s, frequency Hz, amplitude)
    or :class:`PartialArrays`; only their knots (``t, f, a, offsets``) go into the request. The
    result of the request is ``{"added", "removed", "rebuild", "timings"}``.

    Raises ParameterError for a malformed partial (named by position), a bad fade or ``rebuild``.
    """
    _, _, fade_ms = _check_render(sample_rate, 1.0, fade_ms)
    if not isinstance(rebuild, (bool, np.bool_)):
        raise ParameterError(f"rebuild={rebuild!r} must be True or False")
    packs = [x if isinstance(x, PartialArrays) else pack_partials(list(x), sample_rate) for x in (add, remove)]
    params = dict(fade_ms=fade_ms, rebuild=bool(rebuild), add=packs[0].knots(), remove=packs[1].knots())
    return params, {"added": packs[0].count, "removed": packs[1].count, "rebuild": bool(rebuild)}


class Resynthesis:
    """The resynthesis mix of a document, kept up to date edit by edit.

    Parameters
    ----------
    sample_rate : float
        The file's rate.
    frames : int
        The file's length: the mix covers ``[0, frames)`` at speed 1.
    out : ndarray, optional
        The float32 buffer that holds the mix; zeroed here.
    fade_ms : float
        Fade length at both ends of each partial.

    Notes
    -----
    :meth:`update` takes the document's partials (``{id: (points, is_muted)}``) and changes the
    mix by the difference to the last update: partials removed, muted or changed are subtracted
    (their old samples, recomputed bit for bit), partials added, unmuted or changed are added.
    A full :meth:`rebuild` re-renders everything in parallel. Updates are serialised: the last
    one to finish describes the last document it was given. Rounding leaves at most a few units
    in the last place of the mix after many edits (below -130 dB for a full-scale mix).
    Subclasses change where the mix is written by overriding :meth:`_apply`
    (:class:`EngineResynthesis`: in the engine's synth worker).
    """

    def __init__(self, sample_rate: float, frames: int, out: np.ndarray | None = None,
                 fade_ms: float = FADE_MS) -> None:
        fs, _, fade_ms = _check_render(sample_rate, 1.0, fade_ms)
        if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
            raise ParameterError(f"frames={frames!r} must be an integer >= 1")
        if out is None:
            out = np.zeros(int(frames), dtype=np.float32)
        elif out.dtype != np.float32 or out.ndim != 1 or out.shape[0] != frames:
            raise ParameterError(f"out must be a float32 buffer of {frames} samples")
        elif out.flags.writeable:
            out[:] = 0.0
        self.sample_rate = fs
        self.frames = int(frames)
        self.fade_ms = fade_ms
        self.mix = out
        self._lock = threading.Lock()
        self._sounding: dict[str, tuple[Any, np.ndarray]] = {}  # id -> (given points, checked points)
        self._packed_all: tuple[int, PartialArrays] | None = None
        self._valid = True  # False: the mix may not hold what _sounding says (a failed apply)
        self.generation = 0

    @property
    def sounding(self) -> list[str]:
        """Ids of the partials in the mix."""
        return list(self._sounding)

    def _diff(self, partials: Mapping[str, tuple[Any, bool]]) -> tuple[list[str], list[str], list[Any], PartialArrays]:
        """(ids to subtract, ids to add, their given points, their pack). A partial whose points
        are the very object last rendered is not compared (points are taken as immutable, as a
        document's are); the new ones are validated together and an error names the partial."""
        add: list[str] = []
        given: list[Any] = []
        keep: set[str] = set()
        for pid, (points, muted) in partials.items():
            if muted:
                continue
            old = self._sounding.get(pid)
            if old is not None and (points is old[0] or np.array_equal(np.asarray(points, dtype=np.float64), old[1])):
                keep.add(pid)
                continue
            add.append(pid)
            given.append(points)
        try:
            packed = pack_partials(given, self.sample_rate)
        except ParameterError as exc:
            for pid, points in zip(add, given):
                _check_points(points, f"partial {pid}", self.sample_rate)
            raise exc  # pragma: no cover - the loop names the partial
        gone = [pid for pid in self._sounding if pid not in keep]
        return gone, add, given, packed

    def _apply(self, remove: PartialArrays, add: PartialArrays, rebuild: bool) -> None:
        """Subtract ``remove`` from the mix and add ``add`` (``rebuild``: zero the mix first)."""
        if rebuild:
            self.mix[:] = 0.0
        for packed, gain in ((remove, -1.0), (add, 1.0)):
            if packed.count:
                render_packed(packed, self.sample_rate, self.mix, 0, fade_ms=self.fade_ms, gain=gain)

    def update(self, partials: Mapping[str, tuple[Any, bool]]) -> dict[str, Any]:
        """Bring the mix to ``partials`` (``{id: (points, is_muted)}``); returns what changed.

        Points are taken as immutable: pass new arrays for changed partials (a document's
        partials are read-only). Returns ``{"removed": n, "added": n, "rebuilt": bool,
        "generation": g}``. Raises ParameterError (mix unchanged) when a partial is malformed;
        when the mix could not be changed (say, the worker writing it died), the error is raised
        and the next update rebuilds the whole mix.
        """
        with self._lock:
            if not self._valid:
                return self._rebuild(partials)
            gone, add, given, packed = self._diff(partials)
            removed = pack_partials([self._sounding[pid][1] for pid in gone])
            self._valid = False
            self._apply(removed, packed, False)
            self._valid = True
            for pid in gone:
                del self._sounding[pid]
            for n, pid in enumerate(add):
                self._sounding[pid] = (given[n], _points_of(packed, n))
            self.generation += 1
            return {"removed": len(gone), "added": len(add), "rebuilt": False, "generation": self.generation}

    def rebuild(self, partials: Mapping[str, tuple[Any, bool]]) -> dict[str, Any]:
        """Re-render the whole mix from ``partials`` (in parallel over the output)."""
        with self._lock:
            return self._rebuild(partials)

    def _rebuild(self, partials: Mapping[str, tuple[Any, bool]]) -> dict[str, Any]:
        sounding, self._sounding = self._sounding, {}
        try:
            _, add, given, packed = self._diff(partials)
        except ParameterError:
            self._sounding = sounding
            raise
        self._valid = False
        self._apply(PartialArrays.empty(), packed, True)
        self._valid = True
        for n, pid in enumerate(add):
            self._sounding[pid] = (given[n], _points_of(packed, n))
        self.generation += 1
        self._packed_all = (self.generation, packed)
        return {"removed": len(sounding), "added": len(add), "rebuilt": True, "generation": self.generation}

    def window(self, start: int, frames: int, stretch: float = 1.0) -> np.ndarray:
        """Output samples ``[start, start + frames)`` of the mix played at ``stretch`` (output
        time / source time): at 1 a copy of the mix, otherwise rendered from the sounding
        partials at the stretched time (pitch kept)."""
        _, stretch, _ = _check_render(self.sample_rate, stretch, self.fade_ms)
        out = np.zeros(max(0, int(frames)), dtype=np.float32)
        if stretch == 1.0:
            lo, hi = max(0, start), min(self.frames, start + frames)
            if hi > lo:
                out[lo - start:hi - start] = self.mix[lo:hi]
            return out
        with self._lock:
            if self._packed_all is None or self._packed_all[0] != self.generation:
                self._packed_all = (self.generation, pack_partials([pts for _, pts in self._sounding.values()]))
            packed = self._packed_all[1]
        end = int(math.floor(self.frames * stretch))
        lo, hi = max(0, start), min(end, start + frames)
        if hi > lo:
            render_packed(packed, self.sample_rate, out[lo - start:hi - start], lo, stretch=stretch, fade_ms=self.fade_ms)
        return out


class EngineResynthesis(Resynthesis):
    """:class:`Resynthesis` whose mix lives in the engine: the open file's shared mix block
    (:meth:`soma_shm.Engine.mix`), written by the synth worker (:meth:`soma_shm.Engine.submit_synth`).

    ``mix`` is a read-only view of the block. Every update waits for its request (edits take
    milliseconds); a request that fails (the worker crashed, timed out, or the file changed)
    leaves the mix to be rebuilt by the next update.
    """

    def __init__(self, engine: Any, fade_ms: float = FADE_MS, timeout: float = 300.0) -> None:
        block = engine.mix()
        super().__init__(block.sample_rate, block.frames, block.samples(writable=False), fade_ms)
        self._engine = engine
        self._generation_of_file = block.generation
        self._timeout = timeout
        self.last_timings: dict = {}
        self._valid = False  # what the block holds is unknown: the first update rebuilds it

    def _apply(self, remove: PartialArrays, add: PartialArrays, rebuild: bool) -> None:
        result = self._engine.submit_synth(add=add, remove=remove, rebuild=rebuild,
                                           fade_ms=self.fade_ms).result(timeout=self._timeout)
        self.last_timings = result["timings"]
