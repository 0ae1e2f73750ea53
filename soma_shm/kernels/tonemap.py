"""Magnitude -> uint8 tone mapping (numba kernel)."""

from __future__ import annotations

import numpy as np

from ._jit import jit, jit_parallel, prange

TASKS = 64  # parallel tasks per image (contiguous runs of pixels)


@jit
def tone_map_kernel(mag, thresholds, out):
    """``out[i]`` = number of ``thresholds`` (ascending) that are <= ``mag[i]`` (NaN -> 0)."""
    nt = thresholds.shape[0]
    for i in range(mag.shape[0]):
        v = mag[i]
        lo = 0
        hi = nt
        if not (v >= thresholds[0]):  # also catches NaN
            out[i] = 0
            continue
        while lo < hi:
            mid = (lo + hi) // 2
            if thresholds[mid] <= v:
                lo = mid + 1
            else:
                hi = mid
        out[i] = lo


@jit_parallel
def tone_map_float32(mag, thresholds, bucket_lo, bucket_hi, out):
    """As :func:`tone_map_kernel` for float32 ``mag``, without a search per pixel.

    A positive float32 orders like its bit pattern, so the top 16 bits name a bucket of values
    (1/128 of an octave of magnitude): ``bucket_lo[b]`` / ``bucket_hi[b]`` count the thresholds
    at or below the bucket's smallest / largest value. The level is between the two, almost
    always equal to both; a short scan settles the rest exactly.
    """
    n = mag.shape[0]
    bits = mag.view(np.uint32)
    t0 = thresholds[0]
    for t in prange(TASKS):
        for i in range(t * n // TASKS, (t + 1) * n // TASKS):
            v = mag[i]
            if not (v >= t0):  # below the floor, negative or NaN
                out[i] = 0
                continue
            b = bits[i] >> 16
            lo = bucket_lo[b]
            hi = bucket_hi[b]
            while lo < hi and thresholds[lo] <= v:
                lo += 1
            out[i] = lo
