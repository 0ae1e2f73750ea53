"""MP3s open in the time of the recording they were made from.

Users compare an MP3 with its original recording and snap partials on both, so sample ``k`` of
the decoded MP3 must be sample ``k`` of the original: the encoder's delay and the decoder's are
removed, and so is the last frame's padding where the file says how long it is. Checked by
cross-correlating realistic recordings (the fluidsynth chorale and espeak-ng speech of
``tests/realaudio.py``) with their MP3s from the encoders users have: sox (no Xing/Info header),
LAME (an Info or Xing header with the LAME extension, with or without an ID3v2 tag first, and
with no header at all: ``lame -t``) and libsndfile's own writer.
"""

from __future__ import annotations

import mmap
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

import soma_shm
from soma_shm import _mp3, audio

# LAME's end padding is 577 .. 576 + (samples per frame) samples; the decoder's 529 samples of
# delay come out of it. So a file that does not record its padding decodes at most this many
# samples past the recording's end.
def max_tail(samples_per_frame: int) -> int:
    return samples_per_frame + _mp3.LAME_ENCODER_DELAY - _mp3.MPEG_DECODER_DELAY


def run(*cmd: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)}: {done.stderr}"


def need_lame() -> None:
    if shutil.which("lame") is None:
        pytest.skip("missing lame; `make setup` installs it")


def mono(path) -> np.ndarray:
    x, _ = sf.read(path, dtype="float32", always_2d=True)
    return x.mean(axis=1, dtype=np.float32)


def lag(reference: np.ndarray, decoded: np.ndarray) -> int:
    """Samples by which ``decoded`` lags ``reference`` (their cross-correlation's peak)."""
    n = 1 << int(np.ceil(np.log2(len(reference) + len(decoded))))
    c = np.fft.irfft(np.fft.rfft(decoded, n) * np.conj(np.fft.rfft(reference, n)), n)
    k = int(np.argmax(c))
    return k - n if k > n // 2 else k


# name: (how it is encoded, whether the file records the recording's length)
ENCODERS = {
    "sox": (lambda wav, mp3: run("sox", str(wav), "-C", "192", str(mp3)), False),
    "lame-cbr": (lambda wav, mp3: run("lame", "--quiet", "-b", "160", str(wav), str(mp3)), True),
    "lame-vbr-id3": (lambda wav, mp3: run("lame", "--quiet", "-V", "2", "--id3v2-only", "--tt", "Chorale",
                                          str(wav), str(mp3)), True),
    "lame-no-header": (lambda wav, mp3: run("lame", "--quiet", "-t", "-b", "128", "--id3v2-only", "--tt",
                                            "Chorale", str(wav), str(mp3)), False),
    "libsndfile": (lambda wav, mp3: sf.write(mp3, *sf.read(wav, dtype="float32"), format="MP3",
                                             subtype="MPEG_LAYER_III"), True),
}


@pytest.fixture(scope="module")
def sources(real_audio, tmp_path_factory):
    """WAV originals at the rates users record or export: the chorale at 48 and 44.1 kHz, the
    sentence at 22.05 kHz (MPEG-2: 576 samples per frame)."""
    folder = tmp_path_factory.mktemp("mp3")
    out = {"chorale-48k": real_audio.chorale_wav}
    out["chorale-44k1"] = folder / "chorale-44k1.wav"
    run("sox", str(real_audio.chorale_wav), "-r", "44100", str(out["chorale-44k1"]))
    out["speech-22k05"] = folder / "speech-22k05.wav"
    run("sox", str(real_audio.speech_wav), "-r", "22050", str(out["speech-22k05"]))
    return out


def encode(wav, encoder: str, folder) -> tuple:
    make, knows_length = ENCODERS[encoder]
    if encoder.startswith("lame"):
        need_lame()
    mp3 = folder / f"{wav.stem}-{encoder}.mp3"
    if not mp3.exists():
        make(wav, mp3)
    return mp3, knows_length


@pytest.mark.parametrize("encoder", list(ENCODERS))
@pytest.mark.parametrize("source", ["chorale-48k", "chorale-44k1", "speech-22k05"])
def test_an_mp3_lines_up_with_the_recording_it_was_made_from(sources, tmp_path_factory, source, encoder):
    wav = sources[source]
    mp3, knows_length = encode(wav, encoder, tmp_path_factory.getbasetemp())
    x = mono(wav)
    y, rate = soma_shm.load_audio(mp3)
    info = soma_shm.audio_info(mp3)
    assert rate == sf.info(str(wav)).samplerate and info.frames == len(y)
    assert abs(lag(x, y)) <= 1, f"decoded {lag(x, y)} samples late"
    # Lined up, the decoded MP3 is the recording within the codec's error, sample by sample.
    n = min(len(x), len(y))
    err = np.sqrt(np.mean((y[:n] - x[:n]) ** 2) / np.mean(x[:n] ** 2))
    assert err < 0.1, f"relative error {err:.3f}"
    spf = 1152 if rate > 24_000 else 576
    if knows_length:
        assert len(y) == len(x)
    else:  # no header: the last frame's padding stays (silence after the recording's end)
        assert 0 <= len(y) - len(x) <= max_tail(spf)
        assert np.abs(y[len(x):]).max(initial=0.0) < 0.05 * np.abs(x).max()


