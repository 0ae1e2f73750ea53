"""The one place that holds numba options for every kernel.

- ``cache=True``: compiled machine code is written beside the sources and reused by every process
  (spawned workers load it instead of compiling).
- ``nogil=True``: kernels release the GIL, so the UI thread keeps running while the main process
  computes the overview.
- ``fastmath`` is off: the accuracy contract (0.5 dB against a float64 reference) is tested with
  IEEE semantics.
- ``inline="always"`` only for small per-pixel helpers (:data:`jit_inline`).
- ``parallel=True`` only for kernels with an outer ``prange`` over independent rows or columns;
  set the thread count with ``numba.set_num_threads`` (workers do, per role).

Importing this module imports numba; ``import soma_shm`` does not import it.
"""

from __future__ import annotations

import numba

# rocket-fft registers numpy.fft / scipy.fft implementations for nopython code on import.
import rocket_fft  # noqa: F401

JIT_OPTIONS = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")

jit = numba.njit(**JIT_OPTIONS)
"""Decorator for serial kernels."""

jit_parallel = numba.njit(parallel=True, **JIT_OPTIONS)
"""Decorator for kernels whose outer loop is a ``prange``."""

jit_inline = numba.njit(inline="always", **JIT_OPTIONS)
"""Decorator for small helpers called once per pixel from a hot loop: numba inlines them into
the caller before compiling it. A call that is not inlined passes every array as a handful of
scalars; for the CWT pooling helpers that was 10-15 % of the pooling time. Keep it to small
functions: inlining a larger one into many callers (the interpolant, say) added 7 s to the cold
compile for 2 % more."""

prange = numba.prange
