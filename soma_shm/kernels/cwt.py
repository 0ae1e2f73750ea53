"""Band-limited, decimated complex-Morlet CWT (numba kernels).

The calibrated analytic response of the row centred on ``fc`` is
``H(f) = 2 exp(-a (f/fc - 1)^2)`` for ``f > 0`` (``a = pi^2 B C^2``), so a sine of amplitude A at
``fc`` gives ``|W| = A``. It is negligible outside a band of about ``fc (1 +- 0.25)`` (default
wavelet), so each row needs only the FFT bins of that band: they are weighted, moved to baseband
and inverse-transformed at a decimated rate (``L`` samples for the ``N``-sample window), which
yields ``W`` at every ``N/L``-th sample up to a phase factor that ``|W|`` does not see.

Pooling into a column takes the maximum of ``|W|`` over the decimated samples inside the column
and over the values at the column's first and last sample, interpolated (cubic Lagrange on the
complex baseband signal, which is smooth because the band is oversampled). The end points matter:
on the flank of a transient the maximum of a column sits at its edge, and the nearest decimated
sample can be far below it.

Every function here is pure: arrays and scalars in, results written into the caller's buffers.
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import jit, jit_parallel, prange


@jit
def fill_padded(audio, start, x):
    """``x[i] = audio[start + i]`` where that index exists in the file, else 0."""
    n = audio.shape[0]
    N = x.shape[0]
    lo = min(max(0, -start), N)
    hi = max(min(N, n - start), lo)
    for i in range(lo):
        x[i] = 0.0
    for i in range(lo, hi):
        x[i] = audio[start + i]
    for i in range(hi, N):
        x[i] = 0.0


@jit
def band_to_baseband(X, klo, khi, fc_bin, gauss_a, taper_bin, taper_width_bins, Y):
    """Weighted band ``X[klo..khi]`` placed around index 0 of ``Y`` (length L), other entries 0.

    The Gaussian gain ``2 exp(-a (k/fc_bin - 1)^2)`` is produced by a two-term recurrence
    (two multiplications per bin instead of an ``exp``); bins above ``taper_bin`` are also
    multiplied by the Nyquist roll-off ``exp(-((k - taper_bin)/taper_width_bins)^2 / 2)``.
    """
    L = Y.shape[0]
    for i in range(L):
        Y[i] = 0.0
    kc = (klo + khi) // 2
    d = gauss_a / (fc_bin * fc_bin)
    u = klo - fc_bin
    g = 2.0 * math.exp(-d * u * u)
    ratio = math.exp(-d * (2.0 * u + 1.0))
    q = math.exp(-2.0 * d)
    for k in range(klo, khi + 1):
        j = (k - kc) % L
        if k > taper_bin:
            z = (k - taper_bin) / taper_width_bins
            Y[j] = X[k] * (g * math.exp(-0.5 * z * z))
        else:
            Y[j] = X[k] * g
        g *= ratio
        ratio *= q


@jit
def interp_power(y, u):
    """``|y(u)|^2`` at fractional index ``u`` by 4-point Lagrange interpolation (circular)."""
    L = y.shape[0]
    i = int(math.floor(u))
    t = u - i
    wm = -t * (t - 1.0) * (t - 2.0) / 6.0
    w0 = (t + 1.0) * (t - 1.0) * (t - 2.0) / 2.0
    w1 = -(t + 1.0) * t * (t - 2.0) / 2.0
    w2 = (t + 1.0) * t * (t - 1.0) / 6.0
    a = y[(i - 1) % L]
    b = y[i % L]
    c = y[(i + 1) % L]
    e = y[(i + 2) % L]
    re = wm * a.real + w0 * b.real + w1 * c.real + w2 * e.real
    im = wm * a.imag + w0 * b.imag + w1 * c.imag + w2 * e.imag
    return re * re + im * im


@jit
def pool_row(y, step, offset, col_a, col_b, scale, out_row):
    """Max-pool ``|W|`` of one decimated row into image columns.

    ``y[m]`` is W (times ``1/scale``) at original sample ``m*step - offset`` relative to the window
    start; column ``c`` pools samples ``col_a[c]..col_b[c]`` (inclusive, window-relative).
    """
    L = y.shape[0]
    inv = 1.0 / step
    for c in range(out_row.shape[0]):
        ua = (col_a[c] + offset) * inv
        ub = (col_b[c] + offset) * inv
        best = interp_power(y, ua)
        p = interp_power(y, ub)
        if p > best:
            best = p
        m0 = int(math.ceil(ua))
        m1 = int(math.floor(ub))
        if m1 >= m0:
            mbest = m0
            pbest = -1.0
            for m in range(m0, m1 + 1):
                v = y[m % L]
                p = v.real * v.real + v.imag * v.imag
                if p > pbest:
                    pbest = p
                    mbest = m
            if pbest > best:
                best = pbest
            # The envelope's peak may lie between samples: a parabola through the amplitudes
            # around the best sample locates it, and the interpolant is evaluated there.
            # The envelope's peak may lie between samples (and near a zero of W it can be
            # sharp): probe the interpolant half-way to both neighbours, then put a parabola
            # through the best probe and its two half-step neighbours and probe its vertex.
            u0 = float(mbest)
            am = math.sqrt(interp_power(y, u0 - 0.5)) if u0 - 0.5 > ua else -1.0
            ap = math.sqrt(interp_power(y, u0 + 0.5)) if u0 + 0.5 < ub else -1.0
            a0 = math.sqrt(pbest)
            if am > a0 and am >= ap:
                u0 -= 0.5
                ap = a0
                a0 = am
                am = abs(y[(mbest - 1) % L]) if u0 - 0.5 >= ua else -1.0
            elif ap > a0:
                u0 += 0.5
                am = a0
                a0 = ap
                ap = abs(y[(mbest + 1) % L]) if u0 + 0.5 <= ub else -1.0
            if a0 * a0 > best:
                best = a0 * a0
            if am >= 0.0 and ap >= 0.0:
                den = am - 2.0 * a0 + ap
                if den < 0.0:
                    d = 0.25 * (am - ap) / den
                    u = u0 + d
                    if ua < u < ub:
                        p = interp_power(y, u)
                        if p > best:
                            best = p
        elif ub > ua:
            p = interp_power(y, 0.5 * (ua + ub))
            if p > best:
                best = p
        out_row[c] = math.sqrt(best) * scale


@jit
def decimated_row(X, nfft, klo, khi, fc_bin, gauss_a, taper_bin, taper_width_bins, nifft):
    """Baseband W of one row at ``nifft`` samples over the segment (complex64), and its scale."""
    Y = np.empty(nifft, dtype=np.complex64)
    band_to_baseband(X, klo, khi, fc_bin, gauss_a, taper_bin, taper_width_bins, Y)
    y = np.fft.ifft(Y)
    # numpy's ifft divides by nifft; W itself carries 1/nfft.
    return y, nifft / nfft


@jit_parallel
def cwt_pooled_image(
    audio,
    s0,
    seg_pad,
    seg_nfft,
    seg_rows,
    row_order,
    row_klo,
    row_khi,
    row_nifft,
    row_fc,
    sample_rate,
    gauss_a,
    taper_start,
    taper_width,
    col_a,
    col_b,
    out,
):
    """Calibrated CWT magnitude image, max-pooled per column, written into ``out`` (H, W) float32.

    ``s0`` is the absolute index of the window's first sample; ``col_a``/``col_b`` are column
    sample bounds relative to ``s0``. The rows of segment ``g`` are
    ``row_order[seg_rows[g]:seg_rows[g+1]]``, listed in the order the threads should take them
    (interleaved by cost so that a static split of the ``prange`` is balanced).
    """
    for g in range(seg_pad.shape[0]):
        nfft = seg_nfft[g]
        pad = seg_pad[g]
        x = np.empty(nfft, dtype=np.float64)
        fill_padded(audio, s0 - pad, x)
        X = np.fft.rfft(x)
        first = seg_rows[g]
        for i in prange(seg_rows[g + 1] - first):
            r = row_order[first + i]
            fc_bin = row_fc[r] * nfft / sample_rate
            y, scale = decimated_row(
                X,
                nfft,
                row_klo[r],
                row_khi[r],
                fc_bin,
                gauss_a,
                taper_start * nfft / sample_rate,
                taper_width * nfft / sample_rate,
                row_nifft[r],
            )
            pool_row(y, nfft / row_nifft[r], pad, col_a, col_b, scale, out[r])
