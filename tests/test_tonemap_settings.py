"""Tone mapping, settings validation and the cheap import."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import soma_shm


def _tone_map_formula(mag, ref, s):
    with np.errstate(divide="ignore"):
        db = 20 * np.log10(np.asarray(mag, np.float64) / ref)
    v = np.clip((db - s.min_db) / (s.max_db - s.min_db), 0, 1)
    return np.round(255 * v**s.gamma).astype(np.uint8)


@pytest.mark.parametrize("gamma", [1.0, 0.5, 2.2])
def test_tone_map_equals_its_formula(gamma):
    s = soma_shm.AnalysisSettings(min_db=-70, max_db=-5, gamma=gamma)
    rng = np.random.default_rng(0)
    mag = (10 ** rng.uniform(-5, 1, size=(64, 100))).astype(np.float32)
    got = soma_shm.tone_map(mag, 0.8, s)
    want = _tone_map_formula(mag, 0.8, s)
    # Exact except where a value sits on a rounding boundary (float32 vs float64 log).
    assert np.mean(got == want) > 0.999 and np.abs(got.astype(int) - want).max() <= 1


def test_tone_map_edges_and_buffers():
    s = soma_shm.AnalysisSettings()
    mag = np.array([[0.0, 1e-9, 1.0, 10.0, np.nan]], dtype=np.float32)
    out = np.empty(mag.shape, np.uint8)
    res = soma_shm.tone_map(mag, 1.0, s, out=out)
    assert res is out
    assert out.tolist() == [[0, 0, 255, 255, 0]]
    with pytest.raises(soma_shm.ParameterError, match="amp_reference=0 must be positive"):
        soma_shm.tone_map(mag, 0, s)
    with pytest.raises(soma_shm.ParameterError, match="uint8 array of shape"):
        soma_shm.tone_map(mag, 1.0, s, out=np.empty((2, 2), np.uint8))
    with pytest.raises(soma_shm.ParameterError, match="floating point"):
        soma_shm.tone_map(np.ones((2, 2), np.int32), 1.0)


def test_settings_defaults_and_validation():
    s = soma_shm.AnalysisSettings()
    assert (s.wavelet_bandwidth, s.wavelet_center, s.bins_per_octave) == (8.0, 1.5, 96)
    assert (s.time_resolution_ms, s.min_db, s.max_db, s.gamma) == (10.0, -80.0, 0.0, 1.0)
    assert s.wavelet == "cmor8-1.5"
    assert s.stft_nfft(48_000) == 2048 and s.stft_nfft(8_000) == 256 and s.stft_nfft(192_000) == 8192
    assert s.stft_hop(48_000) == 1024
    assert soma_shm.AnalysisSettings.from_wavelet("cmor2.5-1.0").wavelet_bandwidth == 2.5
    assert soma_shm.AnalysisSettings.from_dict(s.to_dict()) == s
    assert hash(soma_shm.AnalysisSettings(wavelet_bandwidth=8)) == hash(s)
    with pytest.raises(soma_shm.ParameterError, match="min_db=0.0 must be below max_db=-10.0"):
        soma_shm.AnalysisSettings(min_db=0, max_db=-10)
    with pytest.raises(soma_shm.ParameterError, match="stft_hop_fraction=0.75 is outside"):
        soma_shm.AnalysisSettings(stft_hop_fraction=0.75)
    with pytest.raises(soma_shm.ParameterError, match="wavelet='morl' is not a complex Morlet"):
        soma_shm.AnalysisSettings.from_wavelet("morl")
    with pytest.raises(soma_shm.ParameterError, match=r"unknown settings \['colour'\]"):
        soma_shm.AnalysisSettings.from_dict({"colour": 1})
    with pytest.raises(soma_shm.ParameterError, match="bins_per_octave=0 must be an integer"):
        soma_shm.AnalysisSettings(bins_per_octave=0)


def test_import_is_cheap_and_compiles_nothing():
    code = (
        "import sys, soma_shm; "
        "assert 'numba' not in sys.modules, 'numba imported'; "
        "assert 'soma_shm.kernels.cwt' not in sys.modules; "
        "print(sorted(soma_shm.__all__)[:3])"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("gamma, min_db, max_db", [(1.0, -80.0, 0.0), (0.3, -120.0, 6.0), (2.5, -60.0, -10.0)])
def test_float32_images_map_exactly_as_the_formula_says(gamma, min_db, max_db):
    # float32 images take a bucket table instead of a search per pixel: same levels, bit for bit.
    rng = np.random.default_rng(7)
    s = soma_shm.AnalysisSettings(gamma=gamma, min_db=min_db, max_db=max_db)
    mag = np.abs(rng.standard_normal((300, 500))) * 10 ** rng.uniform(-8, 0.5, (300, 500))
    mag = mag.astype(np.float32)
    mag[0, :6] = [np.nan, np.inf, -1.0, 0.0, -np.inf, 1e-45]
    fast = soma_shm.tone_map(mag, 0.3, s)
    ref = 0.3
    with np.errstate(divide="ignore", invalid="ignore"):
        v = (20 * np.log10(mag.astype(np.float64) / ref) - min_db) / (max_db - min_db)
    want = np.round(255 * np.clip(np.nan_to_num(v, nan=0.0, neginf=0.0), 0, 1) ** gamma)
    # The formula in float64 may round the other way within 1e-9 of a level boundary.
    assert np.mean(fast == want) > 0.9999 and np.abs(fast.astype(int) - want).max() <= 1
    np.testing.assert_array_equal(fast, soma_shm.tone_map(mag.astype(np.float64), 0.3, s))
    assert list(fast[0, :6]) == [0, 255, 0, 0, 0, 0]
