"""Preparing the kernels: one compile per kernel, a cache that follows every kernel file, the
parallel first-run compile and the processes that wait for it."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str, env: dict | None = None, cwd=None, timeout: float = 600) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full, cwd=cwd, timeout=timeout)


def test_each_kernel_is_compiled_once_whatever_audio_it_is_given():
    # Writable, read-only, strided and integer audio, and pyramids in the owner's writable block or
    # a worker's read-only mapping: numba would compile a kernel once per array type (seconds each).
    res = _python("""
        import json
        import numpy as np
        import soma_shm
        from soma_shm.kernels import cwt, pyramid, snap, stft, tonemap

        fs = 8000
        x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(2 * fs) / fs)).astype(np.float32)
        ro = x.copy(); ro.flags.writeable = False
        strided = np.stack([x, x], axis=1)[:, 0]
        ints = (x * 32767).astype(np.int16)
        for a in (x, ro, strided, ints, np.stack([x, x], axis=1)):
            soma_shm.cwt_image(a, fs, 0.5, 1.0, 100, 2000, 16, 8)
            soma_shm.stft_image(a, fs, 0.0, 2.0, 100, 2000, 16, 8)
            soma_shm.snap_trace(a, fs, [(0.5, 430.0), (1.0, 450.0)])
            pyr = soma_shm.build_pyramid(a, fs)
            levels = pyr.buffer.copy(); levels.flags.writeable = False
            for p in (pyr, soma_shm.Pyramid(pyr.layout, levels, pyr.top, pyr.scale)):
                soma_shm.tone_map(p.image(0.0, 2.0, 100, 2000, 16, 8), 1.0)
        counts = {f"{m.__name__.rsplit('.', 1)[1]}.{k}": len(v.signatures) for m in (cwt, pyramid, snap, stft, tonemap)
                  for k, v in vars(m).items() if hasattr(v, "signatures") and v.signatures}
        print(json.dumps(counts))
    """)
    assert res.returncode == 0, res.stderr
    counts = json.loads(res.stdout.strip().splitlines()[-1])
    for name in ("cwt.cwt_pooled_image", "stft.stft_pooled_image", "snap.grid_magnitudes",
                 "pyramid.build_base", "pyramid.pyramid_image", "tonemap.tone_map_float32"):
        assert counts.get(name) == 1, (name, counts)
    assert all(n == 1 for n in counts.values()), counts


def test_a_change_to_a_callee_in_another_file_recompiles_its_callers(tmp_path):
    # numba's own cache is keyed on the caller's file only: after editing a callee in another
    # module, the caller's stale machine code would still be loaded.
    pkg = tmp_path / "kpkg"
    pkg.mkdir()
    shutil.copy(ROOT / "soma_shm" / "kernels" / "_jit.py", pkg / "_jit.py")
    (pkg / "__init__.py").write_text("")
    (pkg / "callee.py").write_text("from ._jit import jit\n\n\n@jit\ndef g(x):\n    return x + 1\n")
    (pkg / "caller.py").write_text(
        "from ._jit import jit\nfrom .callee import g\n\n\n@jit\ndef f(x):\n    return 10 * g(x)\n")
    run = "from kpkg.caller import f; print(f(1), len(list((__import__('pathlib').Path('kpkg/__pycache__')).glob('*.nbi'))))"
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "NUMBA_CACHE_DIR": ""}
    first = _python(run, env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["20", "2"]  # compiled and cached (caller and callee)
    again = _python(run, env, cwd=tmp_path)
    assert again.stdout.split() == ["20", "2"]
    (pkg / "callee.py").write_text("from ._jit import jit\n\n\n@jit\ndef g(x):\n    return x + 2\n")
    changed = _python(run, env, cwd=tmp_path)
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.split()[0] == "30"


_SMALL_WARMUP = """
    import json, sys
    from soma_shm import kernel_cache

    # Two quick task sets stand in for the full compile (which takes tens of seconds).
    kernel_cache.WEIGHTS = {{"tonemap": 1.0, "stft": 3.0}}
    compiled = kernel_cache.ensure_kernels(lambda f, m: print(json.dumps([f, m]), flush=True), processes={processes})
    print(json.dumps({{"compiled": compiled, "ready": kernel_cache.kernels_ready(),
                      "marker": str(kernel_cache._marker())}}))
