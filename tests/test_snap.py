"""Snapping traces onto CWT ridges: known trajectories, neighbours, noise, bad traces."""

from __future__ import annotations

import numpy as np
import pytest

import soma_shm

FS = 48_000


def _tone(freq_fn, amp_fn, seconds=3.0, fs=FS):
    t = np.arange(int(seconds * fs)) / fs
    phase = 2 * np.pi * np.cumsum(freq_fn(t)) / fs
    return t, amp_fn(t) * np.sin(phase)


def _noisy(x, snr_db, seed=0):
    rng = np.random.default_rng(seed)
    rms = np.sqrt(np.mean(x**2))
    return (x + rms * 10 ** (-snr_db / 20) * rng.standard_normal(len(x))).astype(np.float32)


def _cents(a, b):
    return 1200 * np.log2(np.asarray(a) / np.asarray(b))


def _rough_stroke(t0, t1, f_fn, n=20, wobble_cents=60, seed=1):
    rng = np.random.default_rng(seed)
    tt = np.linspace(t0, t1, n)
    return np.column_stack([tt, f_fn(tt) * 2 ** (rng.uniform(-wobble_cents, wobble_cents, n) / 1200)])


def test_pure_tone_frequency_and_amplitude():
    _, x = _tone(lambda t: np.full_like(t, 1234.5), lambda t: 0.25)
    p = soma_shm.snap_trace(x.astype(np.float32), FS, [(0.5, 1200.0), (2.0, 1300.0)])
    assert p.shape == (151, 3) and p.dtype == np.float64
    np.testing.assert_allclose(p[:, 0], 0.5 + 0.01 * np.arange(151), atol=1e-9)
    assert np.abs(_cents(p[:, 1], 1234.5)).max() < 0.5
    np.testing.assert_allclose(p[:, 2], 0.25, rtol=0.01)


def test_vibrato_at_20_db_snr():
    f = lambda t: 440 * 2 ** (20 / 1200 * np.sin(2 * np.pi * 5 * t))  # noqa: E731
    _, x = _tone(f, lambda t: 0.3)
    p = soma_shm.snap_trace(_noisy(x, 20), FS, _rough_stroke(0.5, 2.5, f))
    err = np.abs(_cents(p[:, 1], f(p[:, 0])))
    assert np.median(err) <= 1.0 and np.percentile(err, 95) <= 5.0
    assert np.median(np.abs(20 * np.log10(p[:, 2] / 0.3))) <= 0.5


def test_glide_one_octave_per_second():
    f = lambda t: 300 * 2 ** t  # noqa: E731
    _, x = _tone(f, lambda t: 0.2)
    p = soma_shm.snap_trace(x.astype(np.float32), FS, _rough_stroke(0.3, 2.7, f, n=12))
    err = np.abs(_cents(p[:, 1], f(p[:, 0])))
    assert np.median(err) <= 2.0 and err.max() <= 10.0


@pytest.mark.parametrize("louder_db", [0.0, 6.0])
def test_neighbour_a_minor_third_away_is_not_taken(louder_db):
    fa, fb = 500.0, 500.0 * 2 ** (3 / 12)
    t = np.arange(3 * FS) / FS
    x = 0.1 * np.sin(2 * np.pi * fa * t) + 0.1 * 10 ** (louder_db / 20) * np.sin(2 * np.pi * fb * t)
    # A stroke drawn 40 cents above A (towards B): it must stay on A, and the other way round.
    # (The other partial, 300 cents away, leaks into the ridge as a small beat: a few cents.)
    p = soma_shm.snap_trace(x.astype(np.float32), FS, [(0.5, fa * 2 ** (40 / 1200)), (2.5, fa * 2 ** (40 / 1200))])
    err = np.abs(_cents(p[:, 1], fa))
    assert err.max() < 10.0 and np.median(err) < 2.0
    np.testing.assert_allclose(np.median(p[:, 2]), 0.1, rtol=0.03)
    p = soma_shm.snap_trace(x.astype(np.float32), FS, [(0.5, fb / 2 ** (40 / 1200)), (2.5, fb / 2 ** (40 / 1200))])
    err = np.abs(_cents(p[:, 1], fb))
    assert err.max() < 10.0 and np.median(err) < 2.0


def test_decaying_amplitude():
    _, x = _tone(lambda t: np.full_like(t, 660.0), lambda t: 0.5 * np.exp(-1.5 * t))
    p = soma_shm.snap_trace(x.astype(np.float32), FS, [(0.3, 650.0), (2.5, 670.0)])
    want = 0.5 * np.exp(-1.5 * p[:, 0])
    assert np.abs(20 * np.log10(p[:, 2] / want)).max() < 0.2
    assert np.abs(_cents(p[:, 1], 660.0)).max() < 1.0


@pytest.mark.parametrize("snr_db, med_cents, p95_cents", [(20, 1.0, 5.0), (10, 3.0, 15.0)])
def test_white_noise_robustness(snr_db, med_cents, p95_cents):
    f = lambda t: 880 * 2 ** (30 / 1200 * np.sin(2 * np.pi * 3 * t))  # noqa: E731
    _, x = _tone(f, lambda t: 0.2)
    p = soma_shm.snap_trace(_noisy(x, snr_db, seed=snr_db), FS, _rough_stroke(0.4, 2.6, f, seed=snr_db))
    err = np.abs(_cents(p[:, 1], f(p[:, 0])))
    assert np.median(err) <= med_cents and np.percentile(err, 95) <= p95_cents


def test_low_and_high_sample_rates():
    for fs, f0 in ((8_000, 150.0), (192_000, 30_000.0)):
        t = np.arange(2 * fs) / fs
        x = (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)
        p = soma_shm.snap_trace(x, fs, [(0.5, f0 * 1.02), (1.5, f0 * 0.98)])
        assert np.abs(_cents(p[:, 1], f0)).max() < 1.0
        np.testing.assert_allclose(p[:, 2], 0.3, rtol=0.01)


@pytest.mark.parametrize(
    "trace, match",
    [
        ([], "trace has shape"),
        ([(0.5, 440.0)], "trace has 1 point"),
        ([(0.5, 440.0), (float("nan"), 440.0)], "trace point 1 is not finite"),
        ([(0.5, 440.0), (0.4, 440.0), (0.9, 440.0)], "trace times are not sorted: point 1"),
        ([(0.5, 440.0), (5.0, 440.0)], r"lie outside the file \[0, 1.000000\] s"),
        ([(0.2, 440.0), (0.5, 30_000.0)], "at or above Nyquist"),
        ([(0.2, 440.0), (0.5, -3.0)], "frequencies must be positive"),
        ([(0.2, 440.0), (0.2, 460.0)], "spans no time"),
        ([(0.2, 440.0, 1.0), (0.5, 440.0, 1.0)], r"expected \(n, 2\)"),
    ],
)
def test_bad_traces_raise_typed_errors(trace, match):
    x = np.zeros(FS, dtype=np.float32)
    with pytest.raises(soma_shm.ParameterError, match=match):
        soma_shm.snap_trace(x, FS, trace)
