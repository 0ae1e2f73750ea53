"""GUI tests wait a minute or two for the page's first overview. A stale or cold kernel cache (a
kernel file edited, a clone that skipped `make setup`) puts a numba compile of a minute or more,
several on a busy machine, inside that wait: the page then shows "preparing kernels (first run
only)" until a test gives up. Compile them once before the first GUI test, as `make setup` does
(compiling, and waiting for the process that compiles, are tested in tests/test_warmup.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _kernels_compiled():
    from soma_shm.kernel_cache import ensure_kernels

    ensure_kernels()
