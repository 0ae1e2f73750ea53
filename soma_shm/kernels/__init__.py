"""Pure numba/numpy kernels: no I/O, no validation; they write into buffers the caller provides.

- ``_jit``      : the one place that holds numba options (cache, nogil, fastmath, parallel).
- ``cwt``       : band-limited, decimated complex-Morlet CWT rows, max-pooled into image columns.
- ``stft``      : Hann-framed STFT pooled over every frame into a log-frequency image.
- ``tonemap``   : magnitude -> dB -> clamp -> gamma -> uint8.
- ``snap``      : CWT evaluated at trace points on a fine log grid, ridge tracking.

Public wrappers that validate and plan live in :mod:`soma_shm.render` and :mod:`soma_shm.snap`.
"""
