"""Band-limited, decimated complex-Morlet CWT (numba kernels).

The calibrated analytic response of the row centred on ``fc`` is
``H(f) = 2 exp(-a (f/fc - 1)^2)`` for ``0 < f < fs/2`` (``a = pi^2 B C^2``; rolled off smoothly in
the last few per cent below Nyquist, see :data:`soma_shm.plans.NYQUIST_TAPER`), so a sine of
amplitude A at ``fc`` gives ``|W| = A``. It is negligible outside a band of about ``fc (1 +- 0.27)`` (default
wavelet), so each row needs only the FFT bins of that band: they are weighted, moved to baseband
and inverse-transformed at a decimated rate (``L`` samples for the ``N``-sample window), which
yields ``W`` at every ``N/L``-th sample up to a phase factor that ``|W|`` does not see.

Pooling into a column takes the maximum of ``|W|`` over every sample in its span, which a row
holds only at its decimated samples. One vectorised pass puts ``|W|^2`` at every sample and
half-step (midpoints of a 6-point Lagrange interpolant of the complex baseband signal, smooth
because each row is sampled at twice its band's width); a column's largest half-step between two
others is refined by the parabola through the three (within about 0.02 dB of the true peak).
Column ends are interpolated where they may hold the maximum: on the flank of a transient it
sits at an edge, and near a zero of W (where components beat) ``|W|`` can peak between two
samples that are both well below it. How depends on the column's width in decimated steps
(see :func:`pool_row`): under half a step, every end, by Horner on the interpolant put in
polynomial form once per interval; up to a few steps, every end, each serving two columns;
wider, only ends whose neighbouring half-steps come near the column's best. Rows whose columns
span few samples are sampled 1.25 times denser. Measured against the float64 full-rate reference
on random signals, sample rates and geometries and on the benchmark recording, every pixel above
-80 dB stays within 0.4 dB (tests/test_kernels_cwt.py, perf/bench_kernels.py).

Every function here is pure: arrays and scalars in, results written into the caller's buffers.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft

from ._jit import jit, jit_callee, jit_inline, jit_parallel, prange


@jit_callee
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


@jit_callee
def band_to_baseband(X, klo, khi, fc_bin, gauss_a, taper_bin, taper_width_bins, Y):
    """Weighted band ``X[klo..khi]`` placed around index 0 of ``Y`` (length L), other entries 0.

    The Gaussian gain ``2 exp(-a (k/fc_bin - 1)^2)`` is produced by a two-term recurrence
    (two multiplications per bin instead of an ``exp``); bins near Nyquist are also multiplied
    by the roll-off ``0.5 erfc((k - taper_bin) / (sqrt(2) taper_width_bins))``
    (:func:`soma_shm.plans.nyquist_taper`; 1 to within 1e-12 more than seven widths below its
    centre, where it is skipped).
    """
    L = Y.shape[0]
    kc = (klo + khi) // 2
    # Bins klo..kc-1 go to the end of Y (negative baseband frequencies), kc..khi to its start.
    n_neg = kc - klo
    n_pos = khi - kc + 1
    for i in range(n_pos, L - n_neg):
        Y[i] = 0.0
    d = gauss_a / (fc_bin * fc_bin)
    u = klo - fc_bin
    g = 2.0 * math.exp(-d * u * u)
    ratio = math.exp(-d * (2.0 * u + 1.0))
    q = math.exp(-2.0 * d)
    k_plain = min(khi, int(math.floor(taper_bin - 7.0 * taper_width_bins)))  # no roll-off up to here
    taper_scale = 1.0 / (math.sqrt(2.0) * taper_width_bins)
    j = L - n_neg
    for k in range(klo, khi + 1):
        if k == kc:
            j = 0
        if k <= k_plain:
            Y[j] = X[k] * g
        else:
            Y[j] = X[k] * (g * 0.5 * math.erfc((k - taper_bin) * taper_scale))
        g *= ratio
        ratio *= q
        j += 1


_R120 = 1.0 / 120.0
_R120N = -1.0 / 120.0
_R24 = 1.0 / 24.0
_R24N = -1.0 / 24.0
_R12 = 1.0 / 12.0
_R12N = -1.0 / 12.0


@jit
def interp_power(y, u):
    """``|y(u)|^2`` at fractional index ``u`` by 6-point Lagrange interpolation (circular).

    Rows are sampled at twice their band's width, so the baseband signal is smooth between
    samples; a quintic interpolant keeps its error near 0.1 % where the Gaussian-weighted band
    holds its energy (a cubic one reaches several per cent near zeros of ``W``).
    """
    L = y.shape[0]
    i = int(math.floor(u))
    t = u - i
    d0 = t + 2.0
    d1 = t + 1.0
    d2 = t
    d3 = t - 1.0
    d4 = t - 2.0
    d5 = t - 3.0
    # Products of all differences but one, from prefix and suffix products.
    p01 = d0 * d1
    p012 = p01 * d2
    p0123 = p012 * d3
    s45 = d4 * d5
    s345 = d3 * s45
    s2345 = d2 * s345
    # The denominators prod_{k != j} (j - k) of the Lagrange basis, as reciprocals: a division
    # costs several multiplications, and this runs a few times per pixel.
    w0 = d1 * s2345 * _R120N
    w1 = d0 * s2345 * _R24
    w2 = p01 * s345 * _R12N
    w3 = p012 * s45 * _R12
    w4 = p0123 * d5 * _R24N
    w5 = p0123 * d4 * _R120
    re = 0.0
    im = 0.0
    if 2 <= i and i + 3 < L:
        v = y[i - 2]
        re += w0 * v.real
        im += w0 * v.imag
        v = y[i - 1]
        re += w1 * v.real
        im += w1 * v.imag
        v = y[i]
        re += w2 * v.real
        im += w2 * v.imag
        v = y[i + 1]
        re += w3 * v.real
        im += w3 * v.imag
        v = y[i + 2]
        re += w4 * v.real
        im += w4 * v.imag
        v = y[i + 3]
        re += w5 * v.real
        im += w5 * v.imag
    else:
        v = y[(i - 2) % L]
        re += w0 * v.real
        im += w0 * v.imag
        v = y[(i - 1) % L]
        re += w1 * v.real
        im += w1 * v.imag
        v = y[i % L]
        re += w2 * v.real
        im += w2 * v.imag
        v = y[(i + 1) % L]
        re += w3 * v.real
        im += w3 * v.imag
        v = y[(i + 2) % L]
        re += w4 * v.real
        im += w4 * v.imag
        v = y[(i + 3) % L]
        re += w5 * v.real
        im += w5 * v.imag
    return re * re + im * im


@jit
def quintic_coeffs(y, i, c):
    """Coefficients of the 6-point interpolant of :func:`interp_power` on ``[i, i+1]`` as a
    polynomial in ``t = u - i``: ``y(i + t) = sum_k (c[k] + 1j c[6+k]) t^k`` (circular indices).

    The same interpolant as :func:`interp_power` (up to rounding), in monomial form: where many
    points fall in one interval (rows whose columns are narrower than a step), each further
    point costs a Horner evaluation instead of a new set of Lagrange weights.
    """
    L = y.shape[0]
    if 2 <= i and i + 3 < L:
        a = y[i - 2]
        b = y[i - 1]
        d = y[i]
        e = y[i + 1]
        f = y[i + 2]
        g = y[i + 3]
    else:
        a = y[(i - 2) % L]
        b = y[(i - 1) % L]
        d = y[i % L]
        e = y[(i + 1) % L]
        f = y[(i + 2) % L]
        g = y[(i + 3) % L]
    for part in range(2):
        if part == 0:
            v0, v1, v2, v3, v4, v5 = a.real, b.real, d.real, e.real, f.real, g.real
        else:
            v0, v1, v2, v3, v4, v5 = a.imag, b.imag, d.imag, e.imag, f.imag, g.imag
        o = 6 * part
        # Rows of the inverse Vandermonde matrix of the nodes -2..3, times 120.
        c[o] = v2
        c[o + 1] = (6.0 * v0 - 60.0 * v1 - 40.0 * v2 + 120.0 * v3 - 30.0 * v4 + 4.0 * v5) * _R120
        c[o + 2] = (-5.0 * v0 + 80.0 * v1 - 150.0 * v2 + 80.0 * v3 - 5.0 * v4) * _R120
        c[o + 3] = (-5.0 * v0 - 5.0 * v1 + 50.0 * v2 - 70.0 * v3 + 35.0 * v4 - 5.0 * v5) * _R120
        c[o + 4] = (5.0 * v0 - 20.0 * v1 + 30.0 * v2 - 20.0 * v3 + 5.0 * v4) * _R120
        c[o + 5] = (-v0 + 5.0 * v1 - 10.0 * v2 + 10.0 * v3 - 5.0 * v4 + v5) * _R120


@jit
def poly_power(c, t):
    """``|y(i + t)|^2`` from the coefficients of :func:`quintic_coeffs` (Horner)."""
    re = ((((c[5] * t + c[4]) * t + c[3]) * t + c[2]) * t + c[1]) * t + c[0]
    im = ((((c[11] * t + c[10]) * t + c[9]) * t + c[8]) * t + c[7]) * t + c[6]
    return re * re + im * im


@jit_callee
def _vertex(x1, y1, x2, y2, x3, y3):
    """Abscissa of the vertex of the parabola through three points, or NaN if it opens upwards."""
    den = (x1 - x2) * (x1 - x3) * (x2 - x3)
    if den == 0.0:
        return math.nan
    a = (x3 * (y2 - y1) + x2 * (y1 - y3) + x1 * (y3 - y2)) / den
    if not a < 0.0:
        return math.nan
    b = (x3 * x3 * (y1 - y2) + x2 * x2 * (y3 - y1) + x1 * x1 * (y2 - y3)) / den
    return -b / (2.0 * a)


@jit_callee
def _half_steps_one_by_one(y, h, start, stop):
    """:func:`half_step_powers` for samples ``start <= m < stop``, each through the interpolant."""
    for m in range(start, stop):
        v = y[m]
        h[2 * m] = v.real * v.real + v.imag * v.imag
        h[2 * m + 1] = interp_power(y, m + 0.5)


@jit_callee
def half_step_powers(y, h, lo, hi):
    """``h[2m] = |y[m]|^2`` and ``h[2m+1] = |y(m + 1/2)|^2`` for ``lo <= m <= hi`` (the samples
    under the image; the padding is skipped).

    The midpoints are those of the 6-point interpolant (:func:`interp_power` at ``t = 1/2``,
    weights ``(3, -25, 150, 150, -25, 3) / 256``), computed in one vectorised pass: ``|W|^2`` at
    twice the decimated rate, exact up to float32 rounding, where the pooling looks for peaks
    and which is fine enough for a parabola through three neighbours to give a peak's value.
    """
    L = y.shape[0]
    lo = max(lo, 0)
    hi = min(hi, L - 1)
    # Midpoints whose six neighbours need no wrap-around: m - 2 >= 0 and m + 3 <= L - 1.
    a = max(lo, 2)
    b = min(hi, L - 4)
    # The ends a vectorised pass cannot reach, one by one (the loop touches nothing else).
    first_stop = min(a, hi + 1)
    _half_steps_one_by_one(y, h, lo, first_stop)
    _half_steps_one_by_one(y, h, max(b + 1, first_stop), hi + 1)
    if a <= b:
        # Two passes over float32 arrays indexed from 0 (no negative index possible, so no
        # wrap-around checks): split y[a-2 .. b+3] into real and imaginary parts, then the
        # samples' powers and the midpoints, stored interleaved. Both loops vectorise; reading
        # the interleaved complex values directly in the second loop was 2.3x slower.
        n = b - a + 1
        src = y.view(np.float32)[2 * (a - 2) : 2 * (b + 4)]
        re = np.empty(n + 5, dtype=np.float32)
        im = np.empty(n + 5, dtype=np.float32)
        for j in range(n + 5):
            re[j] = src[2 * j]
            im[j] = src[2 * j + 1]
        dst = h[2 * a : 2 * b + 2]
        w1 = np.float32(150.0 / 256.0)
        w2 = np.float32(-25.0 / 256.0)
        w3 = np.float32(3.0 / 256.0)
        for j in range(n):
            m = j + 2  # index of y[a + j]
            x = re[m]
            z = im[m]
            dst[2 * j] = x * x + z * z
            x = w1 * (re[m] + re[m + 1]) + w2 * (re[m - 1] + re[m + 2]) + w3 * (re[m - 2] + re[m + 3])
            z = w1 * (im[m] + im[m + 1]) + w2 * (im[m - 1] + im[m + 2]) + w3 * (im[m - 2] + im[m + 3])
            dst[2 * j + 1] = x * x + z * z


@jit_inline
def _first_max(hbits, j0, j1):
    """Index of the first maximum of ``hbits[j0..j1]`` (``j0 <= j1``).

    ``hbits`` is a float32 array of non-negative powers viewed as int32: for such floats the bit
    patterns order like the values, and an integer maximum vectorises (a float one does not
    without fast-math, which the accuracy contract rules out). The second loop stops at the
    first match, so the pair reads a column about 1.5 times, at vector speed for the first pass.
    """
    v = hbits[j0 : j1 + 1]  # indexed from 0: no wrap-around checks, so the max vectorises
    m = v[0]
    for j in range(1, v.shape[0]):
        x = v[j]
        m = x if x > m else m
    for j in range(v.shape[0]):
        if v[j] == m:
            return j0 + j
    return j0


@jit_inline
def _parabola_peak(hl, hm, hr):
    """``(s, value)`` of the vertex of the parabola through ``(-1, hl), (0, hm), (1, hr)`` when it
    opens downwards and ``-1 <= s <= 1``; else ``(nan, hm)``.

    On half-steps of a band-limited ``|W|^2`` the parabola's peak is within about 0.02 dB of the
    true one (the worst case, two equal components at the band's -35 dB points beating, puts
    0.9 rad of their phase difference between half-steps; a smooth envelope far less).
    """
    den = hl - 2.0 * hm + hr
    if den < 0.0:
        s = 0.5 * (hl - hr) / den
        if -1.0 <= s <= 1.0:
            d = hr - hl
            return s, hm - 0.125 * d * d / den
    return math.nan, hm


@jit_inline
def column_peak(y, h, hbits, ua, ub, pa, pb, pa_out, pb_out, step_out):
    """Max of ``|y(u)|^2`` over ``ua <= u <= ub`` for one column of one row.

    ``h[j]`` holds ``|y|^2`` at ``u = j/2`` (samples and half-steps, :func:`half_step_powers`;
    ``hbits`` is the same array viewed as int32, see :func:`_first_max`); ``pa``/``pb`` are the
    powers at the column's first and last sample, ``pa_out``/``pb_out`` one original sample
    outside them (``step_out`` decimated units away).

    The best of the ends and the half-steps inside the column is located. A half-step between
    two others inside the column is refined by the parabola through the three; at or next to an
    end, a parabola through the best point and its neighbours (the end, or the sample outside
    it, on the other side; amplitudes) locates the peak, where the 6-point interpolant gives
    the value.
    """
    n2 = h.shape[0]
    best = pa
    bx = ua
    if pb > best:
        best = pb
        bx = ub
    j0 = int(math.floor(2.0 * ua)) + 1
    j1 = int(math.ceil(2.0 * ub)) - 1
    if j0 < 0:
        j0 = 0
    if j1 > n2 - 1:
        j1 = n2 - 1
    if j0 <= j1:
        jb = _first_max(hbits, j0, j1)
        if h[jb] > best:
            best = h[jb]
            bx = 0.5 * jb
            if j0 < jb < j1:
                s, v = _parabola_peak(h[jb - 1], best, h[jb + 1])
                return v
    # Neighbours half a step either side of the best point (or the outside samples at the ends).
    if bx == ua:
        xl, pl = ua - step_out, pa_out
    else:
        xl = bx - 0.5
        if xl <= ua:
            xl, pl = ua, pa
        else:
            pl = h[int(round(2.0 * xl))]
    if bx == ub:
        xr, pr = ub + step_out, pb_out
    else:
        xr = bx + 0.5
        if xr >= ub:
            xr, pr = ub, pb
        else:
            pr = h[int(round(2.0 * xr))]
    a0 = math.sqrt(best)
    al = math.sqrt(pl)
    ar = math.sqrt(pr)
    if al < a0 and ar < a0:
        u = _vertex(xl, al, bx, a0, xr, ar)
        if ua <= u <= ub and u != bx:
            v = interp_power(y, u)
            if v > best:
                best = v
    return best


@jit_callee
def _column_spans(col_a, col_b):
    """Narrowest and widest column (samples from first to last)."""
    lo = hi = col_b[0] - col_a[0]
    for c in range(1, col_a.shape[0]):
        w = col_b[c] - col_a[c]
        lo = min(lo, w)
        hi = max(hi, w)
    return lo, hi


LAZY_EDGE_STEPS = 4.0
"""Rows whose columns all span at least this many decimated steps evaluate column edges only
for columns whose maximum is at or next to an edge (:func:`_pool_lazy`). In narrower columns
the maximum is mostly at an edge, so most edges are needed anyway, and :func:`_pool_eager`
computes each once for two columns: on perf/bench_kernels.py's cwt2 rows, thresholds of 2 or 3
steps pooled no faster than 4, side by side."""


@jit_callee
def pool_row(y, step, offset, col_a, col_b, scale, out_row):
    """Max-pool ``|W|`` of one decimated row into image columns.

    ``y[m]`` is W (times ``1/scale``) at original sample ``m*step - offset`` relative to the window
    start; column ``c`` pools samples ``col_a[c]..col_b[c]`` (inclusive, window-relative).
    Three ways, by how many decimated steps a column spans: under half a step
    (:func:`_pool_narrow`), at least :data:`LAZY_EDGE_STEPS` (:func:`_pool_lazy`), in between
    (:func:`_pool_eager`).
    """
    inv = 1.0 / step
    narrowest, widest = _column_spans(col_a, col_b)
    if widest * inv < 0.5:
        _pool_narrow(y, inv, offset, col_a, col_b, scale, out_row)
    elif narrowest * inv >= LAZY_EDGE_STEPS:
        _pool_lazy(y, inv, offset, col_a, col_b, scale, out_row)
    else:
        _pool_eager(y, inv, offset, col_a, col_b, scale, out_row)


@jit_callee
def _peak_inside_narrow(y, ua, ub, pa, pb, before, after):
    """Max of ``|y|^2`` over a column narrower than half a step, given its end powers ``pa``,
    ``pb`` and the powers one sample outside (``before``, ``after``).

    |W| cannot turn twice inside: the ends hold the maximum unless the envelope rises into the
    column at both of them (a peak inside), which a parabola through the ends and the middle
    locates.
    """
    best = pa if pa > pb else pb
    if before < pa and after < pb and ub - ua > 1e-9:
        xm = 0.5 * (ua + ub)
        pm = interp_power(y, xm)
        if pm > best:
            best = pm
        u = _vertex(ua, math.sqrt(pa), xm, math.sqrt(pm), ub, math.sqrt(pb))
        if ua < u < ub:
            v = interp_power(y, u)
            if v > best:
                best = v
    return best


@jit_callee
def _pool_narrow(y, inv, offset, col_a, col_b, scale, out_row):
    """:func:`pool_row` for rows whose every column is narrower than half a decimated step.

    Most of the work is the column edges, several of which fall between the same two samples:
    the interpolant is put in polynomial form once per interval (:func:`quintic_coeffs`) and
    evaluated by Horner at every edge in it, in one sweep from left to right.
    """
    W = out_row.shape[0]
    coef = np.empty(12, dtype=np.float64)
    u = (col_a[0] - 1 + offset) * inv
    cur = int(math.floor(u))
    quintic_coeffs(y, cur, coef)
    prev_b = poly_power(coef, u - cur)  # power at the sample before the first column
    ua = (col_a[0] + offset) * inv
    i = int(math.floor(ua))
    if i != cur:
        quintic_coeffs(y, i, coef)
        cur = i
    pa = poly_power(coef, ua - i)
    for c in range(W):
        if c > 0 and col_b[c - 1] != col_a[c] - 1:
            before = interp_power(y, (col_a[c] - 1 + offset) * inv)
        else:
            before = prev_b
        if col_b[c] == col_a[c]:
            ub = ua
            pb = pa
        else:
            ub = (col_b[c] + offset) * inv
            i = int(math.floor(ub))
            if i != cur:
                quintic_coeffs(y, i, coef)
                cur = i
            pb = poly_power(coef, ub - i)
        un = 0.0
        pn = 0.0
        if c < W - 1:
            un = (col_a[c + 1] + offset) * inv
            i = int(math.floor(un))
            if i != cur:
                quintic_coeffs(y, i, coef)
                cur = i
            pn = poly_power(coef, un - i)
        if c < W - 1 and col_a[c + 1] == col_b[c] + 1:
            after = pn
        else:
            after = interp_power(y, (col_b[c] + 1 + offset) * inv)
        v = pa if pa > pb else pb
        if before < pa and after < pb:  # rare: the call (not inlined) costs a third of the loop
            v = _peak_inside_narrow(y, ua, ub, pa, pb, before, after)
        out_row[c] = math.sqrt(v) * scale
        prev_b = pb
        ua = un
        pa = pn


@jit_callee
def _pool_eager(y, inv, offset, col_a, col_b, scale, out_row):
    """:func:`pool_row` for rows whose columns span from about half a step to a few steps.

    Every column edge is interpolated (one pass, independent evaluations), each serving as one
    column's end and as its neighbour's outside value; :func:`column_peak` then combines them
    with the half-step scan of the column.
    """
    W = out_row.shape[0]
    L = y.shape[0]
    h = np.empty(2 * L, dtype=np.float32)
    half_step_powers(y, h, int((col_a[0] + offset) * inv) - 1, int((col_b[W - 1] + offset) * inv) + 2)
    hbits = h.view(np.int32)
    first = np.empty(W, dtype=np.float64)
    last = np.empty(W, dtype=np.float64)
    for c in range(W):
        first[c] = interp_power(y, (col_a[c] + offset) * inv)
        if col_b[c] == col_a[c]:
            last[c] = first[c]
        else:
            last[c] = interp_power(y, (col_b[c] + offset) * inv)
    for c in range(W):
        if c > 0 and col_b[c - 1] == col_a[c] - 1:
            before = last[c - 1]
        else:
            before = interp_power(y, (col_a[c] - 1 + offset) * inv)
        if c < W - 1 and col_a[c + 1] == col_b[c] + 1:
            after = first[c + 1]
        else:
            after = interp_power(y, (col_b[c] + 1 + offset) * inv)
        ua = (col_a[c] + offset) * inv
        ub = (col_b[c] + offset) * inv
        if ub - ua < 0.5:
            v = first[c] if first[c] > last[c] else last[c]
            if before < first[c] and after < last[c]:
                v = _peak_inside_narrow(y, ua, ub, first[c], last[c], before, after)
        else:
            v = column_peak(y, h, hbits, ua, ub, first[c], last[c], before, after, inv)
        out_row[c] = math.sqrt(v) * scale


NEAR_TOP = 10.0 ** (-0.3 / 10.0)
"""In :func:`_pool_lazy`, a column edge is evaluated when the larger of the half-steps either
side of it comes within 0.3 dB of the best value found in the column so far: between two
half-steps |W|^2 rises at most about 0.25 dB above the larger one for components anywhere in a
row's band (two equal components at the band's -35 dB points, beating), so an edge whose
witnesses are further below cannot hold the column's maximum."""


