"""Additive sine resynthesis of partials into a caller's buffer.

A partial is ``K`` knots ``(t_k, f_k, a_k)``. Frequency and amplitude between knots are monotone
cubic Hermite curves (Fritsch-Carlson slopes, :func:`pchip_slopes`): smooth, and never beyond
the neighbouring knots, so an amplitude never turns negative and a frequency never overshoots.
The phase is the integral of the frequency, in closed form per segment (the integral of a cubic
Hermite is a quartic), accumulated per knot once (:func:`knot_phases`). The phase at any output
sample is therefore a function of that sample's index alone, never of where a render started:
rendering a partial alone, in pieces, or among ten thousand others gives the same samples, so an
edit can subtract a partial's old samples from a mix and add its new ones.

Time stretch: output sample ``n`` is at source time ``n / (fs * stretch)``; the frequency at a
source time is kept (pitch preserved) and the phase advances by ``f / fs`` per output sample.

Cost per output sample of a sounding partial: a quartic phase polynomial, a cubic amplitude
polynomial, a degree-11 odd sine polynomial (float32, error below 6e-8) and one add into
``out``. A partial is cut into pieces at every knot and every :data:`BLOCK` output samples;
within a piece the phase and amplitude are exact polynomials of the sample index (their Taylor
coefficients at the piece's first sample), so the only error is rounding. The inner loop has no
dependency between samples and vectorises. A ``fade`` (output samples, smoothstep) shapes both
ends of every partial.

Parallel renders split the output into chunks of :data:`CHUNK` samples, each rendered by one
thread from a list of the partials that overlap it (:func:`chunk_lists`): no two threads write
the same sample and the order of the sum is fixed.
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import jit, jit_callee, jit_inline, jit_parallel, prange

BLOCK = 256
"""Longest piece in output samples (bounds the rounding of the phase polynomial; pieces start at
multiples of it and at knots)."""

CHUNK = 8192
"""Output samples per parallel work unit."""

TWO_PI = 2.0 * math.pi
# Taylor coefficients of sin(2 pi y) for |y| <= 1/4: error below 6e-8 at y = 1/4.
_S1 = TWO_PI
_S3 = -(TWO_PI**3) / 6.0
_S5 = TWO_PI**5 / 120.0
_S7 = -(TWO_PI**7) / 5040.0
_S9 = TWO_PI**9 / 362880.0
_S11 = -(TWO_PI**11) / 39916800.0
_F1, _F3, _F5, _F7, _F9, _F11 = (np.float32(c) for c in (_S1, _S3, _S5, _S7, _S9, _S11))


@jit_callee
def pchip_slopes(t, y, lo, hi, m):
    """Fritsch-Carlson monotone slopes of ``y(t)`` over knots ``lo..hi-1`` into ``m``.

    A knot between segments whose secants differ in sign (a peak or a valley) gets slope 0, so
    the curve stays between its knots; ends use the one-sided three-point formula, limited the
    same way. One knot: slope 0.
    """
    n = hi - lo
    if n == 1:
        m[lo] = 0.0
        return
    if n == 2:
        s = (y[lo + 1] - y[lo]) / (t[lo + 1] - t[lo])
        m[lo] = s
        m[lo + 1] = s
        return
    for k in range(lo + 1, hi - 1):
        h0 = t[k] - t[k - 1]
        h1 = t[k + 1] - t[k]
        d0 = (y[k] - y[k - 1]) / h0
        d1 = (y[k + 1] - y[k]) / h1
        if d0 * d1 <= 0.0:
            m[k] = 0.0
        else:
            w0 = 2.0 * h1 + h0
            w1 = h1 + 2.0 * h0
            m[k] = (w0 + w1) / (w0 / d0 + w1 / d1)
    # Ends: three-point estimate, kept monotone.
    for end in range(2):
        if end == 0:
            k0, k1, k2 = lo, lo + 1, lo + 2
        else:
            k0, k1, k2 = hi - 1, hi - 2, hi - 3
        h0 = abs(t[k1] - t[k0])
        h1 = abs(t[k2] - t[k1])
        d0 = (y[k1] - y[k0]) / (t[k1] - t[k0])
        d1 = (y[k2] - y[k1]) / (t[k2] - t[k1])
        s = ((2.0 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
        if s * d0 <= 0.0:
            s = 0.0
        elif d0 * d1 <= 0.0 and abs(s) > 3.0 * abs(d0):
            s = 3.0 * d0
        m[k0] = s


@jit_callee
def _segment_integral(f0, f1, m0, m1, h, u):
    """Integral of the Hermite cubic (f0, f1, slopes m0, m1 over width h) from 0 to u*h."""
    u2 = u * u
    u3 = u2 * u
    u4 = u3 * u
    i00 = u - u3 + 0.5 * u4
    i10 = 0.5 * u2 - (2.0 / 3.0) * u3 + 0.25 * u4
    i01 = u3 - 0.5 * u4
    i11 = -(1.0 / 3.0) * u3 + 0.25 * u4
    return h * (f0 * i00 + h * m0 * i10 + f1 * i01 + h * m1 * i11)


@jit_callee
def knot_phases(t, f, mf, lo, hi, phase):
    """``phase[k]`` = cycles from knot ``lo`` to knot ``k`` (integral of the frequency curve)."""
    phase[lo] = 0.0
    for k in range(lo, hi - 1):
        phase[k + 1] = phase[k] + _segment_integral(f[k], f[k + 1], mf[k], mf[k + 1], t[k + 1] - t[k], 1.0)


@jit_callee
def prepare_one(t, f, a, mf, ma, phase, lo, hi):
    """Slopes of frequency and amplitude and knot phases of the partial of knots lo..hi-1."""
    pchip_slopes(t, f, lo, hi, mf)
    pchip_slopes(t, a, lo, hi, ma)
    knot_phases(t, f, mf, lo, hi, phase)


@jit_parallel
def prepare(t, f, a, offsets, mf, ma, phase):
    """:func:`prepare_one` for every partial (CSR ``offsets``), partials in parallel."""
    for p in prange(offsets.shape[0] - 1):
        prepare_one(t, f, a, mf, ma, phase, offsets[p], offsets[p + 1])


@jit
def prepare_serial(t, f, a, offsets, mf, ma, phase):
    """:func:`prepare` on the calling thread (a few partials: an edit)."""
    for p in range(offsets.shape[0] - 1):
        prepare_one(t, f, a, mf, ma, phase, offsets[p], offsets[p + 1])


@jit_callee
def _taylor(t, f, a, mf, ma, phase, lo, hi, k, ts):
    """At source time ``ts`` (knot segment ``k``, which must hold ``ts``): the phase (cycles)
    and the first three derivatives of the frequency and of the amplitude (per second), from
    the segment's cubics in power form. Past the last knot: the end values, constant."""
    last = hi - 1
    if ts >= t[last]:
        return phase[last] + f[last] * (ts - t[last]), f[last], 0.0, 0.0, 0.0, a[last], 0.0, 0.0, 0.0
    h = t[k + 1] - t[k]
    u = (ts - t[k]) / h
    ih = 1.0 / h
    ph = phase[k] + _segment_integral(f[k], f[k + 1], mf[k], mf[k + 1], h, u)
    # frequency cubic p0 + p1 u + p2 u^2 + p3 u^3 over the segment
    m0 = h * mf[k]
    m1 = h * mf[k + 1]
    p1 = m0
    p2 = 3.0 * (f[k + 1] - f[k]) - 2.0 * m0 - m1
    p3 = 2.0 * (f[k] - f[k + 1]) + m0 + m1
    fr = f[k] + u * (p1 + u * (p2 + u * p3))
    f1 = (p1 + u * (2.0 * p2 + 3.0 * p3 * u)) * ih
    f2 = (2.0 * p2 + 6.0 * p3 * u) * ih * ih
    f3 = 6.0 * p3 * ih * ih * ih
    n0 = h * ma[k]
    n1 = h * ma[k + 1]
    q1 = n0
    q2 = 3.0 * (a[k + 1] - a[k]) - 2.0 * n0 - n1
    q3 = 2.0 * (a[k] - a[k + 1]) + n0 + n1
    am = a[k] + u * (q1 + u * (q2 + u * q3))
    a1 = (q1 + u * (2.0 * q2 + 3.0 * q3 * u)) * ih
    a2 = (2.0 * q2 + 6.0 * q3 * u) * ih * ih
    a3 = 6.0 * q3 * ih * ih * ih
    return ph, fr, f1, f2, f3, am, a1, a2, a3


