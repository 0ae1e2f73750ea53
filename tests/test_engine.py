"""The engine: shared audio, workers, latest-wins, queues, crashes, timeouts, hygiene."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import soundfile as sf

import soma_shm
from soma_shm.ipc.shm import list_segments, run_prefix
from tests import worker_tasks as wt
from tests.conftest import live_engines, make_audio, worker_processes

pytestmark = pytest.mark.usefixtures("no_leaks")


def _descendants() -> list:
    return worker_processes()


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_viewport_overview_and_snap_match_the_kernels(tone, method):
    x, fs = tone
    with soma_shm.Engine(start_method=method) as eng:
        info = eng.open(x, sample_rate=fs)
        assert (info.frames, info.sample_rate, info.duration) == (len(x), fs, 5.0)
        ov = eng.overview(400, 100)
        # The loudest pixel is at full brightness (to the pyramid's half step of 0.25 dB).
        assert ov.image.dtype == np.uint8 and ov.image.shape == (100, 400) and ov.image.max() >= 253
        assert eng.amp_reference == pytest.approx(0.3, rel=0.01)
        res = eng.submit_viewport(1.0, 2.0, 100.0, 5_000.0, 320, 120, magnitude=True).result(timeout=60)
        assert res.method == "cwt" and res.image.shape == (120, 320)
        assert not res.magnitude.flags.writeable
        want = soma_shm.cwt_image(x, fs, 1.0, 2.0, 100.0, 5_000.0, 320, 120)
        np.testing.assert_array_equal(res.magnitude, want)
        np.testing.assert_array_equal(res.image, soma_shm.tone_map(want, eng.amp_reference))
        assert not res.image.flags.writeable
        image = res.copy().image  # copy() is the result itself: its arrays hold no slot
        assert image is res.image and not res.released and image.shape == (120, 320)
        snap = eng.submit_snap([(1.0, 450.0), (3.0, 430.0)]).result(timeout=60)
        assert snap.points.shape == (201, 3)
        assert np.abs(snap.points[:, 1] - 440).max() < 0.1
        st = eng.stats()
        assert st["start_method"] == method
        assert st["viewport"]["done"] == 1 and st["snap"]["done"] == 1
        if method == "forkserver":
            assert all(st["viewport"]["preloaded"])


def test_wide_windows_use_the_stft_cut_from_the_files_pyramid():
    from soma_shm.pyramid import build_pyramid

    fs = 8_000
    x = (0.2 * np.sin(2 * np.pi * 300 * np.arange(40 * fs) / fs)).astype(np.float32)
    with soma_shm.Engine(spares=False) as eng:
        stages = []
        eng.open(x, sample_rate=fs, progress=lambda stage, f: stages.append((stage, f)))
        built = [f for stage, f in stages if stage == "pyramid"]
        assert built[0] == 0.0 and built[-1] == 1.0 and built == sorted(built) and len(built) >= 10
        assert [n for n in list_segments(f"soma_{os.getpid()}_") if "_pyramid_" in n]
        pyramid = build_pyramid(x, fs, reference=eng.amp_reference)
        res = eng.submit_viewport(0.0, 35.0, 50, 3_000, 200, 50, magnitude=True).result(timeout=60)
        assert res.method == "stft" and res.from_pyramid
        np.testing.assert_array_equal(res.magnitude, pyramid.image(0.0, 35.0, 50, 3_000, 200, 50))
        res.release()
        assert res.image is None and res.released
        ov = eng.overview(300, 40)
        assert ov.timings["pyramid"]
        np.testing.assert_array_equal(ov.magnitude, pyramid.image(0.0, 40.0, 20.0, 4_000.0, 300, 40))
        narrow = eng.submit_viewport(0.0, 30.0, 50, 3_000, 200, 50).result(timeout=60)
        assert narrow.method == "cwt" and not narrow.from_pyramid and narrow.magnitude is None  # only on request
        with pytest.raises(soma_shm.ParameterError, match="magnitude='yes' must be True or False"):
            eng.submit_viewport(0.0, 30.0, 50, 3_000, 200, 50, magnitude="yes")
        slots = eng.stats()["viewport"]["slots"]
        assert slots["computing"] == 0 and slots["total"] == 3  # a result holds no slot
        narrow.release()
        assert narrow.image is None and narrow.released
        # A forced STFT of a narrow window, or other STFT frames, are computed from the audio.
        forced = eng.submit_viewport(0.0, 10.0, 50, 3_000, 200, 50, magnitude=True, method="stft").result(60)
        assert not forced.from_pyramid
        np.testing.assert_array_equal(forced.magnitude, soma_shm.stft_image(x, fs, 0.0, 10.0, 50, 3_000, 200, 50))
        forced.release()
        other = soma_shm.AnalysisSettings(stft_window_ms=100.0)
        eng.set_settings(other)
        wide = eng.submit_viewport(0.0, 35.0, 50, 3_000, 200, 50, magnitude=True).result(timeout=60)
        assert not wide.from_pyramid
        np.testing.assert_array_equal(wide.magnitude, soma_shm.stft_image(x, fs, 0.0, 35.0, 50, 3_000, 200, 50, other))
        wide.release()
    with soma_shm.Engine(spares=False, pyramid=False) as eng:
        eng.open(x, sample_rate=fs)
        assert not [n for n in list_segments(f"soma_{os.getpid()}_") if "_pyramid_" in n]
        res = eng.submit_viewport(0.0, 35.0, 50, 3_000, 200, 50, magnitude=True).result(timeout=60)
        assert not res.from_pyramid
        np.testing.assert_array_equal(res.magnitude, soma_shm.stft_image(x, fs, 0.0, 35.0, 50, 3_000, 200, 50))
        res.release()
        assert not eng.overview(300, 40).timings["pyramid"]


@pytest.fixture(scope="module")
def engine():
    fs = 48_000
    x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(20 * fs) / fs)).astype(np.float32)
    eng = soma_shm.Engine(timeout=60)
    eng.open(x, sample_rate=fs)
    assert eng.wait_ready(60)
    yield eng
    eng.close()


def test_latest_viewport_wins(engine):
    before = engine.stats()["viewport"]
    handles = [engine.submit_viewport(1.0, 3.0 + 0.1 * i, 50, 20_000, 1_600, 600) for i in range(8)]
    last = handles[-1].result(timeout=60)
    assert last.t1 == pytest.approx(3.7)
    for h in handles[:-1]:
        with pytest.raises(soma_shm.RequestCancelled, match="superseded|cancelled"):
            h.result(timeout=60)
    after = engine.stats()["viewport"]
    assert after["cancels"] - before["cancels"] >= 1
    last.release()


def test_invariants_during_a_request_storm(engine):
    samples = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            procs = _descendants()
            samples.append(len(procs))
            time.sleep(0.005)

    th = threading.Thread(target=sample)
    th.start()
    try:
        handles = []
        for i in range(20):
            handles.append(engine.submit_viewport(0.5, 2.5 + 0.01 * i, 50, 20_000, 800, 300))
            handles.append(engine.submit_snap([(1.0, 430.0 + i), (2.0, 450.0)]))
            time.sleep(0.02)
        handles[-2].result(timeout=60).release()
        for h in handles[1::2]:
            h.result(timeout=60)
    finally:
        stop.set()
        th.join()
    # Two roles, each with at most its computing worker and its warm spare (and the sampler saw them).
    assert 2 <= max(samples) <= 4
    st = engine.stats()
    assert len(st["viewport"]["workers"]) <= 2 and len(st["snap"]["workers"]) <= 2


def test_strict_mode_never_exceeds_two_worker_processes(tone):
    x, fs = tone
    samples = []
    stop = threading.Event()
    # Processes of other engines (the module-scoped one) are told apart by their pids now: wait
    # until those engines have all their workers, so that none of theirs still starting (the
    # replacement of one a previous test terminated) is counted as this engine's.
    assert all(eng.wait_ready(120) for eng in live_engines())
    others = {p.pid for p in _descendants()}
    with soma_shm.Engine(spares=False) as eng:
        eng.open(x, sample_rate=fs)

        def sample():
            while not stop.is_set():
                samples.append(sum(p.pid not in others for p in _descendants()))
                time.sleep(0.002)

        th = threading.Thread(target=sample)
        th.start()
        try:
            for i in range(10):
                eng.submit_viewport(0.5, 2.0, 50, 20_000, 800, 300)
                eng.submit_snap([(1.0, 440.0), (2.0, 440.0)])
                time.sleep(0.03)
            eng.submit_viewport(0.5, 2.0, 50, 20_000, 800, 300).result(timeout=60).release()
        finally:
            stop.set()
            th.join()
    assert samples and 1 <= max(samples) <= 2


def test_no_stale_or_half_written_image_is_ever_delivered(engine):
    # Each request fills its slot row by row with its own value, slowly; most are killed
    # mid-write by the next one. Whatever is delivered must be whole and its own.
    rng = np.random.default_rng(0)
    delivered = 0
    for i in range(12):
        h = wt.submit(engine, "viewport", "pattern", height=64, width=64, value=i + 1, row_delay=0.002)
        time.sleep(float(rng.uniform(0.0, 0.15)))
        try:
            res = h.result(timeout=0) if h.done() else None
        except soma_shm.RequestCancelled:
            res = None
        if res is not None:
            assert (res.image == i + 1).all()
            res.release()
            delivered += 1
    final = wt.submit(engine, "viewport", "pattern", height=64, width=64, value=99, row_delay=0.0).result(timeout=60)
    assert (final.image == 99).all()
    final.release()


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_crash_matrix(method, tone):
    x, fs = tone
    with soma_shm.Engine(start_method=method, timeout=1.0) as eng:
        eng.open(x, sample_rate=fs)
        with pytest.raises(soma_shm.WorkerCrashed, match="died with exit code -9") as ei:
            wt.submit(eng, "snap", "kill").result(timeout=60)
        assert ei.value.exitcode == -signal.SIGKILL
        with pytest.raises(soma_shm.WorkerCrashed, match="exit code 3") as ei:
            wt.submit(eng, "snap", "exit", code=3).result(timeout=60)
        assert ei.value.exitcode == 3
        with pytest.raises(soma_shm.WorkerError, match="requested failure") as ei:
            wt.submit(eng, "snap", "fail").result(timeout=60)
        assert "RuntimeError" in ei.value.remote_traceback
        with pytest.raises(soma_shm.WorkerTimeout, match="exceeded the timeout of 1 s"):
            wt.submit(eng, "viewport", "sleep", seconds=30.0).result(timeout=60)
        # Every failure is recovered by the next request.
        assert eng.submit_snap([(1.0, 440.0), (2.0, 440.0)]).result(timeout=60).points.shape[0] == 101
        eng.submit_viewport(1.0, 2.0, 100, 5_000, 100, 50).result(timeout=60).release()
        st = eng.stats()
        assert st["snap"]["crashes"] == 2 and st["snap"]["errors"] == 1 and st["viewport"]["timeouts"] == 1


def test_sigkill_of_a_worker_mid_request_from_outside(engine):
    h = wt.submit(engine, "viewport", "sleep", seconds=5.0)
    # Killed once it has taken the request: a worker killed before that never started it, and
    # the request is rightly given to the next worker instead of failing.
    deadline = time.monotonic() + 30
    while not (st := engine.stats()["viewport"])["busy_started"]:
        assert time.monotonic() < deadline, "no worker took the request"
        time.sleep(0.005)
    os.kill(st["busy_pid"], signal.SIGKILL)
    with pytest.raises(soma_shm.WorkerCrashed) as ei:
        h.result(timeout=30)
    assert ei.value.exitcode == -signal.SIGKILL
    engine.submit_viewport(1.0, 2.0, 100, 5_000, 100, 50).result(timeout=60).release()


def test_pipes_carry_no_audio_or_image_bytes():
    fs = 48_000
    per_request = {}
    for seconds in (5, 120):
        x = np.zeros(seconds * fs, dtype=np.float32)
        x[::997] = 0.1
        with soma_shm.Engine() as eng:
            eng.open(x, sample_rate=fs)
            s0 = eng.stats()["viewport"]
            for _ in range(3):
                eng.submit_viewport(1.0, 3.0, 50, 20_000, 1_600, 600).result(timeout=60).release()
            s1 = eng.stats()["viewport"]
            sent = s1["bytes_sent"] - s0["bytes_sent"]
            received = s1["bytes_received"] - s0["bytes_received"]
            per_request[seconds] = (sent + received) / 3
    assert per_request[5] < 4096 and per_request[120] < 4096
    assert abs(per_request[120] - per_request[5]) < 64  # independent of the file's length


def test_snap_queue_is_bounded(tone):
    x, fs = tone
    with soma_shm.Engine(snap_queue=2) as eng:
        eng.open(x, sample_rate=fs)
        blocker = wt.submit(eng, "snap", "sleep", seconds=0.5)
        deadline = time.monotonic() + 30
        while not eng.stats()["snap"]["busy"] and time.monotonic() < deadline:
            time.sleep(0.005)
        waiting = [eng.submit_snap([(1.0, 440.0), (2.0, 440.0)]) for _ in range(4)]
        with pytest.raises(soma_shm.QueueFull, match="dropped"):
            waiting[0].result(timeout=30)
        with pytest.raises(soma_shm.QueueFull):
            waiting[1].result(timeout=30)
        blocker.result(timeout=30)
        assert waiting[3].result(timeout=30).points.shape[0] == 101
        assert eng.stats()["snap"]["dropped"] == 2


def test_opening_another_file_cancels_both_roles(tone, tmp_path):
    x, fs = tone
    path = tmp_path / "other.wav"
    sf.write(path, np.stack([x, x], axis=1), fs, subtype="PCM_16")
    with soma_shm.Engine() as eng:
        eng.open(x, sample_rate=fs)
        first_block = eng._files["open"].audio_block.segment.name
        v = wt.submit(eng, "viewport", "sleep", seconds=5.0)
        s = wt.submit(eng, "snap", "sleep", seconds=5.0)
        time.sleep(0.2)
        info = eng.open(path)
        for h in (v, s):
            with pytest.raises(soma_shm.RequestCancelled, match="the file changed"):
                h.result(timeout=30)
        assert info.path == str(path) and info.channels == 2 and info.generation == 2
        res = eng.submit_viewport(1.0, 2.0, 220, 880, 100, 3, magnitude=True).result(timeout=60)  # row 1 = 440 Hz
        np.testing.assert_allclose(res.magnitude[1], 0.3, rtol=0.01)  # stereo mixed to mono, 16-bit
        res.release()
        # The first file's block is gone from shared memory, the new one is there.
        assert first_block not in list_segments() and eng._files["open"].audio_block.segment.name in list_segments()


def test_bad_input_is_rejected_in_the_caller_and_nothing_changes(tone, tmp_path):
    x, fs = tone
    with soma_shm.Engine() as eng:
        with pytest.raises(soma_shm.EngineClosed, match="no file is open"):
            eng.submit_viewport(0, 1, 50, 5_000, 10, 10)
        eng.open(x, sample_rate=fs)
        assert eng.wait_ready(120)  # spares still starting would change the pids below
        pids = sorted(eng.worker_pids())
        with pytest.raises(soma_shm.ParameterError, match="t0=2.0 must be before t1=1.0"):
            eng.submit_viewport(2.0, 1.0, 50, 5_000, 10, 10)
        with pytest.raises(soma_shm.ParameterError, match="width=5000 exceeds the limit of 2560"):
            eng.submit_viewport(0.0, 1.0, 50, 5_000, 5_000, 10)
        with pytest.raises(soma_shm.ParameterError, match="trace has 1 point"):
            eng.submit_snap([(1.0, 440.0)])
        bad = tmp_path / "bad.wav"
        bad.write_bytes(b"RIFF....WAVEfmt garbage")
        with pytest.raises(soma_shm.AudioFormatError, match="cannot read"):
            eng.open(bad)
        with pytest.raises(soma_shm.AudioFormatError, match="does not exist"):
            eng.open(tmp_path / "missing.flac")
        y = x.copy()
        y[100] = np.inf
        with pytest.raises(soma_shm.AudioFormatError, match="first at frame 100"):
            eng.open(y, sample_rate=fs)
        with pytest.raises(soma_shm.ParameterError, match="sample_rate is required"):
            eng.open(x)
        # The document is intact and the workers are the same.
        assert eng.info.frames == len(x) and sorted(eng.worker_pids()) == pids
        eng.submit_viewport(1.0, 2.0, 100, 5_000, 100, 50).result(timeout=60).release()


def test_engine_options_are_validated():
    with pytest.raises(soma_shm.ParameterError, match="start_method='fork' is not supported"):
        soma_shm.Engine(start_method="fork")
    with pytest.raises(soma_shm.ParameterError, match="timeout=-1 must be"):
        soma_shm.EngineOptions(timeout=-1)
    with pytest.raises(soma_shm.ParameterError, match="snap_queue=0 must be an integer"):
        soma_shm.EngineOptions(snap_queue=0)
    with pytest.raises(soma_shm.ParameterError, match="pyramid='no' must be True or False"):
        soma_shm.EngineOptions(pyramid="no")
    with pytest.raises(soma_shm.ParameterError, match="spares=1 must be True or False"):
        soma_shm.Engine(spares=1)
    for bad in (-1, 0, 2.5, True, "4"):
        with pytest.raises(soma_shm.ParameterError, match=f"worker_threads={bad!r} must be None"):
            soma_shm.EngineOptions(worker_threads=bad)
    assert soma_shm.EngineOptions(worker_threads=1).worker_threads == 1


def test_on_result_must_be_callable(engine):
    done = engine.stats()["viewport"]["done"]
    with pytest.raises(soma_shm.ParameterError, match="on_result=5 must be a callable"):
        engine.submit_viewport(1.0, 2.0, 100, 5_000, 100, 50, on_result=5)
    with pytest.raises(soma_shm.ParameterError, match="on_result='print' must be a callable"):
        engine.submit_snap([(1.0, 440.0), (1.5, 440.0)], on_result="print")
    # Nothing was queued: the next request is served as usual.
    engine.submit_viewport(1.0, 2.0, 100, 5_000, 100, 50).result(timeout=60).release()
    assert engine.stats()["viewport"]["done"] == done + 1


def test_opening_a_fifo_is_refused_at_once(engine, tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    frames = engine.info.frames
    with pytest.raises(soma_shm.AudioFormatError, match="pipe.wav' is not a regular file"):
        engine.open(fifo)  # would block forever inside libsndfile's open
    assert engine.info.frames == frames


def test_exception_inside_the_with_block_cleans_up(tone):
    x, fs = tone
    with pytest.raises(KeyError):
        with soma_shm.Engine() as eng:
            eng.open(x, sample_rate=fs)
            raise KeyError("boom")
    with pytest.raises(soma_shm.EngineClosed, match="closed"):
        eng.submit_viewport(0, 1, 50, 5_000, 10, 10)


def test_killed_parent_leaves_nothing_after_the_next_start(tmp_path):
    script = tmp_path / "victim.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, sys, time, numpy as np, soma_shm
            if __name__ == "__main__":
                eng = soma_shm.Engine()
                eng.open(np.zeros(48000, np.float32) + 0.1, sample_rate=48000)
                eng.wait_ready(60)
                print(os.getpid(), " ".join(map(str, eng.worker_pids())), flush=True)
                time.sleep(60)
            """
        )
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().split()
        pid, workers = int(line[0]), [int(p) for p in line[1:]]
        assert list_segments(f"soma_{pid}_")
        os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    import psutil

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(psutil.pid_exists(w) for w in workers):
        time.sleep(0.05)
    assert not any(
        psutil.pid_exists(w) and psutil.Process(w).status() != psutil.STATUS_ZOMBIE for w in workers
    ), "workers outlived their parent"
    from soma_shm.ipc.shm import sweep_orphans

    sweep_orphans()  # what the next Engine does at start (the tracker may have beaten it)
    assert not list_segments(f"soma_{pid}_")


