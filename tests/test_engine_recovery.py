"""Recovery and lock discipline: the crash matrix, stopped workers, lock order, futures, results
that own their arrays, dropped engines, cost bounds, and workers that need only soma_shm."""

from __future__ import annotations

import concurrent.futures as cf
import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import soma_shm
from soma_shm.ipc.shm import list_segments, run_prefix
from tests import worker_tasks as wt
from tests.conftest import worker_processes

pytestmark = pytest.mark.usefixtures("no_leaks")

VIEW = (1.0, 2.0, 100.0, 5_000.0, 64, 32)


def _wait(predicate, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _busy(eng, role: str = "viewport") -> int:
    """The pid of the worker computing ``role``'s request, once it has taken it (a worker stopped
    before that never started the request, which is then rightly retried on another worker)."""
    _wait(lambda: eng.stats()[role]["busy_started"], what=f"a busy {role} worker")
    return eng.stats()[role]["busy_pid"]


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().split(b") ")[1][:1] in (b"Z", b"X")
    except FileNotFoundError:
        return True


# ----------------------------------------------------------------------------- crash matrix
SIGNALS = [signal.SIGKILL, signal.SIGTERM, signal.SIGSTOP]


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
@pytest.mark.parametrize("spares", [True, False])
def test_crash_matrix_then_an_immediate_request_succeeds(tone, method, spares):
    """SIGKILL, SIGTERM or SIGSTOP of the busy, an idle or the spare worker; the request made
    right after must succeed, and the role gets back its workers."""
    x, fs = tone
    targets = ["busy", "idle", "spare"] if spares else ["busy", "idle"]
    signals = SIGNALS if method == "forkserver" else [signal.SIGKILL]  # spawn: seconds per start
    wanted = 2 if spares else 1
    with soma_shm.Engine(start_method=method, spares=spares, timeout=120) as eng:
        eng.open(x, sample_rate=fs)
        for sig in signals:
            for target in targets:
                assert eng.wait_ready(120), (sig, target)
                blocker = None
                if target == "idle":
                    victim = eng.stats()["viewport"]["idle_pids"][0]  # the one the next request gets
                else:
                    blocker = wt.submit(eng, "viewport", "sleep", seconds=30.0)
                    busy = _busy(eng)
                    victim = busy if target == "busy" else eng.stats()["viewport"]["idle_pids"][0]
                os.kill(victim, sig)
                res = eng.submit_viewport(*VIEW).result(timeout=120)  # supersedes the blocker
                assert res.image.shape == (32, 64), (sig, target)
                if blocker is not None:
                    with pytest.raises((soma_shm.RequestCancelled, soma_shm.WorkerCrashed)):
                        blocker.result(timeout=60)
                _wait(lambda: victim not in eng.worker_pids() and _gone(victim), 60, f"{sig!r} {target} reaped")
                assert len(eng.worker_pids("viewport")) <= wanted
        assert eng.wait_ready(120)
        assert eng.stats()["viewport"]["crashes"] >= 1


def test_requests_right_after_an_idle_worker_is_killed_all_succeed(tone):
    x, fs = tone
    with soma_shm.Engine(spares=False) as eng:
        eng.open(x, sample_rate=fs)
        for i in range(10):
            assert eng.wait_ready(60)
            os.kill(eng.stats()["snap"]["idle_pids"][0], signal.SIGKILL)
            points = eng.submit_snap([(1.0, 440.0), (2.0, 440.0)]).result(timeout=60).points
            assert points.shape == (101, 3), i
        assert eng.stats()["snap"]["crashes"] == 10 and eng.stats()["snap"]["errors"] == 0


# In a process of its own: were the bug back, its forkserver's workers would all hang, and the
# forkserver is shared by every engine of the process that started it.
_DIES_STARTING_THREADS = """
import numpy as np, soma_shm
from tests import worker_tasks as wt
eng = soma_shm.Engine(start_method="forkserver", timeout=60)
eng.open(np.sin(np.arange(48000) * 0.0576).astype(np.float32), sample_rate=48000)
assert eng.wait_ready(120)
try:
    wt.submit(eng, "viewport", "die_starting_numba_threads").result(timeout=120)
except soma_shm.WorkerCrashed as exc:
    print("crashed", exc.exitcode)
res = eng.submit_viewport(0.1, 0.9, 100, 5000, 40, 20, method="cwt").result(timeout=60)
print("ok", res.image.shape)
eng.close()
"""


def test_a_worker_terminated_inside_numbas_thread_start_lock_leaves_the_others_working():
    """numba takes a lock around the start of its thread pool on every ``get_num_threads()``
    (each CWT viewport calls it). A worker terminated while it held it (a superseded viewport,
    at the wrong microsecond) once left that lock held for every worker forked from the same
    forkserver: each later viewport was acknowledged and never finished. The lock is per process."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-"], input=_DIES_STARTING_THREADS, capture_output=True, text=True,
                         timeout=300, cwd=root, env=dict(os.environ))
    assert out.returncode == 0, out.stderr[-5000:]
    assert out.stdout.split("\n")[:2] == [f"crashed {-signal.SIGTERM}", "ok (20, 40)"]


def test_forkserver_workers_never_walk_the_preloaded_kernels_in_their_collections(tone):
    """The forkserver freezes what it preloaded (kernels, numba's caches): neither it (at exit,
    where walking them took seconds) nor its workers' garbage collections walk those objects."""
    x, fs = tone
    with soma_shm.Engine(start_method="forkserver", spares=False) as eng:
        eng.open(x, sample_rate=fs)
        frozen = wt.submit(eng, "viewport", "frozen_objects").result(timeout=60)["frozen"]
    assert frozen > 10_000


def test_a_stopped_busy_worker_is_killed_and_queued_requests_proceed(tone):
    x, fs = tone
    with soma_shm.Engine(spares=True, timeout=300) as eng:
        eng.open(x, sample_rate=fs)
        blocker = wt.submit(eng, "snap", "sleep", seconds=60.0)
        busy = _busy(eng, "snap")
        os.kill(busy, signal.SIGSTOP)
        waiting = eng.submit_snap([(1.0, 440.0), (2.0, 440.0)])  # queued behind the stopped one
        with pytest.raises(soma_shm.WorkerCrashed, match=r"stopped \(SIGSTOP\)") as ei:
            blocker.result(timeout=60)
        assert ei.value.exitcode == -signal.SIGKILL
        assert waiting.result(timeout=60).points.shape == (101, 3)
        _wait(lambda: _gone(busy), what="the stopped worker gone")
        assert eng.wait_ready(60)
    # close() no longer waits seconds per stuck worker: everything was reaped (no_leaks).


def test_close_with_stopped_workers_kills_them(tone):
    x, fs = tone
    eng = soma_shm.Engine(spares=True)
    eng.open(x, sample_rate=fs)
    assert eng.wait_ready(60)
    pids = eng.worker_pids()
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    eng.close()
    assert all(_gone(pid) for pid in pids)


def test_a_worker_whose_pipe_closed_is_waited_for_on_its_sentinel_only(tone, monkeypatch):
    """Between a worker closing its pipe and its process being reaped, the closed pipe reads as
    ready for ever: waiting on it would keep the supervisor's thread spinning (and holding the
    caller's GIL) until the sentinel fires."""
    import multiprocessing.connection as mpc

    x, fs = tone
    with soma_shm.Engine(spares=False) as eng:
        eng.open(x, sample_rate=fs)
        handle = wt.submit(eng, "snap", "close_pipe_and_sleep", seconds=60.0)
        busy = _busy(eng, "snap")
        waits, real_wait = [], mpc.wait

        def counting_wait(objects, timeout=None):
            if threading.current_thread() is eng._sup._thread:
                waits.append(timeout)
            return real_wait(objects, timeout)

        monkeypatch.setattr(mpc, "wait", counting_wait)
        time.sleep(1.0)
        monkeypatch.setattr(mpc, "wait", real_wait)
        assert len(waits) < 50, f"the supervisor woke {len(waits)} times in a second with nothing to do"
        assert busy in eng.worker_pids("snap") and not handle.done()  # still there, still computing
        assert handle.cancel()
        _wait(lambda: _gone(busy) and busy not in eng.worker_pids(), what="the worker to be reaped")
        assert eng.submit_snap([(1.0, 440.0), (2.0, 440.0)]).result(timeout=60).points.shape == (101, 3)


def test_results_are_delivered_while_a_worker_starts(tone, monkeypatch):
    """Starting a worker waits for the new process; the supervisor does not: a slow start of a
    snap worker holds up neither a viewport result nor the snap request that waits for it."""
    from soma_shm.ipc import workers

    x, fs = tone
    with soma_shm.Engine(spares=True) as eng:
        eng.open(x, sample_rate=fs)
        assert eng.wait_ready(60)
        real_start, started, release = workers.Worker.start, threading.Event(), threading.Event()

        def slow_start(role, ctx, options):
            started.set()
            assert release.wait(60)  # as if the fork took this long
            return real_start(role, ctx, options)

        monkeypatch.setattr(workers.Worker, "start", staticmethod(slow_start))
        victim = eng.stats()["snap"]["idle_pids"][0]
        os.kill(victim, signal.SIGKILL)
        assert started.wait(60)  # the replacement's start is under way
        try:
            assert eng.submit_viewport(*VIEW).result(timeout=60).image.shape == (32, 64)
            assert eng.submit_snap([(1.0, 440.0), (2.0, 440.0)]).result(timeout=60).points.shape == (101, 3)
            assert len(eng.worker_pids("snap")) == 1  # the spare served it; the new one is not there yet
        finally:
            release.set()
        _wait(lambda: eng.stats()["snap"]["ready"] == 2, 60, "the replacement snap worker")


def test_a_request_waiting_for_a_worker_that_never_comes_is_given_up(tone, monkeypatch):
    """A queued request waits at most for a start plus ``timeout`` per request ahead and itself
    (the start's bound is zero here, so that the test does not wait a minute)."""
    from soma_shm.ipc import roles, workers

    x, fs = tone
    with soma_shm.Engine(spares=False, timeout=1.0) as eng:
        eng.open(x, sample_rate=fs)
        assert eng.wait_ready(60)
        monkeypatch.setattr(roles, "START_TIMEOUT_S", 0.0)  # while no worker of the role starts
        real_start, release = workers.Worker.start, threading.Event()

        def stuck_start(role, ctx, options):
            assert release.wait(60)
            return real_start(role, ctx, options)

        monkeypatch.setattr(workers.Worker, "start", staticmethod(stuck_start))
        os.kill(eng.stats()["snap"]["idle_pids"][0], signal.SIGKILL)  # its replacement does not come
        _wait(lambda: not eng.worker_pids("snap"), what="the killed snap worker reaped")
        try:
            with pytest.raises(soma_shm.WorkerTimeout, match=r"snap request \d+ waited \d+ s for a worker and was given up"):
                eng.submit_snap([(1.0, 440.0), (2.0, 440.0)]).result(timeout=60)
        finally:
            monkeypatch.setattr(roles, "START_TIMEOUT_S", workers.START_TIMEOUT_S)
            release.set()
        assert eng.stats()["snap"]["timeouts"] == 1
        _wait(lambda: eng.stats()["snap"]["ready"] == 1, 60, "the replacement snap worker")
        assert eng.submit_snap([(1.0, 440.0), (2.0, 440.0)]).result(timeout=60).points.shape == (101, 3)


# ------------------------------------------------------------------------------ lock order
def test_the_engine_answers_while_a_callback_waits_for_the_callers_lock(tone):
    """The app's deadlock, made deterministic: a thread holds its own lock and calls the engine
    while the engine's supervisor thread runs a result callback that waits for that lock."""
    x, fs = tone
    with soma_shm.Engine(spares=False) as eng:
        eng.open(x, sample_rate=fs)
        app_lock = threading.Lock()
        in_callback = threading.Event()
        delivered = []

        def on_result(result):  # like AppBackend._on_snap
            in_callback.set()
            with app_lock:
                delivered.append(result)

        with app_lock:  # like AppBackend.state() asking the engine for stats
            eng.submit_snap([(1.0, 440.0), (2.0, 440.0)], on_result=on_result)
            assert in_callback.wait(60)
            answers = {}

            def use_the_engine():
                answers["stats"] = eng.stats()["snap"]["done"]
                answers["pids"] = eng.worker_pids()
                h = eng.submit_viewport(*VIEW)
                answers["cancelled"] = h.cancel() and eng.cancel() == 0
                answers["handle"] = h

            t = threading.Thread(target=use_the_engine)
            t.start()
            t.join(10)
            stuck = t.is_alive()
        t.join(60)
        assert not stuck, "the engine blocked while its supervisor ran a callback: lock-order cycle"
        assert answers["stats"] == 1 and answers["cancelled"]
        with pytest.raises(soma_shm.RequestCancelled):
            answers["handle"].result(timeout=10)
        _wait(lambda: len(delivered) == 1, what="the callback to finish")
        assert delivered[0].points.shape == (101, 3)


def test_handles_are_futures_and_cancelled_is_a_cancelled_error(tone):
    x, fs = tone
    with soma_shm.Engine() as eng:
        eng.open(x, sample_rate=fs)
        handles = [eng.submit_snap([(1.0, 430.0 + i), (2.0, 440.0)]) for i in range(3)]
        assert all(isinstance(h, cf.Future) for h in handles)
        done, not_done = cf.wait(handles, timeout=60)
        assert len(done) == 3 and not not_done
        assert sorted(h.result().request_id for h in cf.as_completed(handles, timeout=60)) == \
            [h.request_id for h in handles]
        slow = wt.submit(eng, "snap", "sleep", seconds=30.0)
        assert slow.cancel() and slow.cancelled() and not slow.cancel()
        with pytest.raises(cf.CancelledError):
            slow.result(timeout=10)
        assert isinstance(slow.exception(), soma_shm.RequestCancelled)


# ------------------------------------------------------------------------------- role table
def test_a_new_role_is_one_entry_in_the_table():
    """A role defined only by a table entry (and a task) gets workers, slots and a queue bound."""
    import multiprocessing as mp

    from soma_shm.ipc.protocol import Role
    from soma_shm.ipc.supervisor import Request, Supervisor

    options = soma_shm.EngineOptions(spares=False)
    ctx = mp.get_context(options.method)
    ctx.set_forkserver_preload(["soma_shm.ipc._preload"])
    table = {"ramp": Role("ramp", "tests.worker_tasks:ramp", "samples", slots=lambda o: 1,
                          capacity=lambda o: 4 * 1000, policy="queue", queue_limit=lambda o: 1)}
    sup = Supervisor(options, ctx, table)
    try:
        futures = [cf.Future() for _ in range(3)]
        for n, fut in zip((10, 20, 30), futures):
            sup.submit(Request(sup.new_id(), "ramp", table["ramp"].task, {"n": n}, fut, None, None))
        # At most one waits beside the computing one: the oldest waiting is dropped, and the
        # message names the role's bound.
        results = []
        for fut in futures:
            try:
                results.append(fut.result(timeout=60)[0]["samples"])
            except soma_shm.QueueFull as exc:
                assert "the ramp role's queue_limit" in str(exc)
                results.append(None)
        assert results[-1] is not None and results[-1].dtype == np.float32
        np.testing.assert_array_equal(results[-1], np.arange(30, dtype=np.float32))
        got = [r for r in results if r is not None]
        assert sup.stats()["ramp"]["done"] == len(got) and sup.stats()["ramp"]["dropped"] == 3 - len(got)
    finally:
        sup.close()


# ----------------------------------------------------------------------------------- results
def test_result_arrays_never_change_when_their_slot_is_reused(tone):
    x, fs = tone
    with soma_shm.Engine(viewport_slots=1) as eng:
        eng.open(x, sample_rate=fs)
        first = eng.submit_viewport(0.5, 1.5, 100, 5_000, 200, 100, magnitude=True).result(timeout=60)
        image, magnitude = first.image, first.magnitude
        kept_image, kept_mag = image.copy(), magnitude.copy()
        for i in range(4):  # the one slot is written again and again
            other = wt.submit(eng, "viewport", "pattern", height=100, width=200, value=200 + i, row_delay=0.0)
            assert (other.result(timeout=60).image == 200 + i).all()
        np.testing.assert_array_equal(image, kept_image)
        np.testing.assert_array_equal(magnitude, kept_mag)
        assert not image.flags.writeable and not np.shares_memory(image, other.result().image)


def test_worker_errors_arrive_as_themselves_with_the_remote_traceback(tone):
    x, fs = tone
    with soma_shm.Engine(spares=False) as eng:
        eng.open(x, sample_rate=fs)
        with pytest.raises(soma_shm.WorkerError, match="RuntimeError: requested failure") as ei:
            wt.submit(eng, "snap", "fail").result(timeout=60)
        cause = ei.value.__cause__
        assert isinstance(cause, RuntimeError) and "requested failure" in str(cause)
        assert "worker_tasks.py" in str(cause.__cause__) and "in fail" in ei.value.remote_traceback


def test_soma_errors_raised_in_a_worker_arrive_as_themselves(tone):
    """A ParameterError raised by the snap task (more points than a slot holds) reaches the
    caller as a ParameterError, caused by the worker's traceback."""
    x, fs = tone
    with soma_shm.Engine(spares=False, max_snap_points=10) as eng:
        eng.open(x, sample_rate=fs)
        with pytest.raises(soma_shm.ParameterError, match=r"101 points but a snap slot holds 10") as ei:
            eng.submit_snap([(1.0, 440.0), (2.0, 440.0)]).result(timeout=60)
        assert type(ei.value) is soma_shm.ParameterError
        cause = ei.value.__cause__
        assert type(cause).__name__ == "RemoteTraceback" and "ipc/tasks.py" in str(cause) and "in snap" in str(cause)
        assert eng.stats()["snap"]["errors"] == 1 and eng.stats()["snap"]["crashes"] == 0
        assert eng.submit_snap([(1.0, 440.0), (1.05, 440.0)]).result(timeout=60).points.shape == (6, 3)


def test_a_worker_exception_that_cannot_be_unpickled_arrives_as_text_with_its_traceback(tone):
    x, fs = tone
    with soma_shm.Engine(spares=False) as eng:
        eng.open(x, sample_rate=fs)
        with pytest.raises(soma_shm.WorkerError,
                           match=r"_Unpicklable: a task's own error: it does not survive pickling") as ei:
            wt.submit(eng, "snap", "fail_unpicklable").result(timeout=60)
        assert isinstance(ei.value.__cause__, RuntimeError)
        assert "in fail_unpicklable" in ei.value.remote_traceback
        assert eng.stats()["snap"]["crashes"] == 0  # the worker survived and serves the next request
        assert eng.submit_snap([(1.0, 440.0), (2.0, 440.0)]).result(timeout=60).points.shape == (101, 3)


# ------------------------------------------------------------------------------- cost bound
def test_a_request_costing_too_much_memory_is_refused_before_it_starts(tone):
    x, fs = tone
    with soma_shm.Engine(spares=False) as eng:
        eng.open(x, sample_rate=fs)
        before = eng.stats()["viewport"]["requests"]
        with pytest.raises(soma_shm.ParameterError,
                           match=r"fmin=0.003 Hz over a 1 s window: the CWT would need about 7\.\d+ GiB .* raise fmin to at least 0\.0\d+ Hz"):
            eng.submit_viewport(1.0, 2.0, 0.003, 5_000, 64, 32)
        with pytest.raises(soma_shm.ParameterError, match="fmin=1e-06 Hz"):
            eng.submit_viewport(1.0, 2.0, 1e-6, 5_000, 64, 32)
        with pytest.raises(soma_shm.ParameterError, match=r"a trace down to 0.002 Hz over 1 s: .* draw the trace above 0\.\d+ Hz"):
            eng.submit_snap([(1.0, 0.002), (2.0, 0.002)])
        assert eng.stats()["viewport"]["requests"] == before  # nothing reached a worker
        # Just inside the bound it is computed; a smaller limit refuses it.
        ok = soma_shm.render.request_cost("cwt", fs, 1.0, 2.0, 1.0)
        assert ok < eng.options.max_request_bytes
        assert eng.submit_viewport(1.0, 2.0, 1.0, 5_000, 64, 32).result(timeout=120).image.shape == (32, 64)
    with soma_shm.Engine(spares=False, max_request_bytes=ok - 1) as eng:
        eng.open(x, sample_rate=fs)
        with pytest.raises(soma_shm.ParameterError, match="raise EngineOptions.max_request_bytes"):
            eng.submit_viewport(1.0, 2.0, 1.0, 5_000, 64, 32)


def test_library_calls_costing_more_than_the_machine_has_are_typed_errors(tone):
    x, fs = tone
    with pytest.raises(soma_shm.ParameterError, match=r"fmin=1e-06 Hz .* this machine's memory\); raise fmin"):
        soma_shm.cwt_image(x, fs, 1.0, 2.0, 1e-6, 5_000, 64, 32)
    with pytest.raises(soma_shm.ParameterError, match=r"a trace down to 1e-05 Hz .* draw the trace above"):
        soma_shm.snap_trace(x, fs, [(1.0, 1e-5), (2.0, 1e-5)])


# ------------------------------------------------------------------------ dropped engines
def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_an_engine_dropped_without_close_leaves_nothing(tone):
    x, fs = tone
    with soma_shm.Engine(spares=False) as warm:  # the forkserver and its pipes exist before counting
        warm.open(x, sample_rate=fs)
        warm.submit_viewport(*VIEW).result(timeout=60)
    gc.collect()
    fds, procs = _fds(), {p.pid for p in worker_processes()}

    def use_and_drop():
        eng = soma_shm.Engine(spares=True)
        eng.open(x, sample_rate=fs)
        eng.submit_viewport(*VIEW).result(timeout=60)
        eng.submit_snap([(1.0, 440.0), (2.0, 440.0)]).result(timeout=60)
        assert eng.wait_ready(60) and len(eng.worker_pids()) == 4
        return eng.worker_pids()

    pids = use_and_drop()
    gc.collect()
    _wait(lambda: all(_gone(p) for p in pids), what="the dropped engine's workers to exit")
    _wait(lambda: not list_segments(run_prefix()), what="the dropped engine's segments to go")
    assert {p.pid for p in worker_processes()} <= procs
    _wait(lambda: _fds() <= fds, 10, f"file descriptors back to {fds} (now {_fds()})")


_UNCLOSED = """
import numpy as np, soma_shm
from soma_shm.ipc.shm import list_segments, run_prefix
engine = soma_shm.Engine(spares=True)  # never closed: a global alive until the interpreter exits
engine.open(np.sin(np.arange(48000) * 0.0576).astype(np.float32), sample_rate=48000)
engine.submit_viewport(0.1, 0.9, 100, 5000, 40, 20).result(timeout=120)
assert engine.wait_ready(120)
print(run_prefix(), len(list_segments(run_prefix())), *engine.worker_pids())
"""


def test_an_engine_never_closed_is_closed_when_the_interpreter_exits():
    out = subprocess.run([sys.executable, "-"], input=_UNCLOSED, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    prefix, segments, *pids = out.stdout.split()
    assert int(segments) >= 2 and len(pids) == 4  # audio block and slot rings; two workers per role
    _wait(lambda: all(_gone(int(p)) for p in pids), 30, "the workers of an engine left open at exit to go")
    assert list_segments(prefix) == []
    assert "leaked" not in out.stderr and "Traceback" not in out.stderr


# --------------------------------------------------------------------- workers need soma_shm
_SCRIPT = """
import numpy as np, soma_shm
eng = soma_shm.Engine(spares=False, start_method={method!r})
eng.open(np.sin(np.arange(48000) * 0.0576).astype(np.float32), sample_rate=48000)
res = eng.submit_viewport(0.1, 0.9, 100, 5000, 40, 20).result(timeout=120)
snap = eng.submit_snap([(0.2, 440.0), (0.8, 440.0)]).result(timeout=120)
print("ok", res.image.shape, snap.points.shape[0], len(eng.worker_pids()))
eng.close()
"""


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_a_script_piped_to_python_dash_uses_an_engine(method):
    out = subprocess.run([sys.executable, "-"], input=_SCRIPT.format(method=method), capture_output=True,
                         text=True, timeout=300, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "ok (20, 40) 61 2"


def test_an_unguarded_script_is_not_run_again_by_the_workers(tmp_path):
    marker = tmp_path / "runs"
    script = tmp_path / "unguarded.py"
    script.write_text(
        f"with open({str(marker)!r}, 'a') as f:\n    f.write('run\\n')\n" + textwrap.dedent(_SCRIPT.format(method="spawn"))
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok (20, 40)")
    assert marker.read_text() == "run\n"  # only the script itself ran it, no worker