@jit_inline
def _peak_near(y, h, j, ua, ub):
    """Max of ``|y|^2`` near half-step ``j`` (inside ``[ua, ub]``) within the column.

    The peak of the parabola through ``h[j-1..j+1]`` when its vertex falls in the column; the
    column's end when the vertex lies beyond it or ``|W|`` rises towards an end within half a
    step (interpolated); else ``h[j]``.
    """
    x = 0.5 * j
    s, v = _parabola_peak(h[j - 1], h[j], h[j + 1])
    if s == s:
        u = x + 0.5 * s
        if ua <= u <= ub:
            return v
        return interp_power(y, ua if u < ua else ub)
    end = ua if h[j - 1] > h[j + 1] else ub
    if abs(end - x) <= 0.5:
        p = interp_power(y, end)
        if p > v:
            v = p
    return v


@jit_callee
def _pool_lazy(y, inv, offset, col_a, col_b, scale, out_row):
    """:func:`pool_row` for rows whose columns span :data:`LAZY_EDGE_STEPS` or more.

    One vectorised pass computes ``|y|^2`` at every sample and half-step (:func:`half_step_powers`).
    Per column, the first maximum of the half-steps not next to an edge is refined where it is
    (:func:`_peak_near`). The half-steps either side of each edge are the edge's witnesses: if
    the larger comes within :data:`NEAR_TOP` of the best value so far, |W| may peak at or next
    to that edge (the flank of a transient, a slow swell), and the same refinement runs there,
    clamped to the column (an end it reaches is interpolated).
    """
    W = out_row.shape[0]
    L = y.shape[0]
    h = np.empty(2 * L, dtype=np.float32)
    half_step_powers(y, h, int((col_a[0] + offset) * inv) - 1, int((col_b[W - 1] + offset) * inv) + 2)
    hbits = h.view(np.int32)
    for c in range(W):
        ua = (col_a[c] + offset) * inv
        ub = (col_b[c] + offset) * inv
        j0 = int(math.floor(2.0 * ua)) + 1  # first half-step inside the column
        j1 = int(math.ceil(2.0 * ub)) - 1  # last
        jin = _first_max(hbits, j0 + 1, j1 - 1)
        v = _peak_near(y, h, jin, ua, ub)
        # An edge's witnesses are the half-steps either side of it; the stronger side first.
        left = max(h[j0 - 1], h[j0])
        right = max(h[j1], h[j1 + 1])
        if left >= right:
            j_first, w_first, j_second, w_second = j0, left, j1, right
        else:
            j_first, w_first, j_second, w_second = j1, right, j0, left
        if w_first >= NEAR_TOP * v:
            v = max(v, _peak_near(y, h, j_first, ua, ub))
        if w_second >= NEAR_TOP * v:
            v = max(v, _peak_near(y, h, j_second, ua, ub))
        out_row[c] = math.sqrt(v) * scale


