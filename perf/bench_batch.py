"""Batch benchmark: N one-minute files rendered to 1600x600 CWT images, side by side.

Paths (same kernels, identical images, checked bit for bit against the first path):

- ``inprocess-1thread``: one process, one file after another, numba limited to one thread;
- ``inprocess``: one process, numba on every core (the kernels parallelise over rows);
- ``engine``: through an Engine (decode into shared memory, compute in the viewport worker);
- ``dask-local``: a Dask LocalCluster with one single-threaded worker process per core.

Reports files/s and the speed-up over ``inprocess-1thread``. Scaling to N machines: see
``soma_shm.pipeline.distributed`` (tasks read their own files; throughput grows with worker
cores while storage keeps up).

Usage::

    python perf/bench_batch.py [--files 100] [--seconds 60]
    python perf/bench_batch.py --quick      # 12 files
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import _util  # noqa: E402

FS = 48_000


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, default=100)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    n_files = 12 if args.quick else args.files

    import numba
    import soundfile as sf

    import soma_shm
    import soma_shm.ipc.tasks
    from soma_shm.pipeline import render_files
    from soma_shm.pipeline.distributed import render_files_dask

    kw = dict(width=1600, height=600, method="cwt")
    results = {"machine": _util.machine(), "files": n_files, "seconds_per_file": args.seconds, "paths": {}}
    rows = []
    with tempfile.TemporaryDirectory(prefix="soma_batch_") as tmp:
        base = _util.recording(args.seconds, FS, seed=3)
        paths = []
        for i in range(n_files):
            path = Path(tmp) / f"file{i:03d}.flac"
            sf.write(path, np.roll(base, i * 977), FS, subtype="PCM_16")
            paths.append(str(path))
        soma_shm.ipc.tasks.warm_up()
        reference = None

        def record(name, seconds, out):
            nonlocal reference
            if reference is None:
                reference = out
                identical = True
            else:
                identical = all(
                    np.array_equal(a.magnitude, b.magnitude) and np.array_equal(a.image, b.image) for a, b in zip(reference, out)
                )
            results["paths"][name] = {"seconds": seconds, "files_per_s": n_files / seconds, "identical": identical}
            rows.append([name, seconds, n_files / seconds, identical])
            print(f"  {name:18s} {seconds:7.1f} s", file=sys.stderr, flush=True)

        threads = numba.get_num_threads()
        numba.set_num_threads(1)
        t = time.perf_counter()
        out = render_files(paths, **kw)
        record("inprocess-1thread", time.perf_counter() - t, out)
        numba.set_num_threads(threads)
        t = time.perf_counter()
        out = render_files(paths, **kw)
        record("inprocess", time.perf_counter() - t, out)
        with soma_shm.Engine(pyramid=False) as eng:  # one image per file: no pyramid to amortise
            eng.wait_ready(120)
            t = time.perf_counter()
            out = render_files(paths, engine=eng, **kw)
            record("engine", time.perf_counter() - t, out)
        from soma_shm.pipeline.distributed import local_cluster
        from dask.distributed import Client

        with local_cluster() as cluster, Client(cluster) as client:
            client.run(soma_shm.ipc.tasks.warm_up)  # load the kernels in every worker first
            t = time.perf_counter()
            out = render_files_dask(paths, client=client, **kw)
            record("dask-local", time.perf_counter() - t, out)
    base_rate = results["paths"]["inprocess-1thread"]["files_per_s"]
    for r in rows:
        r.append(r[2] / base_rate)
    print()
    print(_util.table(rows, ["path", "seconds", "files/s", "identical images", "x inprocess-1thread"]))
    path = _util.write_json("bench_batch.json", results)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
