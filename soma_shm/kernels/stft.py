"""Pooled STFT image (numba kernel).

Every Hann frame whose centre lies in a column's span is transformed; the column keeps, per FFT
bin, the maximum power over its frames, then maps bins to log-frequency rows. Pooling the power
spectrum across frames before the row mapping is exact for the plain maximum (max over frames
of max over bins = max over bins of max over frames) and makes the per-column work independent
of the number of frames.

A sine between two bins loses up to 1.4 dB at the nearest bin (Hann scalloping); each local
maximum of the pooled spectrum is therefore refined with the Hann window's exact two-bin ratio
(frequency and amplitude of an isolated sinusoid), and the refined peak goes to the row that holds
the refined frequency.
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import jit, jit_callee, jit_parallel, prange

@jit_callee
def _fill_frames(audio, j0, hop, window, frames):
    """``frames[f] = window * audio[(j0+f)*hop - nfft/2 : ... + nfft]`` (zeros beyond the file)."""
    n = audio.shape[0]
    nfft = window.shape[0]
    half = nfft // 2
    for f in range(frames.shape[0]):
        start = (j0 + f) * hop - half
        if 0 <= start and start + nfft <= n:  # inside the file: a plain (vectorised) product
            for i in range(nfft):
                frames[f, i] = window[i] * audio[start + i]
            continue
        for i in range(nfft):
            s = start + i
            if 0 <= s < n:
                frames[f, i] = window[i] * audio[s]
            else:
                frames[f, i] = 0.0


FRAMES_PER_FFT_CALL = 32  # frames transformed at once: bounds memory per thread (~0.5 MiB at 2048)


@jit_callee
def _pooled_power(spec, power):
    """``power[k] = max(power[k], max_f |spec[f, k]|^2)``."""
    for f in range(spec.shape[0]):
        for k in range(power.shape[0]):
            v = spec[f, k]
            p = float(v.real) * float(v.real) + float(v.imag) * float(v.imag)
            if p > power[k]:
                power[k] = p


@jit_callee
def bins_to_rows(power, bin_row, interp_k, interp_w, log_fmax, log_step, bin_hz, rows):
    """Max-pool a power spectrum into log-frequency rows (power units), refining peaks."""
    H = rows.shape[0]
    nb = power.shape[0]
    for r in range(H):
        rows[r] = 0.0
    for k in range(nb):
        r = bin_row[k]
        if r >= 0 and power[k] > rows[r]:
            rows[r] = power[k]
    for r in range(H):
        k = interp_k[r]
        if k >= 0:
            w = interp_w[r]
            a = (1.0 - w) * math.sqrt(power[k]) + w * math.sqrt(power[k + 1])
            if a * a > rows[r]:
                rows[r] = a * a
    for k in range(1, nb - 1):
        p0 = power[k]
        if not (p0 > power[k - 1] and p0 >= power[k + 1]):
            continue
        # Hann ratio estimator: for a sinusoid at bin k + delta (toward the larger neighbour),
        # |X[k+1]| / |X[k]| = (1 + delta) / (2 - delta) and |X[k]| = A_bin * W(delta) with
        # W(d) = sin(pi d) / (pi d (1 - d^2)). Exact for an isolated sinusoid.
        side = 1
        pn = power[k + 1]
        if power[k - 1] > pn:
            side = -1
            pn = power[k - 1]
        alpha = math.sqrt(pn / p0)
        delta = (2.0 * alpha - 1.0) / (alpha + 1.0)
        if delta <= 1e-6:
            continue
        if delta > 0.5:
            delta = 0.5
        w = math.sin(math.pi * delta) / (math.pi * delta * (1.0 - delta * delta))
        f = (k + side * delta) * bin_hz
        if f <= 0.0:
            continue
        r = int(math.floor((log_fmax - math.log(f)) / log_step + 0.5))
        if 0 <= r < H:
            p = p0 / (w * w)
            if p > rows[r]:
                rows[r] = p


@jit
def pooled_columns_peak(power, bin_row, interp_k, interp_w, log_fmax, log_step, bin_hz, scale):
    """The largest pixel (float32 magnitude) of a pooled STFT image whose column ``c`` pooled the
    power spectrum ``power[c]``: what :func:`stft_pooled_image` would write, maximised, for
    columns pooled elsewhere (:func:`.pyramid.build_base`). NaN if any pixel is NaN."""
    H = interp_k.shape[0]
    rows = np.empty(H, dtype=np.float64)
    peak = np.float32(0.0)
    for c in range(power.shape[0]):
        bins_to_rows(power[c], bin_row, interp_k, interp_w, log_fmax, log_step, bin_hz, rows)
        for r in range(H):
            m = np.float32(math.sqrt(rows[r]) * scale)
            if m != m:
                return m
            if m > peak:
                peak = m
    return peak


@jit_parallel
def stft_pooled_image(
    audio, window, hop, scale, bin_row, interp_k, interp_w, log_fmax, log_step, sample_rate, col_a, col_b, out
):
    """Pooled STFT magnitude image written into ``out`` (H, W) float32.

    Frame ``j`` is centred on sample ``j*hop``. Column ``c`` pools the frames centred in
    ``col_a[c]..col_b[c]`` (absolute sample indices), or the frame nearest its centre, in
    batches of ``FRAMES_PER_FFT_CALL`` frames (memory per thread does not grow with the column).
    """
    H, W = out.shape
    nfft = window.shape[0]
    nb = nfft // 2 + 1
    bin_hz = sample_rate / nfft
    for c in prange(W):
        j0 = (col_a[c] + hop - 1) // hop
        j1 = col_b[c] // hop
        if j1 < j0:
            j0 = int(math.floor(0.5 * (col_a[c] + col_b[c]) / hop + 0.5))
            j1 = j0
        power = np.zeros(nb, dtype=np.float64)
        frames = np.empty((min(j1 - j0 + 1, FRAMES_PER_FFT_CALL), nfft), dtype=np.float32)
        for f0 in range(j0, j1 + 1, FRAMES_PER_FFT_CALL):
            part = frames[: min(FRAMES_PER_FFT_CALL, j1 + 1 - f0)]
            _fill_frames(audio, f0, hop, window, part)
            _pooled_power(np.fft.rfft(part), power)
        rows = np.empty(H, dtype=np.float64)
        bins_to_rows(power, bin_row, interp_k, interp_w, log_fmax, log_step, bin_hz, rows)
        for r in range(H):
            out[r, c] = math.sqrt(rows[r]) * scale
