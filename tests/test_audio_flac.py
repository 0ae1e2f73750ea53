"""FLAC through libFLAC straight into the destination (soma_shm._flac): the same samples as
libsndfile gives, for every width and channel count, in one pass or in parallel ranges; truncated
and corrupt files give typed errors."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

import soma_shm
from soma_shm import _flac, audio
from tests.conftest import make_audio


def test_libflac_is_loaded_here():
    # libsndfile1 (installed by `make setup`) brings libFLAC with it; without it FLAC files would
    # silently take the slower path through soundfile.
    assert _flac.available()


def _both(path, monkeypatch, threads: int):
    """The file decoded by libFLAC and by soundfile, with ``threads`` ranges each."""
    info = audio.audio_info(path)
    monkeypatch.setattr(audio, "CHUNK_FRAMES", 4096)
    monkeypatch.setattr(audio, "PARALLEL_MIN_FRAMES", 1000 if threads > 1 else 1 << 40)
    monkeypatch.setattr(audio, "DECODE_THREADS", threads)
    ours = np.full(info.frames, np.nan, np.float32)
    seen = []
    audio.decode_into(path, ours, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0
    monkeypatch.setattr(_flac, "available", lambda: False)
    theirs = np.full(info.frames, np.nan, np.float32)
    audio.decode_into(path, theirs)
    return ours, theirs


@pytest.mark.parametrize("subtype, channels", [
    ("PCM_16", 1), ("PCM_16", 2), ("PCM_24", 2), ("PCM_S8", 1), ("PCM_16", 3), ("PCM_24", 6),
])
@pytest.mark.parametrize("threads", [1, 3])
def test_libflac_gives_the_samples_libsndfile_gives(tmp_path, monkeypatch, subtype, channels, threads):
    fs = 22_050
    rng = np.random.default_rng(channels)
    x = make_audio(3.0 + 11 / fs, fs, freqs=(220.0, 1250.0), amp=0.3)
    data = (x[:, None] * (1.0 - 0.1 * np.arange(channels)) + 0.1 * rng.uniform(-1, 1, (len(x), channels)))
    data[1000:1100] = 0.999  # full scale, clipped
    path = tmp_path / "x.flac"
    sf.write(path, data.astype(np.float32), fs, subtype=subtype)
    ours, theirs = _both(path, monkeypatch, threads)
    np.testing.assert_array_equal(ours, theirs)


def test_real_recordings_from_other_encoders(real_audio, tmp_path, monkeypatch):
    # sox's FLAC of the rendered chorale, and the reference encoder's (seek table, its own block
    # size, highest compression: long LPC orders), in three ranges.
    files = [real_audio.compressed["flac"]]
    if shutil.which("flac"):
        out = tmp_path / "chorale_cli.flac"
        subprocess.run(["flac", "-8", "-s", "-f", "-o", str(out), str(real_audio.chorale_wav)], check=True)
        files.append(out)
    for path in files:
        ours, theirs = _both(path, monkeypatch, 3)
        np.testing.assert_array_equal(ours, theirs)
        assert np.abs(ours).max() > 0.05  # music, not silence
        monkeypatch.undo()


@pytest.mark.parametrize("threads", [1, 2])
def test_a_flac_cut_short_is_an_error_not_a_shorter_recording(tmp_path, monkeypatch, threads):
    fs = 16_000
    path = tmp_path / "x.flac"
    sf.write(path, make_audio(4.0, fs, freqs=(440.0,), amp=0.3, noise=0.05), fs, subtype="PCM_16")
    data = path.read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) // 2])  # STREAMINFO still promises 4 s
    monkeypatch.setattr(audio, "PARALLEL_MIN_FRAMES", 1000)
    monkeypatch.setattr(audio, "DECODE_THREADS", threads)
    with pytest.raises(soma_shm.AudioFormatError, match=r"cut\.flac' is (truncated|corrupt)"):
        soma_shm.load_audio(cut)


def test_read_only_or_strided_destinations_take_the_general_path(tmp_path):
    # libFLAC writes through the destination's address: only a writable contiguous float32
    # buffer is handed to it; anything else is decoded through soundfile, same samples.
    fs = 16_000
    path = tmp_path / "x.flac"
    sf.write(path, make_audio(1.0, fs, freqs=(440.0,), amp=0.3), fs, subtype="PCM_16")
    plain, _ = soma_shm.load_audio(path)
    wide = np.zeros(2 * len(plain), np.float32)
    audio.decode_into(path, wide[::2])
    np.testing.assert_array_equal(wide[::2], plain)
    assert not wide[1::2].any()
