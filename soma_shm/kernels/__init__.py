"""Pure numba/numpy kernels: no I/O, no validation; they write into buffers the caller provides.

- ``_jit``      : the one place that holds numba options (cache, nogil, fastmath, parallel).
- ``cwt``       : band-limited, decimated complex-Morlet CWT rows, max-pooled into image columns.
- ``stft``      : Hann-framed STFT pooled over every frame into a log-frequency image.
- ``pyramid``   : a recording's pooled STFT pyramid (bytes per bin and block) and views cut from it.
- ``tonemap``   : magnitude -> dB -> clamp -> gamma -> uint8.
- ``snap``      : CWT evaluated at trace points on a fine log grid, ridge tracking.
- ``synth``     : additive sine resynthesis of partials (monotone cubic curves, exact phase).
- ``flac``      : libFLAC's per-frame callbacks (C functions): frames mixed to mono float32 in place.

Compiled kernels are cached on disk keyed on the source of this whole package (see ``_jit``):
a kernel that calls a kernel of another module (``pyramid`` uses ``stft``, ``snap`` uses ``cwt``)
is recompiled when either changes. ``soma_shm.warmup`` compiles them all ahead of use.

Public wrappers that validate and plan live in :mod:`soma_shm.render`, :mod:`soma_shm.snap` and
:mod:`soma_shm.synth`.
"""
