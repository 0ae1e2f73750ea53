"""The synth role: the open file's resynthesis mix in a shared block, changed by the synth
worker (started by its first request), equal to an in-process render; a killed worker makes the
next update rebuild; the mix block goes with its file; bad input is refused in the caller."""

from __future__ import annotations

import numpy as np
import pytest

import soma_shm
from soma_shm.ipc.shm import list_segments
from soma_shm.synth import EngineResynthesis, render_partials
from tests import worker_tasks as wt
from tests.test_synth import random_partials, vibrato

pytestmark = pytest.mark.usefixtures("no_leaks")
FS = 48_000


@pytest.fixture(scope="module")
def engine():
    x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * FS) / FS)).astype(np.float32)
    eng = soma_shm.Engine(timeout=60, spares=False)
    eng.open(x, sample_rate=FS)
    eng.mix()  # the file's mix block lives as long as the module's engine (not a leak of one test)
    assert eng.wait_ready(60)
    yield eng
    eng.close()


def test_mix_in_the_synth_worker_equals_the_in_process_render(engine):
    assert engine.stats()["synth"]["workers"] == []  # on demand: nothing runs before the first request
    parts = random_partials(40, 3.0, seed=7)
    res = engine.submit_synth(add=parts, rebuild=True).result(timeout=60)
    assert res["added"] == 40 and res["rebuild"] and res["timings"]["compute_s"] > 0
    mix = engine.mix().samples(writable=False)
    np.testing.assert_array_equal(mix, render_partials(parts, FS, 3 * FS))
    assert len(engine.stats()["synth"]["workers"]) == 1
    # one partial changed: its old samples off, its new ones on
    new = parts[5] * np.array([1.0, 1.01, 1.0])
    engine.submit_synth(remove=[parts[5]], add=[new]).result(timeout=60)
    expect = render_partials(parts[:5] + [new] + parts[6:], FS, 3 * FS)
    assert np.abs(mix - expect).max() < 1e-6
    # the pipe carried knots, not samples
    assert engine.stats()["synth"]["bytes_sent"] < 40 * 60 * 3 * 8 * 4


def test_engine_resynthesis_follows_a_document_and_survives_a_killed_worker(engine):
    rs = EngineResynthesis(engine)
    doc = {f"p{i}": (p, False) for i, p in enumerate(random_partials(20, 3.0, seed=8))}
    rs.update(doc)
    np.testing.assert_array_equal(rs.mix, render_partials([p for p, _ in doc.values()], FS, 3 * FS))
    # the next request dies with its worker (SIGKILL in the middle of it)
    real = engine.submit_synth

    def dying(**kwargs):
        engine.submit_synth = real
        return wt.submit(engine, "synth", "kill")

    engine.submit_synth = dying
    doc["p3"] = (vibrato(t0=0.2, seconds=1.0), False)
    with pytest.raises(soma_shm.WorkerCrashed):
        rs.update(doc)
    assert engine.stats()["synth"]["crashes"] >= 1
    del doc["p4"]
    rs.update(doc)  # after a failure: a whole rebuild of what the document holds, in a new worker
    np.testing.assert_array_equal(rs.mix, render_partials([p for p, _ in doc.values()], FS, 3 * FS))
    assert sorted(rs.sounding) == sorted(doc)


def test_bad_synth_requests_raise_in_the_caller(engine):
    with pytest.raises(soma_shm.ParameterError, match=r"partial #0: point 1 \(time 0.1 s\) is not after"):
        engine.submit_synth(add=[[(0.2, 440, 1), (0.1, 440, 1)]])
    with pytest.raises(soma_shm.ParameterError, match="at or above Nyquist"):
        engine.submit_synth(add=[[(0.1, 30_000, 1), (0.2, 440, 1)]])
    with pytest.raises(soma_shm.ParameterError, match="rebuild='yes' must be True or False"):
        engine.submit_synth(add=[], rebuild="yes")


def test_the_mix_block_goes_with_its_file():
    with soma_shm.Engine(spares=False) as eng:
        eng.open(np.zeros(FS, np.float32), sample_rate=FS)
        first = eng.mix().segment.name
        assert first in list_segments()
        eng.open(np.zeros(2 * FS, np.float32), sample_rate=FS)
        assert first not in list_segments() and eng.mix().frames == 2 * FS
        second = eng.mix().segment.name
    assert second not in list_segments()