@pytest.mark.parametrize("encoder", ["sox", "libsndfile"])
def test_long_mp3s_decoded_in_parallel_ranges_equal_one_pass(sources, tmp_path_factory, monkeypatch, encoder):
    # Every decoder seeks to its range's start past the skipped delay: the ranges meet without a
    # seam and together hold the frames audio_info reports, lined up with the recording.
    wav = sources["chorale-44k1"]
    mp3, _ = encode(wav, encoder, tmp_path_factory.getbasetemp())
    one, _ = audio.load_audio(mp3)
    monkeypatch.setattr(audio, "CHUNK_FRAMES", 16_384)
    monkeypatch.setattr(audio, "PARALLEL_MIN_FRAMES", 1_000)
    monkeypatch.setattr(audio, "DECODE_THREADS", 3)
    ranges = []
    out = np.full(audio.audio_info(mp3).frames + 3, 9.0, dtype=np.float32)
    info = audio.decode_into(mp3, out, on_range=lambda part, start, stop: ranges.append((part, start, stop)))
    parts = out[: info.frames]
    assert info.frames == len(one) and (out[info.frames :] == 9.0).all()
    edges = [len(one) * k // 3 for k in range(4)]
    assert sorted({(p, s) for p, s, _ in ranges}) == [(k, edges[k]) for k in range(3)]
    assert [max(stop for p, _, stop in ranges if p == k) for k in range(3)] == edges[1:]
    # libsndfile's MP3 decoder does not give a read after a seek bit for bit the samples of one
    # pass: float rounding, and in the near-silent dither at the chorale's end one 16-bit step
    # (3.1e-5) where one pass decodes 0.0 or the reverse (as before any trimming; the file's
    # Xing/Info header is used by libsndfile itself). A seam, a sample lost or repeated, would
    # differ by the music's own level (0.017 for a one-sample shift of a 400 Hz tone at 0.3).
    np.testing.assert_allclose(parts, one, rtol=0, atol=1e-4)
    assert abs(lag(mono(wav), parts)) <= 1


def test_a_decoder_that_ignores_the_lame_extension_is_trimmed_here(sources, tmp_path_factory):
    # libsndfile 1.2 removes what the LAME extension says; a build whose decoder does not (it
    # reports the whole frames) gets the same samples from the extension's delay and padding.
    wav = sources["chorale-48k"]
    mp3, _ = encode(wav, "libsndfile", tmp_path_factory.getbasetemp())
    with open(mp3, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        stream = _mp3._mpeg_stream(mm)
    assert stream.delay == _mp3.LAME_ENCODER_DELAY and stream.info_frames is not None
    whole = stream.info_frames * stream.samples_per_frame
    n = len(mono(wav))
    assert _mp3.mpeg_layout(mp3, n) == (0, n)  # what libsndfile does here
    assert _mp3.mpeg_layout(mp3, whole) == (_mp3.LAME_ENCODER_DELAY + _mp3.MPEG_DECODER_DELAY, n)


def test_an_info_header_without_the_lame_extension(sources, tmp_path_factory):
    # Some encoders write a Xing/Info frame count but no delay: libsndfile then removes only the
    # decoder's delay, and LAME's is found from the name LAME leaves in the frames.
    need_lame()
    wav = sources["chorale-44k1"]
    mp3, _ = encode(wav, "lame-cbr", tmp_path_factory.getbasetemp())
    data = bytearray(mp3.read_bytes())
    at = data.index(b"LAME3.")  # the extension's encoder name, in the Info frame
    data[at : at + 9] = bytes(9)
    bare = tmp_path_factory.mktemp("bare") / "bare.mp3"
    bare.write_bytes(bytes(data))
    x = mono(wav)
    y, _ = soma_shm.load_audio(bare)
    assert abs(lag(x, y)) <= 1
    assert 0 <= len(y) - len(x) <= max_tail(1152)


def test_a_headerless_variable_bitrate_mp3_is_refused_rather_than_cut(sources, tmp_path_factory):
    # libsndfile stops reading such a file at its length estimate (here under half the file):
    # an error naming the remedy, not a recording that silently ends early.
    need_lame()
    wav = sources["chorale-44k1"]
    mp3 = tmp_path_factory.mktemp("vbr") / "vbr.mp3"
    run("lame", "--quiet", "-t", "-V", "2", str(wav), str(mp3))
    with pytest.raises(soma_shm.AudioFormatError,
                       match=r"vbr.mp3' is an MP3 without a Xing/Info header whose bitrate varies.*sox in.mp3 out.flac"):
        soma_shm.audio_info(mp3)