"""

def test_first_run_compiles_in_parallel_processes_and_later_runs_load_the_cache(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    res = _python(_SMALL_WARMUP.format(processes=2), env)
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.strip().splitlines()]
    steps, summary = lines[:-1], lines[-1]
    assert summary["compiled"] and summary["ready"] and Path(summary["marker"]).exists()
    assert steps[0] == [0.0, "compiling 2 sets of kernels in 2 process(es)"]
    assert sorted(m.split(" ")[0] for _, m in steps[1:]) == ["stft", "tonemap"]  # each once, in either process
    assert steps[-1][0] == pytest.approx(1.0)
    assert [f for f, _ in steps] == sorted(f for f, _ in steps)
    # The compiled code is in the cache: the next process neither compiles nor reports.
    again = _python(_SMALL_WARMUP.format(processes=2), env)
    assert json.loads(again.stdout.strip().splitlines()[-1])["compiled"] is False
    assert len(again.stdout.strip().splitlines()) == 1
    assert not list((tmp_path / "cache").rglob("soma-kernels.progress"))


def test_a_process_that_needs_the_kernels_waits_for_the_one_compiling_them(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    where = _python("from soma_shm import kernel_cache; print(kernel_cache._marker())", env)
    marker = Path(where.stdout.strip())
    marker.parent.mkdir(parents=True, exist_ok=True)
    with open(marker.parent / "soma-kernels.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # this test is "the process compiling them"
        (marker.parent / "soma-kernels.progress").write_text("0.4000 cwt ready (1/6, 9 s)")
        waiter = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_SMALL_WARMUP.format(processes=2))],
            env={**os.environ, "PYTHONPATH": str(ROOT), **env}, stdout=subprocess.PIPE, text=True)
        first = json.loads(waiter.stdout.readline())
        assert first == [0.4, "cwt ready (1/6, 9 s) (another process compiles them)"]
        marker.write_text("compiled\n")
        time.sleep(0.3)
        assert waiter.poll() is None  # still waiting for the lock, although the marker is there
        fcntl.flock(lock, fcntl.LOCK_UN)
    out, _ = waiter.communicate(timeout=120)
    assert waiter.returncode == 0
    lines = [json.loads(line) for line in out.strip().splitlines()]
    assert lines[-2] == [1.0, "ready"]
    assert lines[-1]["compiled"] is True  # it waited for the kernels...
    assert not list((tmp_path / "cache").rglob("*.nbi"))  # ...and compiled none itself


def test_warmup_command_reports_and_is_quick_once_compiled():
    # The suite's own cache is complete by now (the tests above loaded every kernel).
    res = subprocess.run([sys.executable, "-m", "soma_shm", "warmup"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([sys.executable, "-m", "soma_shm", "warmup"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert res.returncode == 0 and "kernels already compiled for these sources" in res.stdout
    bad = subprocess.run([sys.executable, "-m", "soma_shm", "warmup", "--processes", "0"], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert bad.returncode == 2 and "--processes 0 must be at least 1" in bad.stderr


def test_compiling_processes_take_the_longest_tasks_first_and_a_reused_one_before_its_user(monkeypatch):
    from soma_shm import kernel_cache

    monkeypatch.setattr(kernel_cache, "WEIGHTS", {"small": 1.0, "user": 5.0, "reused": 2.0, "mid": 3.0, "tiny": 0.5})
    monkeypatch.setattr(kernel_cache, "AFTER", {"user": ("reused", "tiny")})
    assert kernel_cache.task_order() == ["reused", "tiny", "user", "mid", "small"]


def test_side_by_side_compilers_run_each_task_once_and_a_user_after_what_it_reuses(tmp_path, monkeypatch):
    import threading

    from soma_shm import warmup

    runs: list[tuple[str, str, float, float]] = []
    lock = threading.Lock()

    def task(name: str, seconds: float):
        def run():
            t = time.monotonic()
            time.sleep(seconds)
            with lock:
                runs.append((name, threading.current_thread().name, t, time.monotonic()))
        return run

    tasks = {"reused": task("reused", 0.3), "user": task("user", 0.1), "mid": task("mid", 0.2),
             "small": task("small", 0.05)}
    monkeypatch.setattr(warmup, "TASKS", tasks)
    monkeypatch.setattr(warmup, "AFTER", {"user": ("reused",)})
    monkeypatch.setenv(warmup.DONE_DIR_ENV, str(tmp_path))
    order = ["reused", "user", "mid", "small"]
    procs = [threading.Thread(target=warmup._child, args=(order,), name=f"p{i}") for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=30)
    assert sorted(r[0] for r in runs) == sorted(order)  # every task once
    by_name = {r[0]: r for r in runs}
    assert by_name["user"][2] >= by_name["reused"][3]  # started after what it reuses was done
    # While "reused" compiled, the other compiler did not sit idle: it took "mid" meanwhile.
    assert by_name["mid"][1] != by_name["reused"][1] and by_name["mid"][2] < by_name["reused"][3]
