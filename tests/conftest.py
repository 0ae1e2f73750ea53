"""Shared fixtures: every engine test must leave no worker process and no shared segment behind."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from soma_shm.ipc.shm import list_segments


@pytest.fixture(autouse=True, scope="session")
def _private_config_and_state(tmp_path_factory):
    """The app keeps its recent list and recovery files under XDG folders: the test run (and the
    servers it starts) use their own, never the user's."""
    base = tmp_path_factory.mktemp("xdg")
    saved = {k: os.environ.get(k) for k in ("XDG_CONFIG_HOME", "XDG_STATE_HOME")}
    os.environ["XDG_CONFIG_HOME"] = str(base / "config")
    os.environ["XDG_STATE_HOME"] = str(base / "state")
    yield base
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def worker_processes() -> list:
    """Live (non-zombie) descendants of this process, without the forkserver and the resource
    tracker themselves. Workers forked by the forkserver inherit its command line, so the
    forkserver is recognised as the direct child that runs ``multiprocessing.forkserver``."""
    import psutil

    me = psutil.Process()
    out = []
    for p in me.children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
            if p.status() == psutil.STATUS_ZOMBIE or "resource_tracker" in cmd:
                continue
            if "forkserver" in cmd and p.ppid() == me.pid:
                continue
            out.append(p)
        except psutil.Error:
            pass
    return out


def _children() -> set[int]:
    return {p.pid for p in worker_processes()}


def live_engines() -> list:
    """Engines still open (e.g. a module-scoped engine shared by several tests)."""
    from soma_shm.engine import _ENGINES

    return [eng for eng in list(_ENGINES) if not eng._closed]


def _live_engine_workers() -> set[int]:
    """Workers of engines still open."""
    return {pid for eng in live_engines() for pid in eng.worker_pids()}


def _ours() -> set[str]:
    return {n for n in list_segments() if n.startswith(f"soma_{os.getpid()}_")}


@pytest.fixture
def no_leaks():
    """Fails the test if it leaves worker processes or /dev/shm segments of this process behind.

    The forkserver itself is shared by every engine of the test run and is not counted, nor are
    the current workers of an engine that outlives the test on purpose (a module fixture).
    """
    before_children, before_segments = _children(), _ours()
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        extra = _children() - before_children - _live_engine_workers()
        segs = _ours() - before_segments
        if not extra and not segs:
            return
        time.sleep(0.05)
    assert not extra, f"worker processes left behind: {sorted(extra)}"
    assert not segs, f"shared-memory segments left behind: {sorted(segs)}"


def make_audio(
    seconds: float, fs: int, freqs=(440.0,), amp: float = 0.3, noise: float = 0.0, seed: int = 0
) -> np.ndarray:
    """A float32 test recording: a sum of sines of amplitude ``amp`` each, plus seeded white noise."""
    t = np.arange(int(round(seconds * fs))) / fs
    x = sum(amp * np.sin(2 * np.pi * f * t) for f in freqs)
    if noise:
        x = x + noise * np.random.default_rng(seed).standard_normal(t.size)
    return np.asarray(x, dtype=np.float32)


@pytest.fixture
def tone():
    """Five seconds of a 440 Hz tone at 48 kHz (and its rate)."""
    fs = 48_000
    return make_audio(5.0, fs, freqs=(440.0,), amp=0.3), fs


@pytest.fixture(scope="session")
def real_audio(tmp_path_factory):
    """The rendered chorale (MIDI, WAV, FLAC, Ogg, MP3) and spoken sentence of ``tests/realaudio.py``,
    made once per test session; skips when the Debian tools that make them are missing."""
    from tests import realaudio

    missing = realaudio.missing_tools()
    if missing:
        pytest.skip(f"missing {', '.join(missing)}; `make setup` installs them")
    return realaudio.render_all(tmp_path_factory.mktemp("realaudio"))
