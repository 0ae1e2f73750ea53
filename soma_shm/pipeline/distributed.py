"""Scale batch rendering out on Dask (``dask.distributed``).

Each task reads its own file on the worker (no audio travels from the client) and runs the same
kernels as :func:`soma_shm.pipeline.render_file`, so the images are identical bit for bit.
Without a client or scheduler address a :class:`~dask.distributed.LocalCluster` with one
single-threaded worker process per core is started (and closed afterwards).

For N machines: start ``dask scheduler`` on one and ``dask worker tcp://HOST:8786
--nthreads 1 --nworkers <cores>`` on each, give the address here, and keep the audio on storage
every worker can read (a shared file system or object store paths). Throughput grows with the
number of worker cores as long as storage keeps up; each task holds one decoded file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from . import Rendered, render_file, write_outputs

__all__ = ["render_files_dask", "local_cluster"]


def _task(path: str, out_dir: str | None, png: bool, npy: bool, keep: bool, threads: int, kwargs: dict) -> Rendered:
    import numba

    # One single-threaded worker per core: numba must not start its own pool on every core.
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    r = render_file(path, **kwargs)
    if out_dir is not None and (png or npy):
        write_outputs(r, out_dir, png=png, npy=npy)
    if not keep:
        r.magnitude = r.image = None  # type: ignore[assignment]
    return r


def local_cluster(n_workers: int | None = None):
    """A LocalCluster of single-threaded worker processes (one per core by default)."""
    from dask.distributed import LocalCluster

    n = n_workers or os.cpu_count() or 1
    return LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)


def render_files_dask(
    paths: Sequence[str | os.PathLike],
    *,
    client: Any = None,
    address: str | None = None,
    n_workers: int | None = None,
    threads_per_task: int = 1,
    out_dir: str | os.PathLike | None = None,
    png: bool = False,
    npy: bool = False,
    keep: bool = True,
    **kwargs: Any,
) -> list[Rendered]:
    """Render files on a Dask cluster; results come back in the order of ``paths``.

    Parameters
    ----------
    paths : sequence of paths
        Audio files, readable by every worker.
    client : dask.distributed.Client, optional
        An existing client; else ``address`` (a scheduler such as ``tcp://host:8786``); else a
        local cluster of ``n_workers`` single-threaded processes, closed at the end.
    threads_per_task : int
        numba threads each task may use.
    out_dir, png, npy, keep
        As for :func:`soma_shm.pipeline.render_files` (files are written by the workers).
    **kwargs
        ``t0, t1, fmin, fmax, width, height, method, settings``.
    """
    from dask.distributed import Client

    own_cluster = own_client = None
    if client is None:
        if address is None:
            own_cluster = local_cluster(n_workers)
            client = own_client = Client(own_cluster)
        else:
            client = own_client = Client(address)
    try:
        out = None if out_dir is None else str(Path(out_dir).resolve())
        futures = [
            client.submit(_task, str(p), out, png, npy, keep, threads_per_task, kwargs, pure=False) for p in paths
        ]
        return client.gather(futures)
    finally:
        if own_client is not None:
            own_client.close()
        if own_cluster is not None:
            own_cluster.close()