@jit_callee
def decimated_row(X, nfft, klo, khi, fc_bin, gauss_a, taper_bin, taper_width_bins, nifft):
    """Baseband W of one row at ``nifft`` samples over the segment (complex64), and its scale."""
    Y = np.empty(nifft, dtype=np.complex64)
    band_to_baseband(X, klo, khi, fc_bin, gauss_a, taper_bin, taper_width_bins, Y)
    # Unnormalised inverse (the 1/nfft that W carries goes into the pooled magnitude), in place.
    y = scipy.fft.ifft(Y, norm="forward", overwrite_x=True)
    return y, 1.0 / nfft


@jit_parallel
def segment_spectra(audio, s0, seg_pad, seg_nfft):
    """Real FFTs of the padded window of every segment, concatenated; returns (spectra, offsets).

    Computed in single precision (the display floor is -80 dB; float32 FFT round-off sits
    near -130 dB of the window's energy), segments in parallel.
    """
    G = seg_pad.shape[0]
    offsets = np.zeros(G + 1, dtype=np.int64)
    for g in range(G):
        offsets[g + 1] = offsets[g] + seg_nfft[g] // 2 + 1
    spectra = np.empty(offsets[G], dtype=np.complex64)
    for g in prange(G):
        x = np.empty(seg_nfft[g], dtype=np.float32)
        fill_padded(audio, s0 - seg_pad[g], x)
        spectra[offsets[g] : offsets[g + 1]] = np.fft.rfft(x)
    return spectra, offsets


