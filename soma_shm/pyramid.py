"""Multi-resolution pooled STFT pyramid: wide views of long recordings without recomputing.

Built once per file (one pass of FFTs over the recording, the work of one overview), it keeps the
maximum power of every STFT bin over blocks of frames at several time scales:

- level 0: blocks of ``nfft // hop`` frames (two at the default 50 % overlap), one STFT window
  (~43 ms) per block: finer time detail than the window's own length is not there to lose;
- level ``L``: blocks of ``PYRAMID_FACTOR`` level-``L-1`` blocks (8x coarser each step).

Values are bytes: ``DB_STEP`` (0.5 dB) steps of magnitude, byte 255 at ``HEADROOM_DB`` (12 dB)
above the file's 0 dB level (its ``amp_reference``), so 254 steps reach 115 dB below it, past any
sensible display floor; louder bins (only possible outside the overview's rows, e.g. DC) clip.
Size: (nfft/2 + 1) bytes per block, about 1/7 of the float32 audio at the default settings
(99 MB for an hour at 48 kHz).

A view (:meth:`Pyramid.image`) picks the finest level that gives each column at least
``MIN_BLOCKS_PER_COLUMN`` blocks (level 0 when even that is too coarse), takes per column the
maximum of the blocks centred in it (the view's first and last column also the block across
the view's edge, so no frame of the view is left out) and maps bins to rows as
:func:`soma_shm.stft_image` does. It is the same picture, cut in milliseconds from memory
instead of recomputed from hours of audio, but not the same pixels (docs/design.md,
"Numerical contract"): a frame near a column edge is counted in the neighbouring column (at
most half a block away: one hop at level 0, <= 1/8 of a column above), which moves a
transient's whole level by one column; bytes are within half a 0.5 dB step; and a spectral
peak refined from two quantised neighbours may land one row over with up to 1.42 dB more or
less gain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import _validate
from .plans import column_bounds, stft_plan
from .settings import AnalysisSettings

__all__ = ["Pyramid", "PyramidLayout", "ProgressiveBuild", "build_pyramid", "build_while_decoding", "PYRAMID_FACTOR", "DB_STEP"]

PYRAMID_FACTOR = 8
DB_STEP = 0.5  # dB of magnitude per byte step
MIN_BLOCKS_PER_COLUMN = 4
HEADROOM_DB = 12.0  # byte 255 this far above the file's 0 dB level
BUILD_STRIPS = 16  # progress is reported after each 1/16 of level 0


def _align(n: int, to: int = 64) -> int:
    return (n + to - 1) // to * to


@dataclass(frozen=True)
class PyramidLayout:
    """Where every level of a recording's pyramid lives in one flat byte buffer."""

    samples: int  # of the recording
    sample_rate: float
    nfft: int
    hop: int
    frames: int  # STFT frames: frame j is centred on sample j*hop, for j*hop < samples
    frames_per_block: int  # at level 0
    blocks: tuple[int, ...]  # per level
    offsets: tuple[int, ...]  # byte offset of each level

    @classmethod
    def for_recording(cls, samples: int, sample_rate: float, nfft: int, hop: int) -> "PyramidLayout":
        frames = (samples - 1) // hop + 1
        f0 = max(1, int(round(nfft / hop)))
        nb = nfft // 2 + 1
        blocks = [(frames + f0 - 1) // f0]
        while blocks[-1] > 1:
            blocks.append((blocks[-1] + PYRAMID_FACTOR - 1) // PYRAMID_FACTOR)
        offsets, at = [], 0
        for b in blocks:
            offsets.append(at)
            at += _align(b * nb)
        return cls(int(samples), float(sample_rate), int(nfft), int(hop), frames, f0, tuple(blocks), tuple(offsets))

    @property
    def nbins(self) -> int:
        return self.nfft // 2 + 1

    @property
    def nbytes(self) -> int:
        return self.offsets[-1] + _align(self.blocks[-1] * self.nbins)

    def frames_per_block_at(self, level: int) -> int:
        return self.frames_per_block * PYRAMID_FACTOR**level

    def level_for(self, frames_per_column: float) -> int:
        """The finest level with at least ``MIN_BLOCKS_PER_COLUMN`` blocks per column (or 0)."""
        level = 0
        while (level + 1 < len(self.blocks)
               and self.frames_per_block_at(level + 1) * MIN_BLOCKS_PER_COLUMN <= frames_per_column):
            level += 1
        return level

    def matches(self, settings: AnalysisSettings) -> bool:
        """Whether views with ``settings`` can be cut from this pyramid (the same STFT frames)."""
        fs = self.sample_rate
        return settings.stft_nfft(fs) == self.nfft and settings.stft_hop(fs) == self.hop


def quantiser(top: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The byte lookup tables for a pyramid whose byte 255 is the calibrated magnitude ``top``.

    Returns ``(lut, power_of)``: ``lut[bits >> 16]`` is the byte of a float32 power (raw, before the
    calibration ``scale``) with bit pattern ``bits`` (powers above ``top`` give 255); ``power_of[q]``
    is the raw power a byte stands for (0 for byte 0, "below the range").
    """
    idx = np.arange(1 << 15, dtype=np.uint32)  # sign bit clear: powers are >= 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        power = ((idx << 16) | 0x8000).view(np.float32).astype(np.float64)  # middle of each bucket
        db = 10.0 * np.log10(power) + 20.0 * math.log10(scale) - 20.0 * math.log10(top)
        q = np.round(255.0 + db / DB_STEP)
    q = np.where(np.isnan(q), 255.0, q)  # NaN bit patterns (never produced) as "loud"
    lut = np.zeros(1 << 16, dtype=np.uint8)
    lut[: 1 << 15] = np.clip(q, 0, 255)
    steps = np.arange(256, dtype=np.float64)
    power_of = (top * 10.0 ** ((steps - 255.0) * DB_STEP / 20.0) / scale) ** 2
    power_of[0] = 0.0
    return lut, power_of


def peak_tables() -> tuple[np.ndarray, np.ndarray]:
    """Hann peak refinement by byte difference ``d`` between a spectral peak and its larger
    neighbour: ``delta_of[d]`` (bins toward the neighbour, 0 = no refinement) and ``gain_of[d]``
    (magnitude correction ``1 / W(delta)``), as :func:`soma_shm.kernels.stft.bins_to_rows` computes
    them from the powers the bytes stand for."""
    d = np.arange(256, dtype=np.float64)
    alpha = 10.0 ** (-d * DB_STEP / 20.0)  # amplitude ratio neighbour / peak
    delta = np.minimum((2.0 * alpha - 1.0) / (alpha + 1.0), 0.5)
    delta = np.where(delta > 1e-6, delta, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.sin(np.pi * delta) / (np.pi * delta * (1.0 - delta * delta))
    gain = np.where(delta > 0, 1.0 / w, 1.0)
    return delta, gain


class Pyramid:
    """A recording's pyramid over a flat ``uint8`` buffer (owned, or a shared block's view)."""

    def __init__(self, layout: PyramidLayout, buffer: np.ndarray, top: float, scale: float):
        if buffer.dtype != np.uint8 or buffer.ndim != 1 or buffer.shape[0] < layout.nbytes:
            raise _validate.ParameterError(
                f"a pyramid buffer must be uint8 with at least {layout.nbytes} bytes, got {buffer.dtype} {buffer.shape}"
            )
        self.layout = layout
        self.buffer = buffer
        self.top = float(top)  # calibrated magnitude of byte 255
        self.scale = float(scale)  # the STFT's calibration 2 / sum(window)
        nb = layout.nbins
        self.levels = [buffer[o : o + b * nb].reshape(b, nb) for o, b in zip(layout.offsets, layout.blocks)]
        self._tables: tuple[np.ndarray, ...] | None = None

    @property
    def nbytes(self) -> int:
        return self.layout.nbytes

    def _lookup(self) -> tuple[np.ndarray, ...]:
        """``mag_of`` (calibrated magnitude per byte), ``delta_of``, ``gain_of`` and ``log k`` per
        bin, made once."""
        if self._tables is None:
            with np.errstate(divide="ignore"):
                log_bin = np.log(np.arange(self.layout.nbins, dtype=np.float64))
            mag_of = (np.sqrt(quantiser(self.top, self.scale)[1]) * self.scale).astype(np.float32)
            self._tables = (mag_of, *(t.astype(np.float32) for t in peak_tables()), log_bin)
        return self._tables

    def image(
        self,
        t0: float,
        t1: float,
        fmin: float,
        fmax: float,
        width: int,
        height: int,
        settings: AnalysisSettings | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Pooled STFT magnitude image ``(height, width)`` float32, cut from the pyramid.

        Same geometry and calibration as :func:`soma_shm.stft_image`.

        Raises
        ------
        ParameterError
            Bad geometry, or ``settings`` whose STFT frames differ from the pyramid's (rebuild it
            with those settings, or use ``stft_image``).
        """
        from .kernel_cache import kernels

        kp = kernels("pyramid")

        lay = self.layout
        settings = _validate.settings_or_default(settings)
        if not lay.matches(settings):
            raise _validate.ParameterError(
                f"the pyramid holds {lay.nfft}-point frames at hop {lay.hop}, but these settings make "
                f"{settings.stft_nfft(lay.sample_rate)}-point frames at hop {settings.stft_hop(lay.sample_rate)}; "
                "build a pyramid with these settings or use stft_image"
            )
        fs = lay.sample_rate
        t0, t1, fmin, fmax, width, height = _validate.view(t0, t1, fmin, fmax, width, height, fs, lay.samples / fs)
        out = _validate.output(out, height, width, np.float32)
        plan = stft_plan(fs, fmin, fmax, height, settings)
        col_a, col_b = column_bounds(t0, t1, width, fs)
        level = lay.level_for((t1 - t0) * fs / lay.hop / width)
        row_k0, row_k1, k_lo, k_hi = _row_bins(plan)
        kp.pyramid_image(
            _validate.read_only(self.levels[level]), lay.frames_per_block_at(level), lay.hop, lay.frames, *self._lookup(),
            col_a, col_b, row_k0, row_k1, k_lo, k_hi, plan.interp_k, plan.interp_w, plan.log_fmax,
            plan.log_step, fs / lay.nfft, out,
        )
        return out


def _row_bins(plan) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Per row the range of bins it holds (rows hold contiguous bins, in decreasing frequency),
    and the bins whose refined peak can land in a row (one bin beyond the rows' outer bands)."""
    H = plan.height
    k = np.flatnonzero(plan.bin_row >= 0)
    rows = plan.bin_row[k]
    row_k0 = np.zeros(H, dtype=np.int64)
    row_k1 = np.zeros(H, dtype=np.int64)
    if k.size:
        # bin_row is non-increasing in k over the bins that have a row.
        first = np.r_[True, rows[1:] != rows[:-1]]
        starts = k[first]
        ends = np.r_[k[np.flatnonzero(first)[1:] - 1], k[-1]] + 1
        row_k0[rows[first]] = starts
        row_k1[rows[first]] = ends
    lo_f = plan.freqs[-1] * math.exp(-0.5 * plan.log_step)
    hi_f = plan.freqs[0] * math.exp(0.5 * plan.log_step)
    bin_hz = plan.sample_rate / plan.nfft
    return row_k0, row_k1, max(int(lo_f / bin_hz) - 1, 1), int(math.ceil(hi_f / bin_hz)) + 2


def build_pyramid(
    audio: Any,
    sample_rate: float,
    settings: AnalysisSettings | None = None,
    reference: float | None = None,
    out: np.ndarray | None = None,
    progress: Callable[[float], None] | None = None,
) -> Pyramid:
    """Build the pooled STFT pyramid of a recording (one pass of FFTs, all threads, GIL released).

    Parameters
    ----------
    audio : array_like
        1-D float32 samples (a shared block's read-only view is fine; nothing is copied).
    sample_rate : float
    settings : AnalysisSettings, optional
        The STFT window and hop; views must use settings with the same ones.
    reference : float, optional
        The file's 0 dB magnitude (:func:`soma_shm.render.reference_level`, computed when omitted).
    out : ndarray, optional
        ``uint8`` buffer of at least ``PyramidLayout.for_recording(...).nbytes`` bytes (e.g. a shared
        block); allocated when omitted.
    progress : callable, optional
        Called with the fraction built (0..1).

    Examples
    --------
    >>> pyr = soma_shm.build_pyramid(x, 48000)                           # doctest: +SKIP
    >>> img = pyr.image(0, len(x) / 48000, 20, 20000, 2048, 512)         # doctest: +SKIP
    """
    from .kernel_cache import kernels

    kp = kernels("pyramid")

    fs = _validate.sample_rate(sample_rate)
    a = _validate.audio_array(audio, check_finite=False)
    settings = _validate.settings_or_default(settings)
    layout = PyramidLayout.for_recording(a.shape[0], fs, settings.stft_nfft(fs), settings.stft_hop(fs))
    if out is None:
        out = np.empty(layout.nbytes, dtype=np.uint8)
    if reference is None:
        from .render import reference_level

        reference = reference_level(a, fs, settings)
    elif not (isinstance(reference, (int, float, np.floating)) and math.isfinite(reference) and reference > 0):
        raise _validate.ParameterError(f"reference={reference!r} must be a positive magnitude (the file's 0 dB level)")
    plan = stft_plan(fs, 20.0, 0.45 * fs, 2, settings)  # window and scale only
    pyr = Pyramid(layout, out, float(reference) * 10.0 ** (HEADROOM_DB / 20.0), plan.scale)
    lut, _ = quantiser(pyr.top, plan.scale)
    base = pyr.levels[0]
    if progress is not None:
        progress(0.0)
    edges = np.linspace(0, base.shape[0], BUILD_STRIPS + 1).astype(np.int64)
    for i in range(BUILD_STRIPS):
        if edges[i + 1] > edges[i]:
            kp.build_base(a, plan.window, layout.hop, layout.frames, layout.frames_per_block, lut,
                          int(edges[i]), int(edges[i + 1]), base, *_NO_REFERENCE)
        if progress is not None:
            progress(0.95 * (i + 1) / BUILD_STRIPS)
    for lo, hi in zip(pyr.levels[:-1], pyr.levels[1:]):
        kp.reduce_level(lo, PYRAMID_FACTOR, hi)
    if progress is not None:
        progress(1.0)
    return pyr


_NO_REFERENCE = (np.zeros(0, np.int64), np.zeros((0, 1), np.float64), np.zeros((1, 2, 1), np.float64),
                 np.zeros((1, 2), np.int64))  # build_base's column pooling, unused


class ProgressiveBuild:
    """A file's pyramid built while the file decodes, range by range, so that a partial overview
    can be shown before the rest is there.

    The bytes must be written before the file's 0 dB level (its ``amp_reference``, which needs
    the whole recording) is known, so they are quantised against ``full_scale``, a magnitude no
    bin of the recording can exceed: 2.0 for integer PCM (a bin's calibrated magnitude is at most
    twice the largest sample). Byte 255 stays there: the views are what :func:`build_pyramid`
    gives with that top (the same 0.5 dB grid and magnitudes), covering 127 dB below full scale
    (below 16-bit quantisation noise) whatever the file's level, with no pass over the bytes
    once the level is known.

    The same transforms give the file's 0 dB level (:meth:`reference`): each frame's power
    spectrum is also pooled into the columns of :func:`soma_shm.render.reference_view`, so the
    level is :func:`soma_shm.render.reference_level` bit for bit without a second pass of FFTs
    over the recording after it has decoded.

    Parameters
    ----------
    audio : ndarray
        The float32 block the decoder writes into (read here only where :meth:`add` says it is
        complete).
    sample_rate : float
    settings : AnalysisSettings
    out : ndarray
        ``uint8`` buffer of at least ``layout.nbytes`` (e.g. a shared block).
    full_scale : float
        Largest possible calibrated magnitude.
    """

    def __init__(self, audio: np.ndarray, sample_rate: float, settings: AnalysisSettings | None,
                 out: np.ndarray, full_scale: float = 2.0):
        import threading

        self.settings = _validate.settings_or_default(settings)
        fs = float(sample_rate)
        self.audio = audio
        self.layout = PyramidLayout.for_recording(audio.shape[0], fs, self.settings.stft_nfft(fs),
                                                  self.settings.stft_hop(fs))
        plan = stft_plan(fs, 20.0, 0.45 * fs, 2, self.settings)
        self.window = plan.window
        self.pyramid = Pyramid(self.layout, out, full_scale, plan.scale)
        self.lut, _ = quantiser(full_scale, plan.scale)
        self.built = np.zeros(self.layout.blocks[0], dtype=bool)
        self._ranges: dict[int, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self.built_blocks = 0
        self._ref = self._reference_columns(fs)

    def _reference_columns(self, fs: float):
        """Frame -> column of the reference image, its plan and the pooled power per column; None
        when a column holds no frame (a recording of fewer frames than columns: the level is then
        computed from the audio)."""
        from .render import reference_view

        lay = self.layout
        t0, t1, fmin, fmax, width, height = reference_view(lay.samples, fs)
        col_a, col_b = column_bounds(t0, t1, width, fs)
        ja, jb = (col_a + lay.hop - 1) // lay.hop, col_b // lay.hop
        if (jb < ja).any() or ja[0] != 0 or jb[-1] != lay.frames - 1 or (ja[1:] != jb[:-1] + 1).any():
            return None
        plan = stft_plan(fs, fmin, fmax, height, self.settings)
        col = np.repeat(np.arange(width, dtype=np.int64), jb - ja + 1)
        from .kernel_cache import kernels

        tasks = kernels("pyramid").BUILD_TASKS
        power = np.zeros((width, lay.nbins), dtype=np.float64)
        edge = np.zeros((tasks, 2, lay.nbins), dtype=np.float64)
        edge_col = np.full((tasks, 2), -1, dtype=np.int64)
        return plan, col, power, edge, edge_col

    def add(self, key: int, start: int, stop: int) -> None:
        """Samples ``start:stop`` are decoded (``key`` names the decoder; its range only grows)."""
        with self._lock:
            self._ranges[key] = (start, stop)

    def _complete(self) -> list[tuple[int, int]]:
        with self._lock:
            ranges = sorted(self._ranges.values())
        merged: list[list[int]] = []
        for a, b in ranges:
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            elif b > a:
                merged.append([a, b])
        return [(a, b) for a, b in merged]

    def step(self) -> int:
        """Build every level-0 block whose audio is complete and not built yet, and the coarser
        blocks above them; returns how many level-0 blocks were built (all threads, GIL released)."""
        from .kernel_cache import kernels

        kp = kernels("pyramid")
        lay = self.layout
        n = lay.samples
        span = lay.frames_per_block * lay.hop
        half = lay.nfft // 2
        nblocks = lay.blocks[0]
        audio = _validate.read_only(self.audio)
        base = self.pyramid.levels[0]
        made = 0
        for a, b in self._complete():
            # Block k reads samples k*span - half .. (k+1)*span - hop + half (clipped to the file).
            lo = 0 if a == 0 else -(-(a + half) // span)
            hi = nblocks if b >= n else max(0, (b - half + lay.hop) // span)
            lo, hi = min(lo, nblocks), min(hi, nblocks)
            if hi <= lo:
                continue
            todo = np.flatnonzero(~self.built[lo:hi]) + lo
            if not todo.size:
                continue
            # Contiguous runs of unbuilt blocks.
            cuts = np.flatnonzero(np.diff(todo) > 1) + 1
            for run in np.split(todo, cuts):
                b0, b1 = int(run[0]), int(run[-1]) + 1
                if self._ref is None:
                    kp.build_base(audio, self.window, lay.hop, lay.frames, lay.frames_per_block, self.lut, b0, b1,
                                  base, *_NO_REFERENCE)
                else:
                    _, col, power, edge, edge_col = self._ref
                    kp.build_base(audio, self.window, lay.hop, lay.frames, lay.frames_per_block, self.lut, b0, b1,
                                  base, col, power, edge, edge_col)
                    # Columns a neighbouring task shares (one row each; np.maximum.at would
                    # take its slow element-wise path on these rows: ~0.1 s per hour of audio).
                    for t, s in zip(*np.nonzero(edge_col >= 0)):
                        row = power[edge_col[t, s]]
                        np.maximum(row, edge[t, s], out=row)
                self.built[b0:b1] = True
                made += b1 - b0
                self._reduce(kp, b0, b1)
        self.built_blocks += made
        return made

    def _reduce(self, kp, b0: int, b1: int) -> None:
        levels = self.pyramid.levels
        for lo, hi in zip(levels[:-1], levels[1:]):
            b0, b1 = b0 // PYRAMID_FACTOR, min(hi.shape[0], -(-b1 // PYRAMID_FACTOR))
            kp.reduce_level(lo[b0 * PYRAMID_FACTOR : b1 * PYRAMID_FACTOR], PYRAMID_FACTOR, hi[b0:b1])

    @property
    def fraction(self) -> float:
        return self.built_blocks / max(1, self.layout.blocks[0])

    def reference(self) -> float | None:
        """The file's 0 dB level (:func:`soma_shm.render.reference_level` of the audio, bit for
        bit) once every block is built; None when it has to be computed from the audio."""
        if self._ref is None or not self.built.all():
            return None
        from .kernel_cache import kernels
        from .render import reference_peak

        plan, _, power, _, _ = self._ref
        peak = kernels("stft").pooled_columns_peak(power, plan.bin_row, plan.interp_k, plan.interp_w, plan.log_fmax,
                                                   plan.log_step, plan.sample_rate / plan.nfft, plan.scale)
        return reference_peak(peak)

    def finish(self) -> Pyramid:
        """Build what is left; returns the complete pyramid (byte 255 at ``full_scale``)."""
        self.step()
        if not self.built.all():
            raise _validate.AudioFormatError("the pyramid is incomplete: parts of the file were never decoded")
        return self.pyramid


PROGRESSIVE_MIN_SAMPLES = 1 << 22  # ~1.5 min at 48 kHz: shorter files are decoded before building


def build_while_decoding(
    decode: Callable[[Callable[[int, int, int], None]], Any],
    audio: np.ndarray,
    sample_rate: float,
    settings: AnalysisSettings | None,
    out: np.ndarray,
    full_scale: float,
    reference_of: Callable[[np.ndarray], float],
    progress: Callable[[float], None] | None = None,
    on_partial: Callable[[ProgressiveBuild], None] | None = None,
) -> tuple[Pyramid, float]:
    """Decode a file (``decode(on_range)`` fills ``audio``) and build its pyramid as ranges arrive.

    A builder thread turns every complete part of the audio into pyramid blocks while the
    decoders go on, calling ``progress(fraction built)`` and ``on_partial(build)`` (whose
    ``build.pyramid`` is the partial pyramid: blocks not built yet read as silence) after each
    step. When decoding ends the rest is built (:meth:`ProgressiveBuild.finish`) and the file's 0 dB
    level is read from the pooled columns (:meth:`ProgressiveBuild.reference`; ``reference_of(audio)``
    only for recordings too short for them). Returns ``(pyramid, reference)``.
    """
    import threading

    build = ProgressiveBuild(audio, sample_rate, settings, out, full_scale)
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            while not stop.is_set():
                if build.step():
                    if progress is not None:
                        progress(0.95 * build.fraction)
                    if on_partial is not None:
                        on_partial(build)
                else:
                    stop.wait(0.05)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    builder = threading.Thread(target=loop, name="soma-pyramid-build", daemon=True)
    builder.start()
    try:
        decode(build.add)
    finally:
        stop.set()
        builder.join()
    if errors:
        raise errors[0]
    pyramid = build.finish()
    reference = build.reference()
    if reference is None:
        reference = reference_of(audio)
    if progress is not None:
        progress(1.0)
    return pyramid, reference
