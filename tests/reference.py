"""Slow float64 truths that the fast kernels are tested against.

- :func:`cwt_reference`: full-rate FFT convolution of every row with the calibrated analytic
  complex-Morlet response (no band truncation, no decimation), then max-pool per column.
- :func:`stft_reference`: every Hann frame transformed in float64, magnitude per bin, then the
  row/column pooling written out plainly (bins in a row's band, interpolation where a band holds
  no bin, the frame nearest a column's centre where a column holds none, the Hann two-bin peak
  refinement).
- :func:`morlet_pywt`: PyWavelets' own ``cmorB-C`` CWT, used to anchor our wavelet to the
  published definition.

Geometry (rows, column sample bounds) comes from :mod:`soma_shm.plans`: it *is* the definition.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.fft import ifft, next_fast_len, rfft
from scipy.special import erfc

from soma_shm.plans import NYQUIST_TAPER, column_bounds, nyquist_taper, row_frequencies, wavelet_sigma_samples
from soma_shm.settings import AnalysisSettings


def padded(audio: np.ndarray, start: int, stop: int) -> np.ndarray:
    """``audio[start:stop]`` in float64, zeros where the range leaves the file."""
    out = np.zeros(stop - start, dtype=np.float64)
    lo, hi = max(start, 0), min(stop, len(audio))
    if hi > lo:
        out[lo - start : hi - start] = audio[lo:hi]
    return out


def morlet_response(freqs_hz: np.ndarray, fc: float, settings: AnalysisSettings, nyquist: float) -> np.ndarray:
    """Calibrated analytic response ``2 exp(-pi^2 B C^2 (f/fc - 1)^2)`` for 0 < f < nyquist, else 0,
    times the Nyquist roll-off of :func:`soma_shm.plans.nyquist_taper`."""
    b, c = settings.wavelet_bandwidth, settings.wavelet_center
    h = 2.0 * np.exp(-(math.pi**2) * b * c * c * (freqs_hz / fc - 1.0) ** 2)
    width, centre = nyquist_taper(2 * nyquist)
    h *= 0.5 * erfc((freqs_hz - centre) / (math.sqrt(2.0) * width))
    h[freqs_hz <= 0] = 0.0
    h[freqs_hz >= nyquist] = 0.0
    return h


def cwt_rows_full_rate(audio, fs, s0, s1, freqs, settings):
    """Complex W (float64) at every sample s0..s1 (inclusive) for every row frequency."""
    # 8 sigma of the longest wavelet plus of the Nyquist roll-off's time response: circular
    # convolution must not wrap around into the samples returned.
    taper_sigma = 1.0 / (2.0 * math.pi * NYQUIST_TAPER)
    pad = int(math.ceil(8.0 * (wavelet_sigma_samples(float(np.min(freqs)), fs, settings) + taper_sigma)))
    x = padded(audio, s0 - pad, s1 + 1 + pad)
    n = next_fast_len(len(x) + pad)
    X = rfft(x, n)
    fk = np.arange(len(X)) * fs / n
    rows = np.empty((len(freqs), s1 - s0 + 1), dtype=np.complex128)
    for r, fc in enumerate(freqs):
        full = np.zeros(n, dtype=np.complex128)
        full[: len(X)] = X * morlet_response(fk, fc, settings, fs / 2)
        rows[r] = ifft(full)[pad : pad + s1 - s0 + 1]
    return rows


def cwt_reference(audio, fs, t0, t1, fmin, fmax, width, height, settings=None):
    settings = settings or AnalysisSettings()
    freqs = row_frequencies(fmin, fmax, height)
    a, b = column_bounds(t0, t1, width, fs)
    s0, s1 = int(a.min()), int(b.max())
    mag = np.abs(cwt_rows_full_rate(np.asarray(audio, np.float64), fs, s0, s1, freqs, settings))
    out = np.empty((height, width))
    for c in range(width):
        out[:, c] = mag[:, a[c] - s0 : b[c] - s0 + 1].max(axis=1)
    return out


def stft_reference(audio, fs, t0, t1, fmin, fmax, width, height, settings=None):
    settings = settings or AnalysisSettings()
    nfft, hop = settings.stft_nfft(fs), settings.stft_hop(fs)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(nfft) / nfft)
    scale = 2.0 / window.sum()
    freqs = row_frequencies(fmin, fmax, height)
    if height > 1:
        step = math.log(fmax / fmin) / (height - 1)
        upper, lower = freqs * math.exp(step / 2), freqs * math.exp(-step / 2)
    else:
        upper, lower = np.array([fmax]), np.array([fmin])
    bin_f = np.arange(nfft // 2 + 1) * fs / nfft
    a, b = column_bounds(t0, t1, width, fs)
    audio = np.asarray(audio, np.float64)
    out = np.empty((height, width))
    for c in range(width):
        j0, j1 = -(-a[c] // hop), b[c] // hop
        if j1 < j0:
            j0 = j1 = int(math.floor(0.5 * (a[c] + b[c]) / hop + 0.5))
        mags = np.array(
            [np.abs(rfft(window * padded(audio, j * hop - nfft // 2, j * hop + nfft // 2))) for j in range(j0, j1 + 1)]
        ).max(axis=0) * scale
        for r in range(height):
            sel = (bin_f >= lower[r]) & (bin_f < upper[r])
            if sel.any():
                out[r, c] = mags[sel].max()
            else:
                out[r, c] = np.interp(freqs[r], bin_f, mags)
        # Peak refinement: a sinusoid between bins k and k+-1 has, under a Hann window,
        # |X[k+-1]|/|X[k]| = (1+d)/(2-d) and |X[k]| = A * sin(pi d) / (pi d (1 - d^2)).
        for k in range(1, len(mags) - 1):
            if not (mags[k] > mags[k - 1] and mags[k] >= mags[k + 1]):
                continue
            side = -1 if mags[k - 1] > mags[k + 1] else 1
            alpha = mags[k + side] / mags[k]
            d = min((2 * alpha - 1) / (alpha + 1), 0.5)
            if d <= 1e-6:
                continue
            amp = mags[k] / (np.sin(np.pi * d) / (np.pi * d * (1 - d * d)))
            f = (k + side * d) * fs / nfft
            r = int(np.floor((np.log(fmax) - np.log(f)) / (step if height > 1 else 1.0) + 0.5))
            if 0 <= r < height:
                out[r, c] = max(out[r, c], amp)
    return out


def morlet_pywt(audio, fs, freqs, settings=None):
    """|CWT| from PyWavelets (``pywt.cwt(method='fft')``) with our scale convention s = C fs / f."""
    import pywt

    settings = settings or AnalysisSettings()
    scales = settings.wavelet_center * fs / np.asarray(freqs, dtype=np.float64)
    # precision=16: the default samples the wavelet too coarsely for B = 8 (visible leakage).
    coef, _ = pywt.cwt(np.asarray(audio, np.float64), scales, settings.wavelet, method="fft", precision=16)
    return np.abs(coef)


def db_error(fast: np.ndarray, ref: np.ndarray, floor_db: float = -80.0, amp_reference: float = 1.0):
    """Largest |dB difference| over pixels whose reference is above ``floor_db`` (re amp_reference)."""
    ref = np.asarray(ref, np.float64)
    fast = np.asarray(fast, np.float64)
    mask = ref > amp_reference * 10 ** (floor_db / 20)
    if not mask.any():
        return 0.0
    return float(np.max(np.abs(20 * np.log10(np.maximum(fast[mask], 1e-30) / ref[mask]))))


def synth_reference(points, fs, frames, stretch=1.0, fade_ms=5.0):
    """One partial as the synthesis contract defines it, in float64 with SciPy's PCHIP.

    Frequency and amplitude are monotone cubic (PCHIP) curves through the points; the phase is
    the exact antiderivative of the frequency curve (cycles from the first point); output sample
    ``n`` is at source time ``n / (fs * stretch)`` and advances the phase by ``f / fs``; a
    smoothstep fade of ``fade_ms`` (at most half the partial) shapes both ends; silence outside.
    """
    from scipy.interpolate import PchipInterpolator

    p = np.asarray(points, dtype=np.float64)
    t, f, a = p[:, 0], p[:, 1], p[:, 2]
    out = np.zeros(frames, dtype=np.float64)
    n = np.arange(frames)
    ts = n / (fs * stretch)
    m = (ts >= t[0]) & (ts <= t[-1])
    if len(t) < 2 or not m.any():
        return out
    freq, amp = PchipInterpolator(t, f), PchipInterpolator(t, a)
    cycles = freq.antiderivative()
    phase = stretch * (cycles(ts[m]) - cycles(t[0]))
    x0, x1 = t[0] * fs * stretch, t[-1] * fs * stretch
    fl = min(fade_ms * 1e-3 * fs, 0.5 * (x1 - x0))
    u = np.clip((n[m] - x0) / fl, 0, 1) if fl > 0 else 1.0
    v = np.clip((x1 - n[m]) / fl, 0, 1) if fl > 0 else 1.0
    w = u * u * (3 - 2 * u) * v * v * (3 - 2 * v)
    out[m] = np.maximum(amp(ts[m]), 0.0) * w * np.sin(2 * np.pi * phase)
    return out