def test_an_outside_process_attaching_does_not_unlink_the_block(tone):
    x, fs = tone
    with soma_shm.Engine() as eng:
        eng.open(x, sample_rate=fs)
        desc = eng._files["open"].audio_block.desc()
        code = textwrap.dedent(
            f"""
            from soma_shm.ipc.blocks import AudioBlock, AudioDesc
            b = AudioBlock.attach(AudioDesc({desc.name!r}, {desc.size}, {desc.frames}, {desc.sample_rate}, {desc.generation}))
            a = b.samples()
            assert not a.flags.writeable
            print(float(a[:48000].max()))
            del a
            b.close()
            """
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert float(out.stdout) == pytest.approx(0.3, rel=1e-3)
        assert desc.name in list_segments()
        eng.submit_viewport(1.0, 2.0, 100, 5_000, 100, 50).result(timeout=60).release()


def test_full_shared_memory_is_a_clear_error(monkeypatch, tone):
    import errno

    from soma_shm.ipc import shm

    x, fs = tone

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    with soma_shm.Engine() as eng:
        audio_before = [n for n in list_segments(run_prefix()) if "_audio_" in n]
        monkeypatch.setattr(shm.os, "posix_fallocate", no_space)
        with pytest.raises(soma_shm.SharedMemoryError, match="shared memory is too small"):
            eng.open(x, sample_rate=fs)
        monkeypatch.undo()
        assert eng.info is None
        assert [n for n in list_segments(run_prefix()) if "_audio_" in n] == audio_before
        # Room for the audio but not for its pyramid: the open file stays, nothing new is left.
        eng.open(x, sample_rate=fs)
        before = list_segments(run_prefix())  # ours only: other test runs share /dev/shm
        calls = []

        def second_fails(fd, offset, length):
            calls.append(length)
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(fd, offset, length)

        real = shm.os.posix_fallocate
        monkeypatch.setattr(shm.os, "posix_fallocate", second_fails)
        with pytest.raises(soma_shm.SharedMemoryError, match="shared memory is too small"):
            eng.open(x[: fs], sample_rate=fs)
        monkeypatch.undo()
        assert len(calls) == 2 and list_segments(run_prefix()) == before and eng.info.frames == len(x)
        eng.submit_viewport(0.5, 1.5, 100, 5_000, 50, 20).result(timeout=60).release()


@pytest.mark.parametrize("failure", ["shared memory fills up", "corrupt frames"])
def test_a_long_file_failing_halfway_leaves_the_open_file_and_nothing_else(tmp_path, monkeypatch, tone, failure):
    # A long FLAC decodes in parallel ranges into a block allocated chunk by chunk while its
    # pyramid is built: /dev/shm filling up halfway (the chunk's allocation fails) or a corrupt
    # frame stops the open with a typed error; the file open before stays, no segment is left.
    from soma_shm import audio, pyramid
    from soma_shm.ipc.blocks import AudioBlock

    fs = 8_000
    path = tmp_path / "long.flac"
    sf.write(path, make_audio(60.0, fs, freqs=(440.0, 1_000.0), amp=0.3, noise=0.05), fs, subtype="PCM_16")
    monkeypatch.setattr(pyramid, "PROGRESSIVE_MIN_SAMPLES", 1_000)
    monkeypatch.setattr(audio, "PARALLEL_MIN_FRAMES", 1_000)
    monkeypatch.setattr(audio, "DECODE_THREADS", 2)
    monkeypatch.setattr(audio, "CHUNK_FRAMES", 4_096)
    if failure == "corrupt frames":
        data = bytearray(path.read_bytes())
        for i in range(len(data) * 2 // 3, len(data) * 2 // 3 + 3_000, 7):
            data[i] ^= 0xFF
        path.write_bytes(bytes(data))
        error, message = soma_shm.AudioFormatError, "long.flac' is corrupt at frame"
    else:
        real = AudioBlock.prefault

        def fills_up(self, start, stop):
            if start >= 20 * fs:
                raise soma_shm.SharedMemoryError("shared memory is too small for 1.8 MiB (audio)")
            real(self, start, stop)

        monkeypatch.setattr(AudioBlock, "prefault", fills_up)
        error, message = soma_shm.SharedMemoryError, "shared memory is too small"
    x, _ = tone
    with soma_shm.Engine(spares=False) as eng:
        eng.open(x, sample_rate=48_000)
        before = list_segments(run_prefix())
        with pytest.raises(error, match=message):
            eng.open(path)
        assert list_segments(run_prefix()) == before
        assert eng.info.frames == len(x) and eng.partial_overview(240, 40) is None
        eng.submit_viewport(0.5, 1.5, 100, 5_000, 50, 20).result(timeout=60).release()


def test_cancel_and_handle_cancel(engine):
    h = wt.submit(engine, "viewport", "sleep", seconds=5.0)
    time.sleep(0.1)
    assert h.cancel()
    with pytest.raises(soma_shm.RequestCancelled):
        h.result(timeout=10)
    s = wt.submit(engine, "snap", "sleep", seconds=5.0)
    time.sleep(0.1)
    assert engine.cancel("snap") == 1
    with pytest.raises(soma_shm.RequestCancelled, match="cancelled by the caller"):
        s.result(timeout=10)
    got = []
    done = threading.Event()
    engine.submit_snap([(1.0, 440.0), (2.0, 440.0)], on_result=lambda r: (got.append(r), done.set()))
    assert done.wait(60) and isinstance(got[0], soma_shm.engine.SnapResult)


def test_sigkill_at_random_points_mid_write_never_delivers_a_partial_image(engine):
    # The busy worker is SIGKILLed from outside at a random moment of a slow row-by-row write
    # (or just after it). Each request ends either as WorkerCrashed or as its own whole pattern.
    rng = np.random.default_rng(1)
    outcomes = {"crashed": 0, "whole": 0}
    for i in range(8):
        value = 10 + i
        h = wt.submit(engine, "viewport", "pattern", height=48, width=64, value=value, row_delay=0.002)  # ~0.1 s of writing
        deadline = time.monotonic() + 30
        busy = []
        while not busy and time.monotonic() < deadline and not h.done():
            busy = [p for p in [engine.stats()["viewport"]["busy_pid"]] if p is not None]
            time.sleep(0.001)
        time.sleep(float(rng.uniform(0.0, 0.12)))
        for pid in busy:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            res = h.result(timeout=30)
        except soma_shm.WorkerCrashed as exc:
            assert exc.exitcode == -signal.SIGKILL
            outcomes["crashed"] += 1
        else:
            assert res.image.shape == (48, 64) and (res.image == value).all()
            res.release()
            outcomes["whole"] += 1
    assert outcomes["crashed"] >= 1
    final = wt.submit(engine, "viewport", "pattern", height=48, width=64, value=77, row_delay=0.0).result(timeout=60)
    assert (final.image == 77).all()
    final.release()


def test_a_long_16_bit_file_shows_a_partial_overview_while_it_decodes(tmp_path, monkeypatch):
    from soma_shm import audio, pyramid
    from soma_shm.render import reference_level

    fs = 8_000
    x = (0.25 * np.sin(2 * np.pi * 440 * np.arange(60 * fs) / fs)).astype(np.float32)
    path = tmp_path / "long.flac"
    sf.write(path, x, fs, subtype="PCM_16")
    # "Long" and decoded in two ranges of many small reads, as an hour would be.
    monkeypatch.setattr(pyramid, "PROGRESSIVE_MIN_SAMPLES", 1_000)
    monkeypatch.setattr(audio, "PARALLEL_MIN_FRAMES", 1_000)
    monkeypatch.setattr(audio, "DECODE_THREADS", 2)
    monkeypatch.setattr(audio, "CHUNK_FRAMES", 4_096)
    with soma_shm.Engine(spares=False) as eng:
        partial = []

        def progress(stage, fraction):
            # Halfway, hold the decoder until the builder has shown what is there.
            if stage == "decode" and fraction >= 0.5 and not partial:
                deadline = time.monotonic() + 30
                while not partial and time.monotonic() < deadline:
                    res = eng.partial_overview(240, 40, 50, 3_000)
                    if res is not None:
                        partial.append(res)
                    time.sleep(0.01)

        assert eng.partial_overview(240, 40) is None  # nothing is being opened
        info = eng.open(path, progress=progress)
        assert eng.partial_overview(240, 40) is None
        assert partial, "no partial overview while the file decoded"
        first = partial[0]
        assert 0 < first.timings["fraction"] < 1 and first.image.shape == (40, 240)
        shown = first.magnitude.max(axis=0) > 0.01
        # Not all of it yet, but the start of a decoder's range (the file's first or second
        # half: which decoder got further when the builder looked depends on the scheduler).
        assert (shown[:20].all() or shown[125:145].all()) and not shown.all()
        # The finished file: the exact 0 dB level, and the pyramid a build after decoding makes.
        samples = eng.audio
        assert eng.amp_reference == reference_level(samples, fs)
        top = eng.stats()["pyramid"]
        ov = eng.overview(240, 40, 50, 3_000)
        assert ov.timings["pyramid"] and info.frames == x.size
        built = eng._files["open"].pyramid
        assert built.top == 2.0  # byte 255 at the full scale of 16-bit samples
        after = pyramid.build_pyramid(samples, fs, reference=built.top / 10 ** (pyramid.HEADROOM_DB / 20))
        for got, level in zip(built.levels, after.levels):
            np.testing.assert_array_equal(got, level)
        np.testing.assert_allclose(ov.magnitude, after.image(0.0, 60.0, 50, 3_000, 240, 40), rtol=1e-6)
        assert top["bytes"] == after.layout.nbytes
        stages = eng.stats()["open"]
        assert set(stages) >= {"blocks", "decode", "after_decode", "total", "cpu"}
        assert 0 <= stages["after_decode"] < stages["total"] and stages["decode"] < stages["total"]


def test_a_request_submitted_while_a_file_opens_runs_on_one_file(tone):
    """The app's threads keep submitting (strokes, mix updates) while another thread opens a file.
    A request that lands while the file switches is built and run on the old file (and cancelled)
    or on the new one. Before, one submitted between the cancel and the swap was given the old
    file's blocks, unlinked by the time a worker attached them: a SharedMemoryError, which the app
    showed as an error next to an open that had worked."""
    x, fs = tone
    partial = np.array([[0.1, 440.0, 0.1], [0.5, 440.0, 0.1]])
    with soma_shm.Engine(spares=False) as eng:
        eng.open(x, sample_rate=fs)
        handles, threads = [], []

        def submit_both():
            handles.append(eng.submit_snap([(0.2, 450.0), (0.6, 430.0)]))
            handles.append(eng.submit_synth(add=[partial]))

        pending_ids, cancel = eng._sup.pending_ids, eng._sup.cancel

        def noting_pending():  # the file is switching: another thread submits now
            t = threading.Thread(target=submit_both)
            t.start()
            threads.append(t)
            return pending_ids()

        def cancelling(*args, **kwargs):  # the old file's requests are cancelled: a submit right after
            n = cancel(*args, **kwargs)
            submit_both()
            return n

        eng._sup.pending_ids, eng._sup.cancel = noting_pending, cancelling
        try:
            eng.open(x[::-1].copy(), sample_rate=fs)
        finally:
            eng._sup.pending_ids, eng._sup.cancel = pending_ids, cancel
        for t in threads:
            t.join(60)
        for h in handles:
            try:
                h.result(timeout=120)
            except soma_shm.RequestCancelled:
                pass
        assert len(handles) == 4  # the submits during the switch and after the cancel
