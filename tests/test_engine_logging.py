"""Lifecycle logging: every event with role, pid and request id, workers included; quiet by default."""

from __future__ import annotations

import re

import pytest

import soma_shm
from soma_shm.ipc import _log
from tests import worker_tasks as wt

pytestmark = pytest.mark.usefixtures("no_leaks")


@pytest.fixture
def restore_logging():
    yield
    _log.reset()


def test_lifecycle_events_reach_the_log_file(tmp_path, tone, restore_logging, capfd):
    x, fs = tone
    path = tmp_path / "run.log"
    with soma_shm.Engine(log_level="DEBUG", log_file=str(path), timeout=0.5, spares=False) as eng:
        eng.open(x, sample_rate=fs)
        eng.submit_viewport(1.0, 2.0, 100, 5_000, 64, 32).result(timeout=60).release()
        with pytest.raises(soma_shm.WorkerCrashed):
            wt.submit(eng, "snap", "exit", code=3).result(timeout=60)
        with pytest.raises(soma_shm.WorkerTimeout):
            wt.submit(eng, "viewport", "sleep", seconds=30.0).result(timeout=60)
        eng.submit_snap([(1.0, 440.0), (2.0, 440.0)]).result(timeout=60)
        pids = set(eng.worker_pids())
    text = path.read_text()
    for pattern in (
        r"submit role=viewport request=\d+",
        r"lease role=viewport slot=\d request=\d+ generation=\d+",
        r"start role=viewport request=\d+ pid=\d+",
        r"worker start role=viewport pid=\d+ request=\d+ op=viewport",  # written by the worker
        r"done role=viewport request=\d+ slot=\d",
        r"release role=viewport slot=\d",
        r"crash role=snap pid=\d+ exitcode=3 request=\d+",
        r"timeout role=viewport request=\d+ pid=\d+",
        r"terminate role=viewport request=\d+ pid=\d+",
        r"respawn role=(viewport|snap) pid=\d+ method=forkserver",
        r"engine closed",
    ):
        assert re.search(pattern, text), f"no line matches {pattern!r}"
    # Lines come from several processes: the caller and at least the live workers.
    writers = {int(m) for m in re.findall(r"^\S+ \S+ (\d+) soma_shm\.worker ", text, flags=re.M)}
    assert pids & writers
    assert "crash role=snap" in capfd.readouterr().err  # and to stderr


def test_quiet_by_default(tone, capfd, monkeypatch):
    monkeypatch.delenv("SOMA_SHM_LOG", raising=False)
    x, fs = tone
    with soma_shm.Engine(spares=False) as eng:
        eng.open(x, sample_rate=fs)
        with pytest.raises(soma_shm.WorkerCrashed):  # a warning-level event
            wt.submit(eng, "snap", "exit", code=3).result(timeout=60)
        eng.submit_viewport(1.0, 2.0, 100, 5_000, 64, 32).result(timeout=60).release()
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def test_log_level_from_the_environment(monkeypatch):
    monkeypatch.setenv("SOMA_SHM_LOG", "info")
    assert soma_shm.EngineOptions().level() == 20
    monkeypatch.setenv("SOMA_SHM_LOG", "chatty")
    with pytest.raises(soma_shm.ParameterError, match="log level 'chatty' is unknown"):
        soma_shm.EngineOptions().level()
