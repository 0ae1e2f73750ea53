"""Shared segments, the audio block and slot rings, below the Engine."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys

import _posixshmem
import numpy as np
import pytest

import soma_shm
from soma_shm.ipc import shm
from soma_shm.ipc.blocks import KIND_IMAGE, AudioBlock, SlotRing
from soma_shm.ipc.shm import Segment, list_segments, run_prefix, sweep_orphans

pytestmark = pytest.mark.usefixtures("no_leaks")


@pytest.fixture
def segment():
    seg = Segment.create("test", 4096)
    yield seg
    seg.close()
    seg.unlink()


def test_names_carry_the_run_prefix(segment):
    assert segment.name.startswith(run_prefix()) and run_prefix().startswith(f"soma_{os.getpid()}_")
    assert segment.name in list_segments()


def test_attached_views_are_read_only_and_see_the_owners_writes(segment):
    a = segment.array(np.float64, (8,))
    a[:] = np.arange(8)
    other = Segment.attach(segment.name, 4096)
    b = other.array(np.float64, (8,))
    assert not b.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        b[0] = 1.0
    with pytest.raises(TypeError):  # the mapping itself is PROT_READ, not just the view
        other.buf[0] = 1
    a[3] = 42.0
    assert b[3] == 42.0
    del a, b
    other.close()
    with pytest.raises(soma_shm.SharedMemoryError, match="only the owner may unlink"):
        other.unlink()
    assert segment.name in list_segments()


def test_close_with_a_live_view_neither_fails_nor_unmaps_under_it(segment):
    view = segment.array(np.uint8, (4096,))
    view[:] = 7
    segment.close()
    assert (view == 7).all()  # still mapped: np.frombuffer holds the export
    with pytest.raises(soma_shm.SharedMemoryError, match="is closed"):
        segment.buf
    segment.close()  # twice is fine
    del view


def test_attach_errors(segment):
    with pytest.raises(soma_shm.SharedMemoryError, match="does not exist"):
        Segment.attach(run_prefix() + "nothing_here", 16)
    with pytest.raises(soma_shm.SharedMemoryError, match="holds 4096 bytes, expected at least 8192"):
        Segment.attach(segment.name, 8192)
    with pytest.raises(soma_shm.SharedMemoryError, match="size must be positive"):
        Segment.create("test", 0)


def test_a_block_larger_than_dev_shm_is_a_clear_error_not_a_sigbus():
    st = os.statvfs(shm.SHM_DIR)
    too_big = 2 * st.f_blocks * st.f_frsize + 2**30  # more than the whole tmpfs: refused up front
    before = list_segments(run_prefix())  # ours only: other runs share /dev/shm
    with pytest.raises(soma_shm.SharedMemoryError, match=r"shared memory is too small .*MiB free"):
        Segment.create("audio", too_big)
    assert list_segments(run_prefix()) == before


def test_enospc_from_fallocate_leaves_no_segment(monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shm.os, "posix_fallocate", full)
    before = list_segments(run_prefix())  # ours only: other runs share /dev/shm
    with pytest.raises(soma_shm.SharedMemoryError, match="enlarge /dev/shm"):
        AudioBlock.create(1_000, 48_000.0, 1)
    assert list_segments(run_prefix()) == before


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _make_run(pid: int, token: str, lock: bool) -> tuple[str, str]:
    """A run's segment (and its lock file when ``lock``), as an owner would leave them."""
    run = f"soma_{pid}_1700000000_{token}_"
    seg = run + "audio_000000"
    os.close(_posixshmem.shm_open("/" + seg, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600))
    if lock:
        os.close(os.open(os.path.join(shm.SHM_DIR, run + "lock"), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    return run, seg


def test_sweep_removes_only_segments_whose_owner_lock_is_free():
    import fcntl

    dead_pid = _dead_pid()
    dead_run, dead = _make_run(dead_pid, "dead00", lock=True)  # the owner died: its lock is free
    # Same dead-looking pid, but its owner holds the lock: it lives in another PID namespace.
    live_run, live = _make_run(dead_pid, "live00", lock=True)
    held = os.open(os.path.join(shm.SHM_DIR, live_run + "lock"), os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)
    bare_run, bare = _make_run(dead_pid, "bare00", lock=False)  # no lock record: not ours to judge
    try:
        removed = sweep_orphans()
        assert dead in removed and live not in removed and bare not in removed
        left = list_segments()
        assert dead not in left and dead_run + "lock" not in left
        assert live in left and live_run + "lock" in left and bare in left
    finally:
        os.close(held)
        for name in (dead, live, bare, dead_run + "lock", live_run + "lock"):
            try:
                _posixshmem.shm_unlink("/" + name)
            except FileNotFoundError:
                pass


def test_an_owner_holds_its_lock_exactly_while_it_owns_segments():
    import fcntl

    lock = run_prefix() + "lock"
    assert lock not in list_segments()
    a, b = Segment.create("test", 64), Segment.create("test", 64)
    assert lock in list_segments()
    fd = os.open(os.path.join(shm.SHM_DIR, lock), os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
    for seg in (a, b):
        seg.close()
        seg.unlink()
    assert lock not in list_segments()


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_a_sweep_from_another_pid_namespace_keeps_a_live_engines_segments(tone):
    # The sweeping process sees its own PID namespace: our pid names nothing there (or someone
    # else). Deciding by pid, it would unlink a live engine's blocks.
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("this machine does not allow new PID namespaces")
    x, fs = tone
    with soma_shm.Engine(spares=False) as eng:
        eng.open(x, sample_rate=fs)
        mine = list_segments(run_prefix())
        code = (
            "import os; from soma_shm.ipc.shm import sweep_orphans;"
            f"assert not os.path.exists('/proc/{os.getpid()}/cmdline') or "
            f"b'pytest' not in open('/proc/{os.getpid()}/cmdline', 'rb').read();"
            "print(sweep_orphans())"
        )
        out = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", code],
                             capture_output=True, text=True, timeout=120, env=dict(os.environ))
        assert out.returncode == 0, out.stderr
        assert set(mine) <= set(list_segments())
        res = eng.submit_viewport(1.0, 2.0, 100, 5_000, 64, 32).result(timeout=60)
        assert res.image.shape == (32, 64)


def test_audio_block_header_and_read_only_attach():
    block = AudioBlock.create(1_000, 44_100.0, 7)
    try:
        block.samples()[:] = np.linspace(-1, 1, 1_000, dtype=np.float32)
        desc = block.desc()
        worker = AudioBlock.attach(desc)
        x = worker.samples()
        assert (worker.frames, worker.sample_rate, worker.generation) == (1_000, 44_100.0, 7)
        assert not x.flags.writeable and x[-1] == 1.0
        del x
        worker.close()
        from dataclasses import replace

        with pytest.raises(soma_shm.SharedMemoryError, match="holds generation 7 .* expected 8"):
            AudioBlock.attach(replace(desc, generation=8))
    finally:
        block.close()
        block.unlink()


def _rss_shmem_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssShmem:"))


def _shm_used() -> int:
    st = os.statvfs("/dev/shm")
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def test_a_block_filled_as_it_decodes_takes_room_only_as_it_is_prefaulted(monkeypatch):
    # Allocating an hour's block whole before decoding starts was 0.2 s of every open: a block
    # made with populate=False takes /dev/shm room part by part as it is prefaulted; one larger
    # than the room left is still refused at once, with the remedy.
    frames = 16 << 20  # 64 MiB
    before = _shm_used()
    block = AudioBlock.create(frames, 48_000.0, 1, populate=False)
    try:
        assert _shm_used() - before < 8 << 20
        block.prefault(0, 4 << 20)  # 16 MiB
        assert 16 << 20 <= _shm_used() - before < 24 << 20
    finally:
        block.close()
        block.unlink()
    from soma_shm.ipc import shm

    segments = shm.list_segments()
    monkeypatch.setattr(shm, "_free_shm_bytes", lambda: 1 << 20)
    with pytest.raises(soma_shm.SharedMemoryError, match=r"too small for 64\.0 MiB \(audio\).*enlarge /dev/shm"):
        AudioBlock.create(frames, 48_000.0, 1, populate=False)
    assert shm.list_segments() == segments  # nothing left behind


def test_prefaulting_part_of_an_audio_block_maps_that_part_and_leaves_it_closable():
    # A file's block is mapped part by part while it decodes: each part once, only that part,
    # and nothing of it (no buffer export) keeps the block from being unmapped afterwards.
    frames = 4 << 20  # 16 MiB of float32
    block = AudioBlock.create(frames, 48_000.0, 1, populate=False)
    try:
        before = _rss_shmem_kib()
        block.prefault(1 << 20, 2 << 20)  # 4 MiB
        grown = _rss_shmem_kib() - before
        assert 4096 <= grown <= 4096 + 16, grown
        block.prefault(frames - 10, frames + 1_000)  # clipped to the block
        x = block.samples()
        x[:] = 0.5
        assert x.sum(dtype=np.float64) == 0.5 * frames
        del x
    finally:
        block.close()
        block.unlink()
    assert block.segment._mmap is None  # unmapped, not left for the views to release


def test_a_slot_ring_is_not_an_audio_block():
    ring = SlotRing.create("viewport", 1, 1024)
    try:
        from soma_shm.ipc.blocks import AudioDesc

        with pytest.raises(soma_shm.SharedMemoryError, match="is not an audio block"):
            AudioBlock.attach(AudioDesc(ring.segment.name, ring.segment.size, 10, 48_000.0, 1))
    finally:
        ring.close()
        ring.unlink()


def test_slot_generations_reject_stale_and_unfinished_results():
    main = SlotRing.create("viewport", 2, SlotRing.image_capacity(16, 8))
    worker = SlotRing.attach(main.desc())
    try:
        gen = main.lease(0, request_id=5)
        assert worker.owned(0, 5, gen)
        image, mag = worker.image_buffers(0, 8, 16)
        image[:] = 9
        assert not main.check(0, 5, gen)  # payload written, header not yet published
        del image, mag
        worker.publish(0, KIND_IMAGE, 8, 16)
        assert main.check(0, 5, gen)
        img, mag = main.image_views(0)
        assert img.shape == (8, 16) and (img == 9).all() and mag is None and not img.flags.writeable
        del img
        # The worker of request 5 was terminated: the slot gets a new generation, so nothing
        # it wrote (or still believes it owns) is accepted again.
        main.free(0, bump=True)
        assert not worker.owned(0, 5, gen) and not main.check(0, 5, gen)
        gen2 = main.lease(0, request_id=6)
        assert gen2 == gen + 2 and not worker.owned(0, 5, gen) and worker.owned(0, 6, gen2)
        with pytest.raises(soma_shm.SharedMemoryError, match="exceed the slot capacity"):
            worker.image_buffers(0, 9, 16)
    finally:
        worker.close()
        main.close()
        main.unlink()
