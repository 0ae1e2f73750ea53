"""Decoding files to mono float32: chunked into a caller's buffer, progress, typed errors."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import soundfile as sf

import soma_shm
from soma_shm import audio
from tests.conftest import make_audio


@pytest.fixture
def stereo_wav(tmp_path):
    fs = 44_100
    x = make_audio(2.0, fs, freqs=(440.0,), amp=0.4)
    y = make_audio(2.0, fs, freqs=(1_000.0,), amp=0.2)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([x, y], axis=1), fs, subtype="FLOAT")
    return path, x, y, fs


def test_load_audio_mixes_stereo_to_mono(stereo_wav):
    path, x, y, fs = stereo_wav
    samples, rate = soma_shm.load_audio(path)
    assert rate == fs and samples.dtype == np.float32 and samples.shape == x.shape
    np.testing.assert_allclose(samples, 0.5 * (x + y), atol=1e-7)


def test_audio_info_reads_the_header(stereo_wav):
    path, x, _, fs = stereo_wav
    info = soma_shm.audio_info(path)
    assert (info.frames, info.sample_rate, info.channels, info.format) == (len(x), fs, 2, "WAV")
    assert info.duration == pytest.approx(2.0)


@pytest.mark.parametrize("fmt,subtype,atol", [("WAV", "PCM_16", 1 / 2**15), ("FLAC", "PCM_24", 1 / 2**23)])
def test_integer_formats_decode_to_float(tmp_path, fmt, subtype, atol):
    fs = 48_000
    x = make_audio(1.0, fs, freqs=(300.0, 3_000.0), amp=0.3)
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, x, fs, format=fmt, subtype=subtype)
    samples, rate = soma_shm.load_audio(path)
    assert rate == fs
    np.testing.assert_allclose(samples, x, atol=atol)


def test_chunked_decode_into_a_buffer_with_progress(monkeypatch, stereo_wav):
    path, x, y, _ = stereo_wav
    monkeypatch.setattr(audio, "CHUNK_FRAMES", 10_000)  # 9 chunks for 88 200 frames
    out = np.full(len(x) + 5, 7.0, dtype=np.float32)  # a larger buffer keeps its tail
    seen = []
    info = audio.decode_into(path, out, progress=seen.append)
    np.testing.assert_allclose(out[: len(x)], 0.5 * (x + y), atol=1e-7)
    assert (out[len(x):] == 7.0).all()
    assert info.frames == len(x)
    assert len(seen) == 9 and seen == sorted(seen) and seen[-1] == 1.0


@pytest.mark.parametrize("threads", [1, 3])
def test_prefault_maps_chunks_ahead_of_the_decoders_and_stops_with_them(tmp_path, monkeypatch, threads):
    # decode_into maps the destination's memory chunk by chunk from a thread of its own; the
    # samples are those of a decode without it, and no chunk is asked for after it returns (the
    # caller then owns, and may unmap, the block).
    fs = 8_000
    x = make_audio(6.0, fs, freqs=(300.0,), amp=0.3)
    path = tmp_path / "x.flac"
    sf.write(path, np.stack([x, 0.5 * x], axis=1), fs, subtype="PCM_16")
    monkeypatch.setattr(audio, "CHUNK_FRAMES", 4_096)
    monkeypatch.setattr(audio, "PARALLEL_MIN_FRAMES", 1_000)
    monkeypatch.setattr(audio, "DECODE_THREADS", threads)
    plain = np.empty(len(x), np.float32)
    audio.decode_into(path, plain)
    calls, returned = [], []

    def prefault(start, stop):
        calls.append((start, stop, bool(returned)))

    out = np.empty(len(x), np.float32)
    audio.decode_into(path, out, prefault=prefault)
    returned.append(True)
    np.testing.assert_array_equal(out, plain)
    assert calls and not any(late for _, _, late in calls)
    edges = [len(x) * k // threads for k in range(threads + 1)]
    for start, stop, _ in calls:
        part = max(k for k in range(threads) if edges[k] <= start)
        # a chunk of one decoder's range, never across the end of it
        assert (start - edges[part]) % 4_096 == 0 and start < stop <= min(start + 4_096, edges[part + 1])
    assert len({c[:2] for c in calls}) == len(calls)  # each chunk at most once


@pytest.mark.parametrize("suffix", ["flac", "wav"])
def test_decoders_write_only_what_has_been_prefaulted(tmp_path, monkeypatch, suffix):
    # A shared block's pages are allocated as they are prefaulted (a write to a page /dev/shm
    # has no room for would be a SIGBUS): however slow the mapping, no decoder writes into a
    # chunk before it is prefaulted, and an error while prefaulting stops the decoding.
    fs = 8_000
    x = make_audio(6.0, fs, freqs=(300.0,), amp=0.3)
    path = tmp_path / f"x.{suffix}"
    sf.write(path, np.stack([x, 0.5 * x], axis=1), fs, subtype="PCM_16")
    monkeypatch.setattr(audio, "CHUNK_FRAMES", 2_048)
    monkeypatch.setattr(audio, "PARALLEL_MIN_FRAMES", 1_000)
    monkeypatch.setattr(audio, "DECODE_THREADS", 2)
    out = np.full(len(x), np.nan, np.float32)
    touched = []

    def slow_prefault(start, stop):
        time.sleep(0.002)
        touched.append(bool(np.isfinite(out[start:stop]).any()))

    audio.decode_into(path, out, prefault=slow_prefault)
    assert touched and not any(touched) and np.isfinite(out).all()

    # A decoder that catches up with the mapping thread maps its next chunk itself rather than
    # wait (memory slow to hand out is then mapped by every core), each chunk still once.
    mappers, chunks = set(), []

    def slower_prefault(start, stop):
        mappers.add(threading.current_thread().name)
        chunks.append(start)
        time.sleep(0.01)

    audio.decode_into(path, np.empty(len(x), np.float32), prefault=slower_prefault)
    assert "soma-decode-map" in mappers and len(mappers) >= 2, mappers
    assert len(chunks) == len(set(chunks))

    def failing_prefault(start, stop):
        if start >= 8_192:
            raise soma_shm.SharedMemoryError("shared memory is too small (test)")

    with pytest.raises(soma_shm.SharedMemoryError, match="too small"):
        audio.decode_into(path, np.empty(len(x), np.float32), prefault=failing_prefault)


def test_decode_buffer_must_fit(stereo_wav):
    path, x, _, _ = stereo_wav
    with pytest.raises(soma_shm.ParameterError, match="at least 88200 frames"):
        audio.decode_into(path, np.empty(len(x) - 1, dtype=np.float32))
    with pytest.raises(soma_shm.ParameterError, match="float32"):
        audio.decode_into(path, np.empty(len(x), dtype=np.float64))


def test_unknown_format_is_a_typed_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("this is not audio\n" * 10)
    with pytest.raises(soma_shm.AudioFormatError, match="cannot read .*notes.txt.* supported: WAV, FLAC"):
        soma_shm.load_audio(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(soma_shm.AudioFormatError, match="does not exist"):
        soma_shm.audio_info(tmp_path / "missing.wav")
    with pytest.raises(soma_shm.AudioFormatError, match="is a folder"):
        soma_shm.load_audio(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 48_000)
    with pytest.raises(soma_shm.AudioFormatError, match=r"holds no samples \(0 frames\)"):
        soma_shm.load_audio(path)


def test_corrupt_compressed_data(tmp_path):
    fs = 48_000
    path = tmp_path / "x.flac"
    sf.write(path, make_audio(1.0, fs, freqs=(440.0,), amp=0.3, noise=0.05), fs)
    data = bytearray(path.read_bytes())
    for i in range(2_000, len(data) - 10, 7):  # leave the header intact, scramble the frames
        data[i] ^= 0xFF
    bad = tmp_path / "bad.flac"
    bad.write_bytes(bytes(data))
    with pytest.raises(soma_shm.AudioFormatError, match="bad.flac' is corrupt at frame"):
        soma_shm.load_audio(bad)


def test_non_finite_samples_name_the_first_bad_frame(tmp_path, monkeypatch):
    fs = 48_000
    x = make_audio(1.0, fs, freqs=(440.0,), amp=0.3)
    x[30_000] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, fs, subtype="FLOAT")
    monkeypatch.setattr(audio, "CHUNK_FRAMES", 8_192)  # the bad frame sits in a later chunk
    with pytest.raises(soma_shm.AudioFormatError, match="NaN or Inf samples \\(first at frame 30000\\)"):
        soma_shm.load_audio(path)


@pytest.mark.parametrize("fs", [4_000, 768_000])
def test_unsupported_sample_rates(tmp_path, fs):
    path = tmp_path / "rate.wav"
    sf.write(path, np.zeros(100, dtype=np.float32), fs)
    with pytest.raises(soma_shm.AudioFormatError, match=f"sample_rate={float(fs)!r} Hz is not supported"):
        soma_shm.audio_info(path)


@pytest.mark.parametrize("fmt, subtype", [("WAV", "FLOAT"), ("WAV", "PCM_16"), ("RF64", "PCM_24")])
def test_a_wav_cut_short_is_an_error_naming_both_lengths(tmp_path, fmt, subtype):
    # libsndfile reads what the file holds: a copy cut short would open as a shorter recording
    # without a word. The header's promise is checked instead.
    fs = 48_000
    x = make_audio(1.0, fs, freqs=(440.0,), amp=0.3)
    path = tmp_path / "x.wav"
    sf.write(path, x, fs, format=fmt, subtype=subtype)
    data = path.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    held = sf.info(str(cut)).frames
    assert 0 < held < fs
    with pytest.raises(soma_shm.AudioFormatError,
                       match=f"cut.wav' is truncated: its header promises {fs} frames \\(1.000 s\\) but the file holds only {held}"):
        soma_shm.load_audio(cut)
    np.testing.assert_allclose(soma_shm.load_audio(path)[0], x, atol=2**-15)  # the whole file opens


def test_a_streamed_wav_without_a_length_opens(tmp_path):
    # A WAV written as a stream has no data size in its header (0xFFFFFFFF): nothing to check.
    fs = 16_000
    x = make_audio(0.5, fs, freqs=(440.0,), amp=0.3)
    path = tmp_path / "stream.wav"
    sf.write(path, x, fs, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    at = data.index(b"data") + 4
    data[at : at + 4] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))
    y, rate = soma_shm.load_audio(path)
    assert rate == fs and len(y) == len(x)


def test_non_regular_files_are_refused(tmp_path):
    fifo = tmp_path / "pipe.flac"
    os.mkfifo(fifo)
    with pytest.raises(soma_shm.AudioFormatError, match="pipe.flac' is not a regular file"):
        soma_shm.audio_info(fifo)
    with pytest.raises(soma_shm.AudioFormatError, match="is not a regular file"):
        soma_shm.load_audio("/dev/null")


_LOSSLESS = [
    ("WAV", "PCM_U8", 8_000, 1, 1 / 2**7),
    ("WAV", "PCM_16", 44_100, 2, 1 / 2**15),
    ("WAV", "PCM_24", 96_000, 3, 1 / 2**23),
    ("WAV", "PCM_32", 192_000, 1, 1 / 2**31),
    ("WAV", "FLOAT", 384_000, 2, 0.0),
    ("W64", "DOUBLE", 48_000, 2, 1e-7),
    ("RF64", "PCM_16", 22_050, 1, 1 / 2**15),
    ("FLAC", "PCM_16", 8_000, 2, 1 / 2**15),
    ("FLAC", "PCM_24", 384_000, 1, 1 / 2**23),
    ("AIFF", "PCM_24", 48_000, 2, 1 / 2**23),
]


@pytest.mark.parametrize("fmt, subtype, fs, channels, atol", _LOSSLESS)
def test_lossless_formats_rates_and_channels_decode_exactly(tmp_path, fmt, subtype, fs, channels, atol):
    rng = np.random.default_rng(fs + channels)
    data = (0.9 * rng.uniform(-1, 1, (fs // 2, channels))).astype(np.float32)
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, data, fs, format=fmt, subtype=subtype)
    info = audio.audio_info(path)
    assert (info.frames, info.sample_rate, info.channels, info.subtype) == (fs // 2, fs, channels, subtype)
    seen = []
    x, rate = audio.load_audio(path, progress=seen.append)
    assert rate == fs and x.dtype == np.float32 and x.shape == (fs // 2,) and seen[-1] == 1.0
    # Each channel is within its format's step of what was written; the mix is their mean.
    np.testing.assert_allclose(x, data.mean(axis=1), rtol=0, atol=atol + 1e-7)


@pytest.mark.parametrize("fmt, subtype, fs", [
    ("OGG", "VORBIS", 8_000), ("OGG", "VORBIS", 96_000), ("OGG", "OPUS", 48_000), ("OGG", "OPUS", 16_000),
    ("MP3", "MPEG_LAYER_III", 44_100), ("MP3", "MPEG_LAYER_III", 8_000),
])
def test_lossy_formats_keep_the_tone(tmp_path, fmt, subtype, fs):
    f0 = fs / 16
    x = make_audio(1.0, fs, freqs=(f0,), amp=0.5)
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, np.stack([x, x], axis=1), fs, format=fmt, subtype=subtype)
    y, rate = audio.load_audio(path)
    assert rate == fs and abs(len(y) - len(x)) <= fs // 20
    img = soma_shm.stft_image(y, fs, 0.3, 0.7, f0 / 2, f0 * 2, 4, 61)
    row = int(np.argmax(img.max(axis=1)))
    assert row == 30 and 20 * np.log10(img.max() / 0.5) == pytest.approx(0.0, abs=1.0)


@pytest.mark.parametrize("fmt, subtype, channels", [
    ("WAV", "PCM_16", 1), ("FLAC", "PCM_24", 2), ("W64", "FLOAT", 3), ("FLAC", "PCM_16", 2), ("WAV", "PCM_16", 4),
    ("OGG", "VORBIS", 2), ("OGG", "OPUS", 2), ("MP3", "MPEG_LAYER_III", 2),
])
def test_long_files_decoded_by_threads_equal_one_pass(tmp_path, monkeypatch, fmt, subtype, channels):
    # Each thread seeks its own decoder to its range: lossless and lossy formats alike give the
    # samples of one sequential pass, bit for bit, across every seam.
    fs = 8_000
    rng = np.random.default_rng(channels)
    tone = make_audio(5.0 + 7 / fs, fs, freqs=(300.0, 1250.0), amp=0.3)
    data = (tone[:, None] * (1.0 + 0.2 * np.arange(channels)) + 0.2 * rng.uniform(-1, 1, (len(tone), channels)))
    data = data.astype(np.float32)
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, data, fs, format=fmt, subtype=subtype)
    one, _ = audio.load_audio(path)
    monkeypatch.setattr(audio, "CHUNK_FRAMES", 4096)  # many chunks per part
    monkeypatch.setattr(audio, "PARALLEL_MIN_FRAMES", 1000)
    monkeypatch.setattr(audio, "DECODE_THREADS", 3)
    seen = []
    parts, _ = audio.load_audio(path, progress=seen.append)
    assert seen[-1] == 1.0 and seen == sorted(seen) and len(seen) >= 3
    if subtype == "MPEG_LAYER_III":
        # libsndfile's MP3 decoder rounds the last bit of a float sample differently depending on
        # where a read starts (reading one pass in other chunk sizes does the same): equal to
        # float rounding, no seam beyond it.
        np.testing.assert_allclose(parts, one, rtol=0, atol=2.5e-7)
        return
    if subtype != "OPUS":
        np.testing.assert_array_equal(parts, one)
        return
    # Opus: libopusfile decodes the pre-roll after a seek, but its decoder state is not the one a
    # sequential pass has there; the two agree to float rounding (< 1e-6, -120 dB), and only in
    # the first quarter second after a seam (about 0.13 s here).
    diff = np.flatnonzero(parts != one)
    np.testing.assert_allclose(parts, one, rtol=0, atol=1e-6)
    seams = np.array([len(one) * k // 3 for k in (1, 2)])
    after = diff[:, None] - seams[None, :]
    assert ((after >= 0) & (after < fs // 4)).any(axis=1).all()