@jit_callee
def plan_row(spectra, offsets, segs, rows, wavelet, r):
    """Decimated baseband W of plan row ``r``: returns ``(y, scale, segment)``.

    ``segs = (seg_pad, seg_nfft)``, ``rows = (row_seg, row_klo, row_khi, row_nifft, row_fc, ...)``
    and ``wavelet = (sample_rate, gauss_a, taper_centre, taper_width)`` are a :class:`CwtPlan`'s
    arrays (see ``CwtPlan.kernel_args``); ``spectra``/``offsets`` come from :func:`segment_spectra`.
    """
    seg_nfft = segs[1]
    row_seg = rows[0]
    row_klo = rows[1]
    row_khi = rows[2]
    row_nifft = rows[3]
    row_fc = rows[4]
    sample_rate, gauss_a, taper_centre, taper_width = wavelet
    g = row_seg[r]
    nfft = seg_nfft[g]
    y, scale = decimated_row(
        spectra[offsets[g] : offsets[g + 1]],
        nfft,
        row_klo[r],
        row_khi[r],
        row_fc[r] * nfft / sample_rate,
        gauss_a,
        taper_centre * nfft / sample_rate,
        taper_width * nfft / sample_rate,
        row_nifft[r],
    )
    return y, scale, g


@jit_parallel
def cwt_pooled_image(audio, s0, segs, rows, wavelet, row_order, col_a, col_b, out):
    """Calibrated CWT magnitude image, max-pooled per column, written into ``out`` (H, W) float32.

    ``s0`` is the absolute index of the window's first sample; ``col_a``/``col_b`` are column
    sample bounds relative to ``s0``; ``segs, rows, wavelet`` are the plan's arrays (see
    :func:`plan_row`; ``rows[5:8]`` map each work row to its image row and columns).
    ``row_order`` lists the work rows in the order the threads should take them (interleaved by
    cost so that a static split of the ``prange`` is balanced).
    """
    seg_pad, seg_nfft = segs
    row_nifft = rows[3]
    row_image = rows[5]
    row_c0 = rows[6]
    row_c1 = rows[7]
    spectra, offsets = segment_spectra(audio, s0, seg_pad, seg_nfft)
    for i in prange(row_order.shape[0]):
        r = row_order[i]
        y, scale, g = plan_row(spectra, offsets, segs, rows, wavelet, r)
        c0 = row_c0[r]
        c1 = row_c1[r]
        pool_row(
            y, seg_nfft[g] / row_nifft[r], seg_pad[g], col_a[c0:c1], col_b[c0:c1], scale, out[row_image[r], c0:c1]
        )
