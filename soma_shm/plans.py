"""Image geometry and transform plans (numpy only; no numba, no I/O).

The geometry of ENGINE.md §5 is defined here once and used by the kernels, the float64 test
references and the engine alike:

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

WAVELET_EPS = 1e-5
"""Relative level below which the wavelet's Gaussian response (in frequency and in time) is
treated as zero: -100 dB, well under the -80 dB display floor."""

NYQUIST_TAPER = 0.01
"""Width (as a fraction of the sample rate) of the Gaussian roll-off that brings the wavelet
response smoothly to zero at Nyquist. A response cut off sharply at Nyquist would ring for a long
time (its value would depend on how much audio was padded); with the roll-off every row stays
short in time. Below ``fs/2 - 4.8 * width`` (e.g. 21.7 kHz at 48 kHz, 19.9 kHz at 44.1 kHz) the
response is untouched and the amplitude calibration exact."""

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
    padding of low rows. Per row: the band of FFT bins where the Gaussian response exceeds
    ``eps``, and the length of the inverse FFT that brings that band back at a decimated rate.

    Cost (per request): ``sum_g N_g log N_g`` for the forward FFTs plus
    ``sum_rows L_r log L_r`` for the inverse ones, where ``L_r ~ oversample * bandwidth_r * T_g``:
    proportional to the sum of row bandwidths times the window length, not rows x samples.
    """

    sample_rate: float
    n_window: int  # samples covered by the image (max over alignments)
    freqs: np.ndarray  # (H,) row frequencies
    seg_pad: np.ndarray  # (G,) padding (samples) on each side of the window
    seg_nfft: np.ndarray  # (G,) forward FFT size
    row_seg: np.ndarray  # (H,) segment of each row
    row_klo: np.ndarray  # (H,) first bin of the band
    row_khi: np.ndarray  # (H,) last bin of the band (inclusive)
    row_nifft: np.ndarray  # (H,) inverse FFT length
    gauss_a: float  # pi^2 B C^2: response 2 exp(-a (f/fc - 1)^2)
    taper_start: float  # Hz: above it the response rolls off to zero at Nyquist
    taper_width: float  # Hz
    settings: AnalysisSettings

    @property
    def height(self) -> int:
        return len(self.freqs)

    def kernel_args(self) -> tuple:
        """``(segs, rows, wavelet)``: the plan's arrays as the kernels take them."""
        return (
            (self.seg_pad, self.seg_nfft),
            (self.row_seg, self.row_klo, self.row_khi, self.row_nifft, self.freqs),
            (self.sample_rate, self.gauss_a, self.taper_start, self.taper_width),
        )

    def inverse_samples(self) -> int:
        """Total number of complex samples produced by the inverse FFTs (the dominant cost)."""
        return int(self.row_nifft.sum())


def _segment_rows(pads: np.ndarray, rel_bw: np.ndarray, n_window: int, oversample: float) -> np.ndarray:
    """Split rows into padding segments; returns the segment id of every row.

    Rows are sorted by decreasing frequency, so ``pads`` increases along them. Each segment costs
    one forward FFT of ``n_window + 2 * pad`` (its largest pad) plus the inverse FFTs of its rows,
    whose lengths grow with the segment's FFT size. Boundaries are chosen among a ladder of
    padding thresholds by dynamic programming on that cost model (a handful of candidates, so
    planning stays well under a millisecond).
    """
    H = len(pads)
    ladder = n_window * np.array([0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0])
    cuts = sorted({int(np.searchsorted(pads, t, side="right")) for t in ladder} | {H})
    cuts = [c for c in cuts if 0 < c <= H]
    bounds = [0] + cuts

    def cost(i: int, j: int) -> float:  # rows bounds[i]:bounds[j]
        lo, hi = bounds[i], bounds[j]
        n = n_window + 2.0 * float(pads[hi - 1])
        lengths = np.maximum(oversample * rel_bw[lo:hi] * n, 8.0)
        return 0.5 * n * math.log2(n) + float(np.sum(lengths * np.log2(lengths)))

    k = len(bounds)
    best = [0.0] + [math.inf] * (k - 1)
    prev = [0] * k
    for j in range(1, k):
        for i in range(j):
            c = best[i] + cost(i, j)
            if c < best[j]:
                best[j], prev[j] = c, i
    seg = np.empty(H, dtype=np.int64)
    j, chosen = k - 1, []
    while j > 0:
        chosen.append((prev[j], j))
        j = prev[j]
    for g, (i, j) in enumerate(reversed(chosen)):
        seg[bounds[i] : bounds[j]] = g
    return seg


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
    seg = _segment_rows(pads, 2.0 * h * freqs / fs, int(n_window), oversample)
    nseg = int(seg.max()) + 1
    seg_pad = np.array([pads[seg == g].max() for g in range(nseg)], dtype=np.int64)
    # +2: the window may cover one more sample depending on where t0 falls between samples.
    seg_nfft = np.array([next_fast_len(int(n_window + 2 + 2 * p), real=True) for p in seg_pad], dtype=np.int64)

    nfft_row = seg_nfft[seg].astype(np.float64)
    # The analytic response covers 0 < f < fs/2: the Nyquist bin itself (even sizes) is excluded.
    nyq_bin = ((seg_nfft[seg] - 1) // 2).astype(np.int64)
    klo = np.maximum(np.ceil(freqs * (1.0 - h) * nfft_row / fs), 1).astype(np.int64)
    khi = np.minimum(np.floor(freqs * (1.0 + h) * nfft_row / fs), nyq_bin).astype(np.int64)
    khi = np.maximum(khi, klo)
    nb = khi - klo + 1
    # Where a column spans many decimated samples its maximum is well sampled at the base rate;
    # where it spans few, |W| can peak between samples unseen, so those rows are sampled denser.
    col_samples = oversample * nb / nfft_row * (n_window / max(width, 1))
    rate = np.where(col_samples >= WIDE_COLUMN_SAMPLES, oversample, oversample * NARROW_COLUMN_BOOST)
    nifft = np.array([next_fast_len(max(8, int(math.ceil(q * n)))) for q, n in zip(rate, nb)], dtype=np.int64)
    taper_width, taper_start = nyquist_taper(fs, eps)
    b, c = settings.wavelet_bandwidth, settings.wavelet_center
    return CwtPlan(
        sample_rate=fs,
        n_window=int(n_window),
        freqs=_frozen(freqs),
        seg_pad=_frozen(seg_pad),
        seg_nfft=_frozen(seg_nfft),
        row_seg=_frozen(seg),
        row_klo=_frozen(klo),
        row_khi=_frozen(khi),
        row_nifft=_frozen(nifft),
        gauss_a=math.pi**2 * b * c * c,
        taper_start=taper_start,
        taper_width=taper_width,
        settings=settings,
    )


def nyquist_taper(sample_rate: float, eps: float = WAVELET_EPS) -> tuple[float, float]:
    """``(width, start)`` in Hz of the roll-off ``exp(-((f - start)/width)^2 / 2)`` above ``start``."""
    width = NYQUIST_TAPER * sample_rate
    return width, sample_rate / 2 - math.sqrt(2.0 * math.log(1.0 / eps)) * width


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
