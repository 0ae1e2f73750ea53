"""Snapping kernels: CWT magnitudes at trace points on a fine log grid, and the ridge path.

The CWT rows come from the same band-limited, decimated machinery as the images
(:mod:`soma_shm.kernels.cwt`), computed over the trace's time span only and evaluated at the
trace's points; the ridge is the best path through them by dynamic programming.
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import jit, jit_parallel, prange
from .cwt import interp_power, plan_row, segment_spectra


@jit_parallel
def grid_magnitudes(audio, s0, segs, rows, wavelet, positions, out):
    """``out[k, r] = |W(positions[k], row r)|`` (float64), positions in samples relative to ``s0``.

    ``segs, rows, wavelet`` are a CWT plan's arrays (see :func:`soma_shm.kernels.cwt.plan_row`).
    Rows are independent and run in parallel; each is one decimated inverse FFT plus one
    interpolation per point.
    """
    seg_pad, seg_nfft = segs
    row_nifft = rows[3]
    spectra, offsets = segment_spectra(audio, s0, seg_pad, seg_nfft)
    K = positions.shape[0]
    for r in prange(row_nifft.shape[0]):
        # An int64 row index, as cwt_pooled_image passes: one compiled plan_row for both.
        y, scale, g = plan_row(spectra, offsets, segs, rows, wavelet, np.int64(r))
        inv = row_nifft[r] / seg_nfft[g]
        for k in range(K):
            out[k, r] = math.sqrt(interp_power(y, (positions[k] + seg_pad[g]) * inv)) * scale


@jit
def ridge_path(score, lo, hi, jump_cost, max_jump, path):
    """Best path through ``score`` (K points x R rows) by dynamic programming.

    Point ``k`` may take rows ``lo[k]..hi[k]``; moving ``d`` rows between consecutive points costs
    ``jump_cost * d^2`` and moves beyond ``max_jump`` rows are not allowed. The path maximising the
    summed score minus the jump costs is written to ``path`` (row per point).
    """
    K, R = score.shape
    acc = np.full((K, R), -np.inf)
    back = np.zeros((K, R), dtype=np.int64)
    for r in range(lo[0], hi[0] + 1):
        acc[0, r] = score[0, r]
    for k in range(1, K):
        for r in range(lo[k], hi[k] + 1):
            best = -np.inf
            arg = -1
            q0 = max(lo[k - 1], r - max_jump)
            q1 = min(hi[k - 1], r + max_jump)
            for q in range(q0, q1 + 1):
                d = r - q
                v = acc[k - 1, q] - jump_cost * d * d
                if v > best:
                    best = v
                    arg = q
            if arg >= 0:
                acc[k, r] = best + score[k, r]
                back[k, r] = arg
        # A stroke that leaps further than max_jump between two points: restart the path there.
        reachable = False
        for r in range(lo[k], hi[k] + 1):
            if acc[k, r] > -np.inf:
                reachable = True
                break
        if not reachable:
            q_best = lo[k - 1]
            for q in range(lo[k - 1], hi[k - 1] + 1):
                if acc[k - 1, q] > acc[k - 1, q_best]:
                    q_best = q
            for r in range(lo[k], hi[k] + 1):
                acc[k, r] = acc[k - 1, q_best] + score[k, r]
                back[k, r] = q_best
    # Trace back from the best end.
    r_end = lo[K - 1]
    for r in range(lo[K - 1], hi[K - 1] + 1):
        if acc[K - 1, r] > acc[K - 1, r_end]:
            r_end = r
    path[K - 1] = r_end
    for k in range(K - 1, 0, -1):
        path[k - 1] = back[k, path[k]]


@jit
def refine_peaks(mags, path, lo, hi, climb, rows_out, log_amp_out):
    """Move each path point to the nearest local maximum of its magnitudes (at most ``climb``
    rows away, within ``lo..hi``) and refine it between grid rows with a parabola through the
    log-magnitudes. Writes the fractional row and the log-amplitude of the peak."""
    K, R = mags.shape
    for k in range(K):
        r = path[k]
        for _ in range(climb):
            if r > lo[k] and mags[k, r - 1] > mags[k, r]:
                r -= 1
            elif r < hi[k] and mags[k, r + 1] > mags[k, r]:
                r += 1
            else:
                break
        l0 = math.log(max(mags[k, r], 1e-300))
        rows_out[k] = r
        log_amp_out[k] = l0
        if 0 < r < R - 1:
            lm = math.log(max(mags[k, r - 1], 1e-300))
            lp = math.log(max(mags[k, r + 1], 1e-300))
            den = lm - 2.0 * l0 + lp
            if den < 0.0:
                d = 0.5 * (lm - lp) / den
                if -1.0 < d < 1.0:
                    rows_out[k] = r + d
                    log_amp_out[k] = l0 - 0.25 * (lm - lp) * d
