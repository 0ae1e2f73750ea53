"""Magnitude -> uint8 tone mapping (numba kernel)."""

from __future__ import annotations

from ._jit import jit


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