@jit_callee
def _find_knot(t, lo, hi, ts):
    """Last knot index in lo..hi-2 with t <= ts (lo if ts is before the first)."""
    a = lo
    b = hi - 2
    if b < a:
        return lo
    while a < b:
        mid = (a + b + 1) // 2
        if t[mid] <= ts:
            a = mid
        else:
            b = mid - 1
    return a


@jit_callee
def partial_span(t, lo, hi, fs, stretch):
    """First and last output sample (inclusive) of the partial whose knots are lo..hi-1; a
    partial of one knot has no duration and no samples (last < first)."""
    if hi - lo < 2:
        return 0, -1
    s = fs * stretch
    n0 = int(math.ceil(t[lo] * s))
    n1 = int(math.floor(t[hi - 1] * s))
    return n0, n1


@jit_inline
def _sines(o, j0, c0, c1, c2, c3, c4, g0, g1, g2, g3):
    """``o[i] += (g0 + g1 j + g2 j^2 + g3 j^3) sin(2 pi (c0 + c1 j + ... + c4 j^4))`` for
    ``j = j0 + i``: phase and amplitude in float64, the sine polynomial in float32.

    Indexing a slice from 0 (not ``out[base + j]``) lets numba drop its negative-index check,
    and the loop vectorises."""
    for i in range(o.shape[0]):
        j = np.float64(i + j0)
        x = c0 + j * (c1 + j * (c2 + j * (c3 + j * c4)))
        r = x - math.floor(x + 0.5)
        ar = abs(r)
        y = np.float32(math.copysign(min(ar, 0.5 - ar), r))
        z = y * y
        s = y * (_F1 + z * (_F3 + z * (_F5 + z * (_F7 + z * (_F9 + z * _F11)))))
        o[i] += np.float32(g0 + j * (g1 + j * (g2 + j * g3))) * s


