"""Image geometry and transform plans (numpy only; no numba, no I/O).

The geometry of docs/design.md ("Numerical contract") is defined here once and used by the
kernels, the float64 test references and the engine alike:

- row ``r`` has frequency ``fmax * (fmin/fmax) ** (r/(height-1))`` (row 0 = top = fmax);
- column ``c`` spans ``[t0 + c*dt, t0 + (c+1)*dt)`` with ``dt = (t1-t0)/width``; it pools every
  sample ``n`` with ``n/fs`` in that span. A column narrower than a sample uses the sample nearest
  its centre.

A *plan* freezes everything that depends only on the geometry (row frequencies, wavelet bands,
FFT sizes, bin-to-row maps) so that requests with the same geometry reuse it. Plans are immutable:
their arrays are read-only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.fft import next_fast_len

from .settings import AnalysisSettings

__all__ = [
    "row_frequencies",
    "column_bounds",
    "CwtPlan",
    "StftPlan",
    "cwt_plan",
    "stft_plan",
    "WAVELET_EPS",
    "CWT_OVERSAMPLE",
    "NARROW_COLUMN_BOOST",
    "WIDE_COLUMN_SAMPLES",
    "NYQUIST_TAPER",
    "nyquist_taper",
]

WAVELET_EPS = 2e-6
"""Relative level below which the wavelet's Gaussian response (in frequency and in time) is
treated as zero: -114 dB. A component the band leaves out still adds up to ``eps`` times its
amplitude to the true ``|W|``, so the cut must sit well below the -80 dB display floor: at
1e-5 (-100 dB), two loud tones just outside a row's band moved that row's -79 dB pixels by
0.75 dB (a random three-tone test); at 2e-6 the worst of 300 random images is 0.14 dB, for
7 % more inverse-FFT samples (3 % more time on perf/bench_kernels.py's cwt2)."""

NYQUIST_TAPER = 0.005
"""Width (as a fraction of the sample rate) of the smooth step that brings the wavelet response
to zero at Nyquist: the response is multiplied by ``0.5 erfc((f - centre) / (sqrt(2) width))``,
centred so that it is down to ``eps`` at Nyquist (:func:`nyquist_taper`). A response cut off
sharply at Nyquist would ring for a long time, and so does one rolled off by a curve with a kink
(a one-sided Gaussian: its time response decays only as ``1/t^3``, enough for loud tones near
Nyquist to reach -75 dB of full scale across a row's padding, making the row's values depend on
how much audio was padded). The erfc step is smooth, so every row's time response stays
Gaussian-short (sigma ``1 / (2 pi width)``). Below ``fs/2 - 2 z width`` (``z = 4.61`` for
``eps = 2e-6``: 21.8 kHz at 48 kHz, 20.0 kHz at 44.1 kHz) the response is untouched within
``eps`` and the amplitude calibration exact."""

CWT_OVERSAMPLE = 2.0
"""Decimated rate of a CWT row relative to the width of its band (>= 1 avoids aliasing)."""

NARROW_COLUMN_BOOST = 1.25
WIDE_COLUMN_SAMPLES = 4.0
"""Rows whose columns hold fewer than this many samples at the base rate are sampled
``NARROW_COLUMN_BOOST`` times denser: near a zero of W, |W| can rise and fall between two
samples, and a column that spans only a few samples would miss that peak. From about four samples
per column on, the half-step scan and the refinement of the column's best point find the peak at
the base rate: against the float64 reference, lowering the threshold from 16 to 4 leaves the
largest error of perf/bench_kernels.py's 2 s viewport at 0.36 dB and moves the 30 s one from
0.19 to 0.24 dB, while the 2 s viewport needs 10 % fewer inverse-FFT samples."""


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def row_frequencies(fmin: float, fmax: float, height: int) -> np.ndarray:
    """Frequencies of the image rows (Hz), row 0 = fmax, log-spaced down to fmin."""
    if height == 1:
        return np.array([fmax], dtype=np.float64)
    r = np.arange(height, dtype=np.float64)
    return fmax * (fmin / fmax) ** (r / (height - 1))


def column_bounds(t0: float, t1: float, width: int, sample_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """First and last (inclusive) sample index pooled by each column.

    Returns int64 arrays ``a, b`` of length ``width`` with ``a <= b``. Sample ``n`` belongs to
    column ``c`` when ``t0 + c*dt <= n/fs < t0 + (c+1)*dt``; a column holding no sample uses the
    sample nearest its centre.
    """
    dt = (t1 - t0) / width
    edges = t0 + np.arange(width + 1, dtype=np.float64) * dt
    # A tiny tolerance keeps an edge that lands on a sample (up to rounding) on that sample.
    first = np.ceil(edges * sample_rate - 1e-7).astype(np.int64)
    a = first[:-1].copy()
    b = first[1:] - 1
    empty = b < a
    if empty.any():
        centre = np.floor((edges[:-1] + 0.5 * dt) * sample_rate + 0.5).astype(np.int64)
        a[empty] = centre[empty]
        b[empty] = centre[empty]
    return a, b


# ------------------------------------------------------------------------------------------ CWT
def wavelet_sigma_samples(freq: np.ndarray | float, sample_rate: float, settings: AnalysisSettings):
    """Standard deviation (samples) of the Gaussian envelope of the wavelet at ``freq``.

    ``cmorB-C`` at scale ``s = C fs / f`` has envelope ``exp(-t^2 / (B s^2))``, i.e. sigma
    ``s * sqrt(B/2)``.
    """
    return settings.wavelet_center * sample_rate / np.asarray(freq) * math.sqrt(settings.wavelet_bandwidth / 2)


def wavelet_band_halfwidth(settings: AnalysisSettings, eps: float = WAVELET_EPS) -> float:
    """Half-width of a row's band relative to its centre frequency.

    The calibrated analytic response at frequency ``f`` of the row centred on ``fc`` is
    ``2 exp(-pi^2 B C^2 (f/fc - 1)^2)``; it falls below ``2 eps`` beyond ``fc (1 +- h)``.
    """
    b, c = settings.wavelet_bandwidth, settings.wavelet_center
    return math.sqrt(math.log(1.0 / eps)) / (math.pi * c * math.sqrt(b))


@dataclass(frozen=True, eq=False)
class CwtPlan:
    """Frozen layout of a band-limited, decimated CWT image.

    Rows are split into a few *segments*; each segment is one real FFT of the window padded by the
    wavelet support of its lowest row, so high rows (short wavelets) do not pay for the long
    padding of low rows. A segment of a long window may also be cut in time into *tiles* of whole
    image columns, each its own padded FFT: an inverse FFT of a few ten thousand samples stays in
    the core's cache, one of a million does not (and costs about twice as much per sample). The
    unit of work is then a *work row*: one image row over one tile's columns. Per work row: the
    band of FFT bins where the Gaussian response exceeds ``eps``, and the length of the inverse
    FFT that brings that band back at a decimated rate.

    Segment ``g`` starts ``seg_pad[g]`` samples before the window's first sample (negative for
    tiles that start inside the window) and is ``seg_nfft[g]`` samples long.

    Cost (per request): ``sum_g N_g log N_g`` for the forward FFTs plus
    ``sum_rows L_r log L_r`` for the inverse ones, where ``L_r ~ oversample * bandwidth_r * T_g``:
    proportional to the sum of row bandwidths times the window length, not rows x samples.
    """

    sample_rate: float
    n_window: int  # samples covered by the image (max over alignments)
    freqs: np.ndarray  # (H,) image row frequencies
    seg_pad: np.ndarray  # (G,) samples from each segment's start to the window start
    seg_nfft: np.ndarray  # (G,) forward FFT size
    row_seg: np.ndarray  # (V,) segment of each work row
    row_klo: np.ndarray  # (V,) first bin of the band
    row_khi: np.ndarray  # (V,) last bin of the band (inclusive)
    row_nifft: np.ndarray  # (V,) inverse FFT length
    row_freq: np.ndarray  # (V,) frequency of each work row
    row_image: np.ndarray  # (V,) image row of each work row
    row_c0: np.ndarray  # (V,) first image column of each work row
    row_c1: np.ndarray  # (V,) one past its last column
    gauss_a: float  # pi^2 B C^2: response 2 exp(-a (f/fc - 1)^2)
    taper_centre: float  # Hz: the Nyquist roll-off (see nyquist_taper) is 1/2 here
    taper_width: float  # Hz
    settings: AnalysisSettings

    @property
    def height(self) -> int:
        return len(self.freqs)

    def kernel_args(self) -> tuple:
        """``(segs, rows, wavelet)``: the plan's arrays as the kernels take them.

        ``rows`` starts with ``(row_seg, row_klo, row_khi, row_nifft, row_freq)`` (what
        :func:`soma_shm.kernels.cwt.plan_row` needs) followed by the work-row to image map
        ``(row_image, row_c0, row_c1)``.
        """
        return (
            (self.seg_pad, self.seg_nfft),
            (
                self.row_seg,
                self.row_klo,
                self.row_khi,
                self.row_nifft,
                self.row_freq,
                self.row_image,
                self.row_c0,
                self.row_c1,
            ),
            (self.sample_rate, self.gauss_a, self.taper_centre, self.taper_width),
        )

    def inverse_samples(self) -> int:
        """Total number of complex samples produced by the inverse FFTs (the dominant cost)."""
        return int(self.row_nifft.sum())


IFFT_MANTISSAS = (32, 36, 40, 45, 48, 54, 60)
"""Inverse-FFT lengths are ``m * 2**k`` for these ``m`` (all 2-, 3- and 5-smooth, at most 12.5 %
apart). The FFT library keeps only the last few transform plans (planning one, twiddle
factors included, costs about as much as running it), and rows of neighbouring frequencies then
share a length: on perf/bench_kernels.py's cwt2 image the 808 work rows take 52 lengths instead
of 370 (the next 11-smooth size each), and their inverse FFTs, run largest first as the kernel
does, take 13.3 instead of 21.8 ms on one thread although they hold 5 % more samples."""

_IFFT_LENGTHS = np.unique(
    np.concatenate(
        [np.arange(8, 32)[[next_fast_len(int(n), real=True) == n for n in range(8, 32)]]]
        + [np.array(IFFT_MANTISSAS, dtype=np.int64) << k for k in range(26)]
    )
)


def inverse_fft_lengths(need: np.ndarray) -> np.ndarray:
    """The smallest allowed inverse-FFT length (:data:`IFFT_MANTISSAS`) >= each of ``need``."""
    need = np.maximum(np.asarray(need, dtype=np.int64), 8)
    return _IFFT_LENGTHS[np.searchsorted(_IFFT_LENGTHS, need)]


def _fft_cost(n: np.ndarray | float) -> np.ndarray | float:
    """Relative cost of an FFT of ``n`` points plus a pass over its output.

    ``n log2 n`` times a factor that grows once the transform no longer fits the core's cache
    (measured with the numba FFT on complex64: per ``n log2 n`` about 0.30 ns at 8k points,
    0.43 at 64k, 0.68 at 160k, 0.83 at 640k), plus a per-sample term for the pooling pass and a
    fixed cost per transform (allocation, calls, the column edges of each tile): about ns.
    """
    n = np.maximum(np.asarray(n, dtype=np.float64), 8.0)
    lg = np.log2(n)
    return n * (lg * (0.3 + 0.55 * np.clip((lg - 14.0) / 5.0, 0.0, 1.0)) + 3.0) + 5000.0


TILE_COUNTS = (1, 2, 3, 4, 6, 8, 12, 16)
"""Numbers of time tiles a segment may be cut into."""

MIN_TILE_COLUMNS = 48
"""A tile spans at least this many image columns (tiles only pay off on long windows)."""


def _segment_rows(
    pads: np.ndarray, rel_bw: np.ndarray, n_window: int, oversample: float, max_tiles: int
) -> tuple[np.ndarray, list[int]]:
    """Split rows into padding segments; returns the segment id of every row and each segment's
    number of time tiles.

    Rows are sorted by decreasing frequency, so ``pads`` increases along them. A segment cut into
    ``T`` tiles costs ``T`` forward FFTs of ``n_window / T + 2 * pad`` (its largest pad) plus the
    inverse FFTs of its rows over each tile, whose lengths grow with the tile's FFT size
    (:func:`_fft_cost`). Boundaries are chosen among a ladder of padding thresholds, and tile
    counts among :data:`TILE_COUNTS`, by dynamic programming on that cost model (a handful of
    candidates, so planning stays around a millisecond).
    """
    H = len(pads)
    ladder = n_window * np.array([0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0])
    cuts = sorted({int(np.searchsorted(pads, t, side="right")) for t in ladder} | {H})
    cuts = [c for c in cuts if 0 < c <= H]
    bounds = [0] + cuts
    tiles = np.array([t for t in TILE_COUNTS if t <= max_tiles], dtype=np.float64)

    # A segment's FFT size depends only on its last row (the largest pad) and its tile count, so
    # per end bound: the forward cost and cumulative inverse costs over the rows, per tile count.
    fwd, inv_cum = {}, {}
    for j in range(1, len(bounds)):
        n = n_window / tiles + 2.0 * float(pads[bounds[j] - 1])  # one FFT size per tile count
        fwd[j] = 0.5 * _fft_cost(n)
        rows = _fft_cost(oversample * rel_bw[: bounds[j], None] * n[None, :])
        inv_cum[j] = np.concatenate([np.zeros((1, len(tiles))), np.cumsum(rows, axis=0)])

    def cost(i: int, j: int) -> tuple[float, int]:  # rows bounds[i]:bounds[j], best tile count
        c = tiles * (fwd[j] + inv_cum[j][bounds[j]] - inv_cum[j][bounds[i]])
        t = int(np.argmin(c))
        return float(c[t]), int(tiles[t])

    k = len(bounds)
    best = [0.0] + [math.inf] * (k - 1)
    prev = [0] * k
    seg_t = [1] * k
    for j in range(1, k):
        for i in range(j):
            c, t = cost(i, j)
            c += best[i]
            if c < best[j]:
                best[j], prev[j], seg_t[j] = c, i, t
    seg = np.empty(H, dtype=np.int64)
    j, chosen = k - 1, []
    while j > 0:
        chosen.append((prev[j], j, seg_t[j]))
        j = prev[j]
    seg_tiles = []
    for g, (i, j, t) in enumerate(reversed(chosen)):
        seg[bounds[i] : bounds[j]] = g
        seg_tiles.append(t)
    return seg, seg_tiles


@lru_cache(maxsize=64)
def cwt_plan(
    sample_rate: float,
    n_window: int,
    fmin: float,
    fmax: float,
    height: int,
    width: int,
    settings: AnalysisSettings,
    oversample: float = CWT_OVERSAMPLE,
    eps: float = WAVELET_EPS,
) -> CwtPlan:
    """Build (or fetch from the cache) the plan for a CWT image geometry."""
    fs = float(sample_rate)
    freqs = row_frequencies(fmin, fmax, height)
    kt = math.sqrt(2.0 * math.log(1.0 / eps))
    # + the time support of the Nyquist roll-off (sigma = 1 / (2 pi width) seconds).
    taper_sigma = 1.0 / (2.0 * math.pi * NYQUIST_TAPER)
    pads = np.ceil(kt * (wavelet_sigma_samples(freqs, fs, settings) + taper_sigma)).astype(np.int64) + 2
    h = wavelet_band_halfwidth(settings, eps)
    n_window = int(n_window)
    seg, seg_tiles = _segment_rows(pads, 2.0 * h * freqs / fs, n_window, oversample, max(1, width // MIN_TILE_COLUMNS))

    # Expand segments into tiles. Tile k of T covers columns [c_k, c_{k+1}), c_k = round(k W / T).
    # Column c starts within 2 samples of c (n_window - 1) / W after the window's first sample,
    # whatever t0 is (column_bounds), so a tile's FFT starts 3 samples early and ends 3 late. All
    # tiles of a segment share one FFT size (the largest), so a row's band and inverse-FFT length
    # are the same in each of them.
    spc = (n_window - 1) / max(width, 1)
    nseg = len(seg_tiles)
    row_nfft = np.zeros(nseg, dtype=np.int64)
    tile_pad, tile_seg, tile_c0, tile_c1 = [], [], [], []
    for g, t in enumerate(seg_tiles):
        p = int(pads[seg == g].max())
        edges = [int(round(k * width / t)) for k in range(t + 1)]
        span = 0
        for k in range(t):
            first = 0 if k == 0 else int(math.floor(edges[k] * spc)) - 3
            # +2 (last tile): the window may cover one more sample depending on where t0 falls.
            stop = n_window + 2 if k == t - 1 else int(math.floor(edges[k + 1] * spc)) + 3
            span = max(span, stop - first)
            tile_pad.append(p - first)
            tile_seg.append(g)
            tile_c0.append(edges[k])
            tile_c1.append(edges[k + 1])
        row_nfft[g] = next_fast_len(int(span + 2 * p), real=True)
    tile_seg = np.array(tile_seg, dtype=np.int64)
    seg_pad = np.array(tile_pad, dtype=np.int64)
    seg_nfft = row_nfft[tile_seg]

    # Band and inverse-FFT length per image row (from its segment's FFT size).
    nfft_row = row_nfft[seg].astype(np.float64)
    # The analytic response covers 0 < f < fs/2: the Nyquist bin itself (even sizes) is excluded.
    nyq_bin = ((row_nfft[seg] - 1) // 2).astype(np.int64)
    klo = np.maximum(np.ceil(freqs * (1.0 - h) * nfft_row / fs), 1).astype(np.int64)
    khi = np.minimum(np.floor(freqs * (1.0 + h) * nfft_row / fs), nyq_bin).astype(np.int64)
    khi = np.maximum(khi, klo)
    nb = khi - klo + 1
    # Where a column spans many decimated samples its maximum is well sampled at the base rate;
    # where it spans few, |W| can peak between samples unseen, so those rows are sampled denser.
    col_samples = oversample * nb / nfft_row * (n_window / max(width, 1))
    rate = np.where(col_samples >= WIDE_COLUMN_SAMPLES, oversample, oversample * NARROW_COLUMN_BOOST)
    nifft = inverse_fft_lengths(np.ceil(rate * nb))

    # Work rows: every image row over every tile of its segment.
    tiles_of = [np.flatnonzero(tile_seg == g) for g in range(nseg)]
    w_img = np.concatenate([np.repeat(np.flatnonzero(seg == g), len(tiles_of[g])) for g in range(nseg)])
    w_seg = np.concatenate([np.tile(tiles_of[g], int(np.sum(seg == g))) for g in range(nseg)])
    tile_c0 = np.array(tile_c0, dtype=np.int64)
    tile_c1 = np.array(tile_c1, dtype=np.int64)
    taper_width, taper_centre = nyquist_taper(fs, eps)
    b, c = settings.wavelet_bandwidth, settings.wavelet_center
    return CwtPlan(
        sample_rate=fs,
        n_window=n_window,
        freqs=_frozen(freqs),
        seg_pad=_frozen(seg_pad),
        seg_nfft=_frozen(seg_nfft),
        row_seg=_frozen(w_seg),
        row_klo=_frozen(klo[w_img]),
        row_khi=_frozen(khi[w_img]),
        row_nifft=_frozen(nifft[w_img]),
        row_freq=_frozen(freqs[w_img]),
        row_image=_frozen(w_img),
        row_c0=_frozen(tile_c0[w_seg]),
        row_c1=_frozen(tile_c1[w_seg]),
        gauss_a=math.pi**2 * b * c * c,
        taper_centre=taper_centre,
        taper_width=taper_width,
        settings=settings,
    )


def gaussian_tail_z(eps: float) -> float:
    """``z`` with ``0.5 erfc(z / sqrt(2)) = eps`` (the standard normal's upper tail), by bisection."""
    lo, hi = 0.0, 40.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if 0.5 * math.erfc(mid / math.sqrt(2.0)) > eps:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def nyquist_taper(sample_rate: float, eps: float = WAVELET_EPS) -> tuple[float, float]:
    """``(width, centre)`` in Hz of the roll-off ``0.5 erfc((f - centre) / (sqrt(2) width))``
    (see :data:`NYQUIST_TAPER`): ``eps`` at Nyquist, above ``1 - eps`` below ``centre - z width``."""
    width = NYQUIST_TAPER * sample_rate
    return width, sample_rate / 2 - gaussian_tail_z(eps) * width


# ----------------------------------------------------------------------------------------- STFT
@dataclass(frozen=True, eq=False)
class StftPlan:
    """Frozen layout of a pooled STFT image: window, hop and the bin -> row maps.

    ``bin_row[k]`` is the row whose band (between the geometric midpoints to its neighbours)
    holds bin ``k``'s frequency, or -1. Rows whose band holds no bin interpolate linearly between
    the bins ``interp_k[r]`` and ``interp_k[r] + 1`` with weight ``interp_w[r]`` on the upper one
    (``interp_k[r] = -1`` for rows that have bins).
    """

    sample_rate: float
    nfft: int
    hop: int
    window: np.ndarray  # (nfft,) float32 periodic Hann
    scale: float  # 2 / sum(window): a sine of amplitude A peaks at A
    freqs: np.ndarray
    log_fmax: float
    log_step: float  # log(f_r) = log_fmax - r * log_step
    bin_row: np.ndarray  # (nfft//2+1,) int64
    interp_k: np.ndarray  # (H,) int64
    interp_w: np.ndarray  # (H,) float64
    settings: AnalysisSettings

    @property
    def height(self) -> int:
        return len(self.freqs)


@lru_cache(maxsize=64)
def stft_plan(sample_rate: float, fmin: float, fmax: float, height: int, settings: AnalysisSettings) -> StftPlan:
    """Build (or fetch from the cache) the plan for a pooled STFT image geometry."""
    fs = float(sample_rate)
    nfft = settings.stft_nfft(fs)
    hop = settings.stft_hop(fs)
    n = np.arange(nfft, dtype=np.float64)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / nfft)
    freqs = row_frequencies(fmin, fmax, height)
    if height > 1:
        log_step = math.log(fmax / fmin) / (height - 1)
        upper = freqs * math.exp(0.5 * log_step)
        lower = freqs * math.exp(-0.5 * log_step)
    else:
        log_step = 1.0
        upper = np.array([fmax])
        lower = np.array([fmin])
    nbins = nfft // 2 + 1
    bin_f = np.arange(nbins) * fs / nfft
    bin_row = np.full(nbins, -1, dtype=np.int64)
    # Row r owns [lower_r, upper_r); rows are in decreasing frequency.
    for r in range(height):
        sel = (bin_f >= lower[r]) & (bin_f < upper[r])
        bin_row[sel & (bin_row < 0)] = r
    has_bin = np.zeros(height, dtype=bool)
    has_bin[bin_row[bin_row >= 0]] = True
    interp_k = np.full(height, -1, dtype=np.int64)
    interp_w = np.zeros(height, dtype=np.float64)
    pos = freqs * nfft / fs
    k = np.clip(np.floor(pos).astype(np.int64), 0, nbins - 2)
    interp_k[~has_bin] = k[~has_bin]
    interp_w[~has_bin] = np.clip(pos - k, 0.0, 1.0)[~has_bin]
    return StftPlan(
        sample_rate=fs,
        nfft=nfft,
        hop=hop,
        window=_frozen(window.astype(np.float32)),
        scale=2.0 / float(window.sum()),
        freqs=_frozen(freqs),
        log_fmax=math.log(fmax),
        log_step=log_step,
        bin_row=_frozen(bin_row),
        interp_k=_frozen(interp_k),
        interp_w=_frozen(interp_w),
        settings=settings,
    )
