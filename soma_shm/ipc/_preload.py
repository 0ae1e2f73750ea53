"""Imported once by the forkserver, before it forks any worker.

It switches numba to the fork-safe thread pool, imports the kernels and loads (or compiles) their
machine code, and imports the worker module: every forked worker starts with all of it in
memory, ready in tens of milliseconds instead of seconds.
"""

from .worker import use_fork_safe_threads

use_fork_safe_threads()

from . import tasks  # noqa: E402
from . import worker  # noqa: E402,F401

tasks.warm_up()