@jit_inline
def _sines_faded(o, j0, c0, c1, c2, c3, c4, g0, g1, g2, g3, d0, d1, inv_fl):
    """:func:`_sines` times the smoothstep fades: sample ``j`` is ``d0 + j`` samples after the
    partial's start and ``d1 - j`` before its end; ``inv_fl`` is 1 / fade length (0: no fade)."""
    for i in range(o.shape[0]):
        j = np.float64(i + j0)
        x = c0 + j * (c1 + j * (c2 + j * (c3 + j * c4)))
        r = x - math.floor(x + 0.5)
        ar = abs(r)
        y = np.float32(math.copysign(min(ar, 0.5 - ar), r))
        z = y * y
        s = y * (_F1 + z * (_F3 + z * (_F5 + z * (_F7 + z * (_F9 + z * _F11)))))
        w = 1.0
        if inv_fl > 0.0:
            u = min(max((d0 + j) * inv_fl, 0.0), 1.0)
            v = min(max((d1 - j) * inv_fl, 0.0), 1.0)
            w = u * u * (3.0 - 2.0 * u) * v * v * (3.0 - 2.0 * v)
        o[i] += np.float32((g0 + j * (g1 + j * (g2 + j * g3))) * w) * s


@jit_callee
def render_partial(t, f, a, mf, ma, phase, lo, hi, fs, stretch, fade, gain, n_lo, n_hi, out, out_start):
    """Add ``gain`` x the partial (knots lo..hi-1) at output samples ``n_lo <= n < n_hi`` to
    ``out[n - out_start]``. Samples outside the partial's span are left alone.

    The span is cut into pieces at every multiple of :data:`BLOCK` and at the first sample of
    every knot segment. Within a piece the phase is one quartic and the amplitude one cubic of
    the sample index, evaluated from their exact Taylor coefficients at the piece's first
    sample. The pieces depend on the partial alone, never on ``n_lo``, so any window of a
    partial reproduces the same samples.
    """
    s_rate = fs * stretch
    n0, n1 = partial_span(t, lo, hi, fs, stretch)
    n_lo = max(n_lo, n0)
    n_hi = min(n_hi, n1 + 1)
    if n_hi <= n_lo:
        return
    # Fades: smoothstep over `fl` samples from the partial's exact start and end (in samples).
    x0 = t[lo] * s_rate
    x1 = t[hi - 1] * s_rate
    fl = min(fade, 0.5 * (x1 - x0))
    inv_fl = 1.0 / fl if fl > 0.0 else 0.0
    inv_fs = 1.0 / fs
    B = BLOCK
    last = hi - 1
    # The piece that holds n_lo starts at the later of its block start and its segment's first sample.
    k = _find_knot(t, lo, hi, n_lo / s_rate)
    while k > lo and int(math.ceil(t[k] * s_rate)) > n_lo:
        k -= 1
    while k + 1 < last and int(math.ceil(t[k + 1] * s_rate)) <= n_lo:
        k += 1
    pos = max((n_lo // B) * B, int(math.ceil(t[k] * s_rate)))
    r = 1.0 / s_rate  # source seconds per output sample
    while pos < n_hi:
        while k + 1 < last and int(math.ceil(t[k + 1] * s_rate)) <= pos:
            k += 1
        next_knot = int(math.ceil(t[k + 1] * s_rate)) if k + 1 <= last else pos
        if next_knot <= pos:
            next_knot = n_hi + B
        end = min((pos // B + 1) * B, next_knot)
        L = end - pos
        # Within a piece the phase is one quartic and the amplitude one cubic in the sample
        # index: their Taylor coefficients at the piece's first sample are exact.
        ph, fr, f1, f2, f3, am, a1, a2, a3 = _taylor(t, f, a, mf, ma, phase, lo, hi, k, pos * r)
        ph *= stretch
        c0 = ph - math.floor(ph)
        c1 = fr * inv_fs
        c2 = stretch * f1 * r * r * 0.5
        c3 = stretch * f2 * r * r * r * (1.0 / 6.0)
        c4 = stretch * f3 * r * r * r * r * (1.0 / 24.0)
        g0 = am * gain
        g1 = a1 * r * gain
        g2 = a2 * r * r * 0.5 * gain
        g3 = a3 * r * r * r * (1.0 / 6.0) * gain
        j0 = max(n_lo - pos, 0)
        j1 = min(n_hi - pos, L)
        if j1 > j0:
            o = out[pos - out_start + j0:pos - out_start + j1]
            if pos + j0 >= x0 + fl and pos + j1 - 1 <= x1 - fl:
                _sines(o, j0, c0, c1, c2, c3, c4, g0, g1, g2, g3)
            else:
                _sines_faded(o, j0, c0, c1, c2, c3, c4, g0, g1, g2, g3, pos - x0, x1 - pos, inv_fl)
        pos = end


@jit
def chunk_lists(t, offsets, which, fs, stretch, n_lo, n_hi, chunk, counts, starts, items):
    """Lists of partials (indices into ``which``' partials) overlapping each output chunk.

    Chunk ``c`` covers ``[n_lo + c*chunk, n_lo + (c+1)*chunk)``. First call with ``items`` of
    size 0 fills ``counts`` and returns the total; then call again with ``items`` of that size:
    ``items[starts[c]:starts[c+1]]`` lists chunk ``c``'s partials, in the order of ``which``.
    """
    nc = counts.shape[0]
    fill = items.shape[0] > 0
    if not fill:
        for c in range(nc):
            counts[c] = 0
    else:
        starts[0] = 0
        for c in range(nc):
            starts[c + 1] = starts[c] + counts[c]
            counts[c] = 0
    total = 0
    for i in range(which.shape[0]):
        p = which[i]
        n0, n1 = partial_span(t, offsets[p], offsets[p + 1], fs, stretch)
        lo = max(n0, n_lo)
        hi = min(n1 + 1, n_hi)
        if hi <= lo:
            continue
        c0 = (lo - n_lo) // chunk
        c1 = (hi - 1 - n_lo) // chunk
        for c in range(c0, c1 + 1):
            if fill:
                items[starts[c] + counts[c]] = p
            counts[c] += 1
            total += 1
    return total


@jit_parallel
def render_chunks(t, f, a, mf, ma, phase, offsets, fs, stretch, fade, gain, n_lo, n_hi, chunk, starts, items, out):
    """Render the listed partials into ``out`` (``out[0]`` is output sample ``n_lo``), one chunk
    per thread (lists from :func:`chunk_lists`)."""
    nc = starts.shape[0] - 1
    for c in prange(nc):
        c_lo = n_lo + c * chunk
        c_hi = min(c_lo + chunk, n_hi)
        for i in range(starts[c], starts[c + 1]):
            p = items[i]
            render_partial(t, f, a, mf, ma, phase, offsets[p], offsets[p + 1], fs, stretch, fade, gain,
                           c_lo, c_hi, out, n_lo)


@jit
def sample_curves(t, f, a, mf, ma, lo, hi, ts, out_f, out_a):
    """Frequency and amplitude curves of one partial (knots lo..hi-1) at sorted source times
    ``ts`` (clamped to the partial's span), the same curves the synthesis plays."""
    last = hi - 1
    k = lo
    for i in range(ts.shape[0]):
        x = ts[i]
        if last == lo or x <= t[lo]:
            out_f[i] = f[lo]
            out_a[i] = a[lo]
            continue
        if x >= t[last]:
            out_f[i] = f[last]
            out_a[i] = a[last]
            continue
        while k + 1 < last and t[k + 1] <= x:
            k += 1
        h = t[k + 1] - t[k]
        u = (x - t[k]) / h
        u2 = u * u
        u3 = u2 * u
        h00 = 2.0 * u3 - 3.0 * u2 + 1.0
        h10 = (u3 - 2.0 * u2 + u) * h
        h01 = -2.0 * u3 + 3.0 * u2
        h11 = (u3 - u2) * h
        out_f[i] = h00 * f[k] + h10 * mf[k] + h01 * f[k + 1] + h11 * mf[k + 1]
        am = h00 * a[k] + h10 * ma[k] + h01 * a[k + 1] + h11 * ma[k + 1]
        out_a[i] = am if am > 0.0 else 0.0


@jit
def latest_active(starts, ends, times, owner, out):
    """Monophonic ownership: ``out[i]`` is True when event ``i`` (at ``times[i]``, of partial
    ``owner[i]``) belongs to the partial that started last among those sounding at that time.

    Partials are indexed in order of start (``starts`` sorted); events sorted by time. A sweep
    keeps the sounding partials; the latest started is the highest index among them."""
    P = starts.shape[0]
    alive = np.zeros(P, dtype=np.bool_)
    nxt = 0  # next partial to start
    top = -1  # highest sounding index
    for i in range(times.shape[0]):
        x = times[i]
        while nxt < P and starts[nxt] <= x:
            alive[nxt] = True
            top = nxt
            nxt += 1
        while top >= 0 and (not alive[top] or ends[top] < x):
            alive[top] = False
            top -= 1
        out[i] = top == owner[i]


@jit
def render_serial(t, f, a, mf, ma, phase, offsets, which, fs, stretch, fade, gain, n_lo, n_hi, out):
    """:func:`render_chunks` for a few partials, on the calling thread (an edit): no chunk lists,
    no thread hand-off; the same samples."""
    for i in range(which.shape[0]):
        p = which[i]
        render_partial(t, f, a, mf, ma, phase, offsets[p], offsets[p + 1], fs, stretch, fade, gain, n_lo, n_hi, out, n_lo)
