"""Where the cold compile goes: seconds per warmup task and per compiled kernel, empty cache.

Each warmup task (soma_shm.warmup.TASKS) runs alone in a fresh process with an empty numba cache,
so it compiles everything it calls; reported are its CPU seconds (imports excluded) and, per kernel
numba compiled for it, the seconds spent in that kernel alone (its callees' own compiles
subtracted; a callee's code optimised again inside its caller counts for the caller) and the
argument types it was compiled for. ``--together`` also runs every task in one process, in the
order compiling processes take them (:func:`soma_shm.kernel_cache.task_order`), where kernels
two tasks share are compiled once.

Usage::

    python perf/compile_profile.py                    # every task, once
    python perf/compile_profile.py --tasks cwt snap --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import _util  # noqa: E402

_clock = time.process_time
"""Seconds of CPU, not wall time: on a machine shared with other work a compile's wall time
swings two- or threefold with the load, its CPU time far less (compiling is single-threaded)."""


def child(names: list[str]) -> dict:
    t = _clock()
    import numba  # noqa: F401
    from numba.core import event

    import soma_shm.kernels._jit  # noqa: F401  (numba, rocket_fft)
    from soma_shm import warmup

    import_s = _clock() - t
    stack: list[list] = []  # per kernel being compiled: start, nested compiles' seconds, LLVM seconds
    records: list[dict] = []
    llvm_start: list[float] = []

    class Compiles(event.Listener):
        def on_start(self, ev):
            stack.append([_clock(), 0.0, 0.0])

        def on_end(self, ev):
            t0, nested, llvm = stack.pop()
            total = _clock() - t0
            if stack:
                stack[-1][1] += total
            d = ev.data["dispatcher"]
            records.append({"kernel": f"{d.py_func.__module__.rsplit('.', 1)[-1]}.{d.py_func.__name__}",
                            "module": d.py_func.__module__,
                            "own_s": total - nested, "llvm_s": llvm, "total_s": total,
                            "args": ", ".join(str(a) for a in ev.data["args"])})

    class Llvm(event.Listener):  # time inside LLVM (the lock numba takes around every LLVM call)
        def on_start(self, ev):
            llvm_start.append(_clock())

        def on_end(self, ev):
            dt = _clock() - llvm_start.pop()
            if stack and not llvm_start:
                stack[-1][2] += dt

    tasks = {}
    with event.install_listener("numba:compile", Compiles()), event.install_listener("numba:llvm_lock", Llvm()):
        for name in names:
            t = _clock()
            warmup.TASKS[name]()
            tasks[name] = _clock() - t
    return {"import_s": import_s, "tasks_s": tasks, "kernels": records}


def run_child(names: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="soma_cprof_") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": str(HERE.parent),
               "SOMA_SHM_WARMUP_CHILD": "1"}  # compile only what the tasks call
        return _util.run_json([__file__, "--child", *names], env=env)


def main(argv=None) -> int:
    from soma_shm.kernel_cache import task_order
    from soma_shm.warmup import TASKS

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="*", default=list(TASKS))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--together", action="store_true", help="also every task in one process")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child)))
        return 0
    out: dict = {"machine": _util.machine(), "tasks": {}}
    rows, krows = [], []
    for name in args.tasks:
        runs = [run_child([name]) for _ in range(args.repeats)]
        secs = [r["tasks_s"][name] for r in runs]
        out["tasks"][name] = {"runs_s": secs, "median_s": _util.median(secs), "kernels": runs[-1]["kernels"],
                              "import_s": _util.median([r["import_s"] for r in runs])}
        rows.append([name, _util.median(secs), " ".join(f"{s:.2f}" for s in secs), out["tasks"][name]["import_s"]])
        ours = [k for k in runs[-1]["kernels"] if k["module"].startswith("soma_shm.")]
        lib = [k for k in runs[-1]["kernels"] if not k["module"].startswith("soma_shm.")]
        for k in sorted(ours, key=lambda k: -k["own_s"]):
            krows.append([name, k["kernel"], k["own_s"], k["llvm_s"], k["total_s"], k["args"][:100]])
        if lib:  # numba's own jitted helpers (array constructors, min/max, ...)
            krows.append([name, f"({len(lib)} of numba's helpers)", sum(k["own_s"] for k in lib),
                          sum(k["llvm_s"] for k in lib), sum(k["own_s"] for k in lib), ""])
        print(f"  {name}: {secs[-1]:.1f} s (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    if args.together:
        r = run_child(task_order())
        out["together"] = r["tasks_s"]
        for name, secs in r["tasks_s"].items():
            rows.append([f"{name} (all in one process)", secs, "", ""])
        rows.append(["all in one process", sum(r["tasks_s"].values()), "", r["import_s"]])
    print(_util.table(rows, ["task (empty cache)", "median CPU s", "runs CPU s", "imports CPU s"]))
    print()
    print(_util.table(krows, ["task", "kernel", "own CPU s", "of it LLVM", "with callees", "argument types"]))
    out["load_avg_1min"] = os.getloadavg()[0]
    print(f"1-min load average at the end: {out['load_avg_1min']:.1f}")
    print(f"wrote {_util.write_json('compile_profile.json', out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
