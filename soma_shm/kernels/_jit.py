"""The one place that holds numba options for every kernel.

- cached: compiled machine code is written to disk and reused by every process (spawned workers
  load it instead of compiling). The cache is keyed on the source of the whole ``kernels``
  package, not only on the kernel's own file as numba's default is: a kernel inlines or links its
  callees from other modules (``pyramid`` uses ``stft``, ``snap`` uses ``cwt``), so a change to
  any kernel file invalidates every cached kernel and nothing stale is ever loaded
  (:func:`package_stamp`).
- ``nogil=True``: kernels release the GIL, so the UI thread keeps running while the main process
  computes the overview.
- ``fastmath`` is off: the accuracy contract (0.5 dB against a float64 reference) is tested with
  IEEE semantics.
- ``inline="always"`` only for small per-pixel helpers (:data:`jit_inline`).
- kernels only other kernels call get no Python entry point (:data:`jit_callee`).
- kernels a C library calls back get a C entry point only (:func:`jit_cfunc`).
- ``parallel=True`` only for kernels with an outer ``prange`` over independent rows or columns;
  set the thread count with ``numba.set_num_threads`` (workers do, per role).

numba compiles one version of a kernel per argument type: arrays differing only in being
writable or read-only, or contiguous or strided, each cost a whole compile. Wrappers pass audio
and lookup tables read-only and C-contiguous (:func:`soma_shm._validate.read_only`), so each
kernel is compiled once.

Importing this module imports numba; ``import soma_shm`` does not import it.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numba
from numba.core import caching

# rocket-fft registers numpy.fft / scipy.fft implementations for nopython code on import.
import rocket_fft  # noqa: F401

PACKAGE_DIR = Path(__file__).resolve().parent

# No C-callable wrapper (for numba's first-class function values, which the kernels never use):
# one function less to generate and optimise per kernel.
JIT_OPTIONS = dict(nogil=True, fastmath=False, error_model="numpy", no_cfunc_wrapper=True)


@functools.lru_cache(maxsize=None)
def package_stamp() -> str:
    """A hash of every source file of the kernels package (names and contents).

    Used as the source stamp of every cached kernel: numba throws a cached kernel away when its
    stamp differs from the one it was saved with.
    """
    h = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


class _PackageStamp:
    """Mixin for numba's cache locators: the stamp of the whole package instead of one file."""

    def get_source_stamp(self):
        return package_stamp()


class _UserDirLocator(_PackageStamp, caching.UserProvidedCacheLocator):
    pass  # NUMBA_CACHE_DIR when set


class _InTreeLocator(_PackageStamp, caching.InTreeCacheLocator):
    pass  # kernels/__pycache__ beside the sources


class _UserWideLocator(_PackageStamp, caching.UserWideCacheLocator):
    pass  # the user's cache folder when the package folder is read-only


class _KernelCacheImpl(caching.CompileResultCacheImpl):
    _locator_classes = [_UserDirLocator, _InTreeLocator, _UserWideLocator]


class _KernelCache(caching.FunctionCache):
    _impl_class = _KernelCacheImpl


def _cached(**options):
    """A decorator like ``numba.njit(cache=True, **options)`` whose cache uses the package stamp."""

    def decorate(fn):
        dispatcher = numba.njit(**options)(fn)
        dispatcher._cache = _KernelCache(dispatcher.py_func)
        return dispatcher

    return decorate


def cache_dir() -> str:
    """The folder that holds the cached kernels (where numba's locators put them)."""
    return _KernelCacheImpl(cache_dir).locator.get_cache_path()


jit = _cached(**JIT_OPTIONS)
"""Decorator for serial kernels that Python calls (the wrappers, or tests)."""

jit_callee = _cached(no_cpython_wrapper=True, **JIT_OPTIONS)
"""Decorator for serial kernels that only other kernels call: no Python entry point is compiled
(the code that unboxes each argument from a Python object, a sizeable part of a small kernel's
compile, optimised again in every caller that links it). Python cannot call them; to compile one
ahead, ``kernel.compile(argument types)``."""

jit_parallel = _cached(parallel=True, **JIT_OPTIONS)
"""Decorator for kernels whose outer loop is a ``prange``."""

jit_inline = _cached(inline="always", no_cpython_wrapper=True, **JIT_OPTIONS)
"""Decorator for small helpers called once per pixel from a hot loop: numba inlines them into
the caller before compiling it. A call that is not inlined passes every array as a handful of
scalars; for the CWT pooling helpers that was 10-15 % of the pooling time. Keep it to small
functions: inlining a larger one into many callers (the interpolant, say) added 7 s to the cold
compile for 2 % more."""


def jit_cfunc(signature):
    """Decorator for kernels C code calls back (a decoder's per-frame callback): compiled to a C
    function whose address is passed to the library, cached like every kernel. Compiled (or
    loaded) when the decorated module is imported, so such modules are imported only where they
    are used."""

    def decorate(fn):
        from numba.core import sigutils
        from numba.core.ccallback import CFunc

        # A C callback runs without the GIL by nature and is its own C wrapper.
        options = {k: v for k, v in JIT_OPTIONS.items() if k not in ("nogil", "no_cfunc_wrapper")}
        callback = CFunc(fn, sigutils.normalize_signature(signature), {}, options)
        callback._cache = _KernelCache(fn)
        callback.compile()
        return callback

    return decorate


prange = numba.prange
