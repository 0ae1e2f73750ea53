"""Sine resynthesis: the kernel against the float64 PCHIP reference, windows and edits that
reproduce the same samples, fades, time stretch with pitch kept, a snapped sine heard back at
its level, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from soma_shm import ParameterError, snap_trace
from soma_shm.synth import Resynthesis, pack_partials, render_packed, render_partials
from tests.conftest import make_audio
from tests.reference import synth_reference

FS = 48_000


def vibrato(t0=0.3, seconds=2.0, f0=440.0, depth_oct=0.3, rate=3.0, step=0.01):
    t = t0 + np.arange(0.0, seconds, step)
    f = f0 * 2 ** (depth_oct * np.sin(2 * np.pi * rate * (t - t0)))
    a = 0.3 + 0.1 * np.sin(5 * (t - t0))
    return np.stack([t, f, a], axis=1)


def random_partials(n, seconds, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        t0 = rng.uniform(0, seconds - 0.6)
        k = int(rng.integers(2, 60))
        t = t0 + np.cumsum(rng.uniform(0.004, 0.02, k)) - 0.004
        f = rng.uniform(60, 9000) * 2 ** np.cumsum(rng.normal(0, 0.01, k))
        a = rng.uniform(0.0, 0.05, k)
        out.append(np.stack([t, f, a], axis=1))
    return out


@pytest.mark.parametrize("stretch", [1.0, 2.5, 0.125])
def test_matches_float64_reference(stretch):
    pts = vibrato()
    frames = int(2.4 * FS * stretch)
    y = render_partials([pts], FS, frames, stretch=stretch)
    ref = synth_reference(pts, FS, frames, stretch=stretch)
    assert y.dtype == np.float32 and y.shape == (frames,)
    # A +-0.3 octave, 3 Hz vibrato is an extreme glide; 1e-4 of 0.4 is -72 dB.
    assert np.abs(y - ref).max() < 1e-4 * 0.4


def test_two_points_and_one_point():
    line = np.array([[0.1, 1000.0, 0.5], [0.6, 1000.0, 0.5]])
    y = render_partials([line], FS, FS)
    np.testing.assert_allclose(y, synth_reference(line, FS, FS), atol=2e-6)
    # A single point has no duration: silent, and nothing breaks.
    assert not render_partials([[(0.2, 500.0, 1.0)]], FS, FS).any()


def test_windows_reproduce_the_whole_render_bit_for_bit():
    parts = random_partials(40, 3.0, seed=1)
    packed = pack_partials(parts, FS)
    whole = render_packed(packed, FS, np.zeros(3 * FS, np.float32))
    rng = np.random.default_rng(2)
    cuts = np.sort(rng.choice(np.arange(1, 3 * FS), 25, replace=False))
    pieces = []
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, 3 * FS]):
        pieces.append(render_packed(packed, FS, np.zeros(hi - lo, np.float32), int(lo)))
    assert np.array_equal(np.concatenate(pieces), whole)


def test_sum_is_the_sum_of_single_partials():
    parts = random_partials(30, 2.0, seed=3)
    mix = render_partials(parts, FS, 2 * FS)
    acc = np.zeros(2 * FS)
    for p in parts:
        acc += synth_reference(p, FS, 2 * FS)
    assert np.abs(mix - acc).max() < 1e-5


def test_fades_start_and_end_at_silence():
    pts = np.array([[0.5, 1000.0, 1.0], [1.5, 1000.0, 1.0]])
    y = render_partials([pts], FS, 2 * FS)
    n0, n1 = int(np.ceil(0.5 * FS)), int(1.5 * FS)
    assert not y[:n0].any() and not y[n1 + 1:].any()
    env_in = np.abs(y[n0:n0 + 240])
    assert env_in[:10].max() < 0.01 and np.abs(y[n0 + 240:n0 + 480]).max() > 0.99
    # 5 ms fade, not longer: full level 6 ms after the start and until 6 ms before the end
    mid = y[n0 + 288:n1 - 288]
    peaks = np.abs(mid).reshape(-1, 48).max(axis=1)[:-1]
    assert peaks.min() > 0.999
    # A 4 ms partial fades over half its length each way and stays bounded by its amplitude.
    short = render_partials([[(0.1, 2000.0, 1.0), (0.104, 2000.0, 1.0)]], FS, FS)
    assert 0.3 < np.abs(short).max() <= 1.0


@pytest.mark.parametrize("stretch", [0.125, 0.5, 2.0, 8.0])
def test_stretch_keeps_pitch_and_scales_time(stretch):
    pts = np.array([[0.2, 1000.0, 0.5], [0.7, 1000.0, 0.5]])
    frames = int(FS * 1.0 * stretch) + 10
    y = render_partials([pts], FS, frames, stretch=stretch)
    nz = np.flatnonzero(y)
    assert abs(nz[0] - 0.2 * FS * stretch) <= 1 and abs(nz[-1] - 0.7 * FS * stretch) <= 1
    seg = y[nz[0] + 500:nz[-1] - 500].astype(np.float64)
    spec = np.abs(np.fft.rfft(seg * np.hanning(seg.size), 1 << 20))
    peak = np.argmax(spec) * FS / (1 << 20)
    assert abs(peak - 1000.0) < 1.0


def test_snapped_sine_is_heard_back_at_its_level():
    x = make_audio(3.0, FS, freqs=(523.25,), amp=0.25)
    partial = snap_trace(x, FS, [(0.5, 530.0), (2.5, 515.0)])
    y = render_partials([partial], FS, x.size).astype(np.float64)
    lo, hi = int((partial[0, 0] + 0.05) * FS), int((partial[-1, 0] - 0.05) * FS)
    rms = lambda v: np.sqrt(np.mean(np.square(v.astype(np.float64))))
    level_db = 20 * np.log10(rms(y[lo:hi]) / rms(x[lo:hi]))
    assert abs(level_db) < 0.5
    # and it is the same tone: the residual is far below the tone (phase aside, per block of 10 ms)
    spec_x = np.abs(np.fft.rfft(x[lo:hi] * np.hanning(hi - lo)))
    spec_y = np.abs(np.fft.rfft(y[lo:hi] * np.hanning(hi - lo)))
    assert np.argmax(spec_x) == np.argmax(spec_y)


def test_resynthesis_edits_match_a_full_render():
    parts = random_partials(60, 3.0, seed=4)
    doc = {f"p{i}": (p, False) for i, p in enumerate(parts)}
    rs = Resynthesis(FS, 3 * FS)
    rs.rebuild(doc)
    np.testing.assert_allclose(rs.mix, render_partials(parts, FS, 3 * FS), atol=1e-6)
    # change one, mute one, delete one, add one
    doc2 = dict(doc)
    doc2["p3"] = (parts[3] * np.array([1.0, 1.5, 1.0]), False)
    doc2["p7"] = (parts[7], True)
    del doc2["p9"]
    doc2["new"] = (vibrato(), False)
    changed = rs.update(doc2)
    assert changed["removed"] == 3 and changed["added"] == 2
    audible = [p for p, muted in doc2.values() if not muted]
    expect = render_partials(audible, FS, 3 * FS)
    assert np.abs(rs.mix - expect).max() < 1e-6
    assert sorted(rs.sounding) == sorted(k for k, (_, m) in doc2.items() if not m)
    # undo everything: back to the first mix; removing all leaves silence
    rs.update(doc)
    assert np.abs(rs.mix - render_partials(parts, FS, 3 * FS)).max() < 1e-6
    rs.update({})
    assert np.abs(rs.mix).max() < 1e-6


def test_resynthesis_subtracts_exactly_what_it_added():
    rs = Resynthesis(FS, 2 * FS)
    pts = vibrato(t0=0.1, seconds=1.5)
    rs.update({"a": (pts, False)})
    rs.update({})
    # the same samples come off again: only float32 rounding of x + y - y can remain (none here)
    assert not rs.mix.any()


def test_resynthesis_bad_partial_leaves_the_mix_as_it_was():
    rs = Resynthesis(FS, FS)
    rs.update({"a": (vibrato(t0=0.1, seconds=0.5), False)})
    before = rs.mix.copy()
    with pytest.raises(ParameterError, match="partial b: point 1"):
        rs.update({"a": (vibrato(t0=0.1, seconds=0.5), False), "b": ([(0.1, 100, 1), (0.05, 100, 1)], False)})
    assert np.array_equal(rs.mix, before) and rs.sounding == ["a"]


@pytest.mark.parametrize("partial, match", [
    ([(0.2, 440, 1), (0.1, 440, 1)], r"partial #0: point 1 \(time 0.1 s\) is not after"),
    ([(0.1, 440, -1), (0.2, 440, 1)], r"point 0 has amplitude -1.0"),
    ([(0.1, 30000, 1), (0.2, 440, 1)], r"at or above Nyquist \(24000.0 Hz\)"),
    ([(0.1, 0, 1), (0.2, 440, 1)], r"frequency 0.0 Hz; frequencies must be positive"),
    ([(0.1, np.nan, 1)], r"point 0 is not finite"),
    ([(-0.1, 440, 1), (0.2, 440, 1)], r"time -0.1 s; times must be >= 0"),
    ([(0.1, 440)], r"expected \(K >= 1, 3\)"),
])
def test_bad_partials_raise(partial, match):
    with pytest.raises(ParameterError, match=match):
        render_partials([partial], FS, FS)


def test_bad_render_parameters_raise():
    p = [[(0.1, 440, 1), (0.2, 440, 1)]]
    with pytest.raises(ParameterError, match=r"stretch=9 must be from 0.125 to 8.0"):
        render_partials(p, FS, FS, stretch=9)
    with pytest.raises(ParameterError, match=r"sample_rate=4000 must be"):
        render_partials(p, 4000, FS)
    with pytest.raises(ParameterError, match=r"out must be a writeable"):
        render_partials(p, FS, out=np.zeros(10, np.int16))
    with pytest.raises(ParameterError, match=r"frames=-1 must be"):
        render_partials(p, FS, -1)
    out = np.zeros(FS, np.float64)
    assert render_partials(p, FS, out=out) is out and out.any()


def test_resynthesis_windows_at_any_speed():
    parts = random_partials(20, 2.0, seed=5)
    rs = Resynthesis(FS, 2 * FS)
    rs.update({str(i): (p, False) for i, p in enumerate(parts)})
    np.testing.assert_array_equal(rs.window(1000, 5000), rs.mix[1000:6000])
    for stretch in (0.5, 4.0):
        whole = render_partials(parts, FS, int(2 * FS * stretch), stretch=stretch)
        got = rs.window(12_345, 20_000, stretch)
        np.testing.assert_array_equal(got, whole[12_345:32_345])
    # past the end: zeros, not an error
    assert not rs.window(2 * FS + 10, 100).any()
    with pytest.raises(ParameterError, match="stretch=0.1 must be"):
        rs.window(0, 10, 0.1)
