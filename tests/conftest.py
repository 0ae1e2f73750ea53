"""Shared fixtures: every engine test must leave no worker process and no shared segment behind."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from soma_shm.ipc.shm import list_segments


def _children() -> set[int]:
    import psutil

    me = psutil.Process()
    out = set()
    for p in me.children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(p.cmdline()):
                out.add(p.pid)
        except psutil.Error:
            pass
    return out


def _ours() -> set[str]:
    return {n for n in list_segments() if n.startswith(f"soma_{os.getpid()}_")}


@pytest.fixture
def no_leaks():
    """Fails the test if it leaves worker processes or /dev/shm segments of this process behind.

    The forkserver itself is shared by every engine of the test run and is not counted.
    """
    before_children, before_segments = _children(), _ours()
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        extra = {p for p in _children() - before_children if not _is_forkserver(p)}
        segs = _ours() - before_segments
        if not extra and not segs:
            return
        time.sleep(0.05)
    assert not extra, f"worker processes left behind: {sorted(extra)}"
    assert not segs, f"shared-memory segments left behind: {sorted(segs)}"


def _is_forkserver(pid: int) -> bool:
    import psutil

    try:
        return "forkserver" in " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return True


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
