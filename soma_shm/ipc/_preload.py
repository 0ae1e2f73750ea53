"""Imported once by the forkserver, before it forks any worker.

It switches numba to the fork-safe thread pool, imports the kernels and loads (or compiles) their
machine code, and imports the worker module: every forked worker starts with all of it in
memory, ready in tens of milliseconds instead of seconds.

Then it freezes what is in memory (``gc.freeze``): the compiled kernels and numba's caches are
hundreds of thousands of objects that live as long as the process. The garbage collector no
longer walks them, neither in a worker's collections nor when the forkserver exits (walking them
at interpreter exit took seconds), and a worker's collections do not write to the pages it shares
with the forkserver.
"""

import gc

from .worker import use_fork_safe_threads

use_fork_safe_threads()

from . import tasks  # noqa: E402
from . import worker  # noqa: E402,F401

tasks.warm_up()
gc.freeze()
