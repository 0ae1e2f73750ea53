"""Test-only worker tasks (the crash matrix): run in a real worker through ``Engine._submit``.

``submit(engine, role, name, *args)`` sends task ``tests.worker_tasks:<name>`` to a worker of
``role``; workers import this module by name (they share the test run's ``sys.path``).
"""

from __future__ import annotations

import os
import signal
import time

from soma_shm.results import ViewportResult


def sleep(job) -> dict:
    time.sleep(job.params["seconds"])
    return {"slept_s": job.params["seconds"]}


def fail(job) -> dict:
    raise RuntimeError(f"requested failure in request {job.request_id}")


def exit(job) -> dict:  # noqa: A001 - the task's name
    os._exit(job.params["code"])


def kill(job) -> dict:
    os.kill(os.getpid(), signal.SIGKILL)
    return {}


def pattern(job) -> dict:
    """Fill the image slot row by row (slowly), so a kill can land mid-write."""
    p = job.params
    image, _ = job.image_out(p["height"], p["width"])
    for r in range(p["height"]):
        image[r, :] = p["value"]
        if p["row_delay"]:
            time.sleep(p["row_delay"])
    del image
    job.publish_image(p["height"], p["width"])
    return {}


def _build(rid, payload, timings):
    return timings if payload is None else ViewportResult(rid, payload, {"method": "pattern"}, timings)


def submit(engine, role: str, name: str, **params):
    """Submit test task ``name`` with ``params`` to ``role``; returns the handle."""
    return engine._submit(role, params, _build, task=f"tests.worker_tasks:{name}")


def ramp(job) -> dict:
    """Write ``0, 1, ..., n-1`` as float32 samples into the slot (the "samples" slot kind)."""
    n = job.params["n"]
    out = job.samples_out(n)
    out[:] = range(n)
    del out
    job.publish_samples(n)
    return {"compute_s": 0.0}


class _Unpicklable(Exception):
    """An exception whose pickle cannot be loaded (its constructor needs two arguments)."""

    def __init__(self, what, why):
        super().__init__(f"{what}: {why}")


def fail_unpicklable(job) -> dict:
    raise _Unpicklable("a task's own error", "it does not survive pickling")


def close_pipe_and_sleep(job) -> dict:
    """Close this worker's end of its pipe, then go on running: the supervisor sees the pipe
    closed long before the process is gone (what an exiting worker looks like until it is reaped)."""
    import gc
    from multiprocessing.connection import Connection

    for obj in gc.get_objects():
        if isinstance(obj, Connection) and not obj.closed:
            obj.close()
    time.sleep(job.params["seconds"])
    return {}


def die_starting_numba_threads(job) -> dict:
    """Die (SIGTERM, as a superseded viewport's worker does) while holding the lock numba takes
    around the start of its threading layer, which it takes again on every
    ``numba.get_num_threads()``: the worst moment a worker can be terminated at."""
    from numba.np.ufunc import parallel

    parallel._launch_threads()  # the lock exists once the threading layer has started
    with parallel._backend_init_process_lock:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(60)
    return {}


def frozen_objects(job) -> dict:
    """How many objects this worker's garbage collector never walks (``gc.freeze``)."""
    import gc

    return {"frozen": gc.get_freeze_count()}
