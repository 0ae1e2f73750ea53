"""Pooled STFT image kernel: reference, calibration, transients, geometry, buffers."""

from __future__ import annotations

import numpy as np
import pytest

import soma_shm

from .reference import db_error, stft_reference


def _signal(fs: int, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(fs * seconds)
    t = np.arange(n) / fs
    x = 0.03 * rng.standard_normal(n)
    for _ in range(3):
        x += rng.uniform(0.05, 0.5) * np.sin(2 * np.pi * rng.uniform(50, 0.45 * fs) * t)
    x[rng.integers(0, n)] += 1.0
    return x.astype(np.float32)


@pytest.mark.parametrize(
    "fs, t0, t1, fmin, fmax, width, height",
    [
        (8_000, 0.0, 1.0, 30.0, 4_000.0, 50, 60),
        (22_050, 0.1, 0.9, 50.0, 11_000.0, 300, 40),  # columns narrower than the hop
        (48_000, 0.2, 0.8, 20.0, 20_000.0, 40, 200),  # rows narrower than a bin at the bottom
        (192_000, 0.3, 0.5, 100.0, 96_000.0, 60, 80),
    ],
)
def test_matches_float64_reference(fs, t0, t1, fmin, fmax, width, height):
    x = _signal(fs, 1.0, seed=fs)
    fast = soma_shm.stft_image(x, fs, t0, t1, fmin, fmax, width, height)
    ref = stft_reference(x, fs, t0, t1, fmin, fmax, width, height)
    assert fast.shape == (height, width) and fast.dtype == np.float32
    assert db_error(fast, ref, -80.0, 1.0) <= 0.01


@pytest.mark.parametrize("f0", [440.0, 1000.0, 1011.7, 5000.3, 15_123.0])
def test_sine_peaks_at_its_amplitude(f0):
    # Also between two FFT bins (Hann scalloping would cost up to 1.4 dB without refinement).
    fs, amp = 48_000, 0.3
    x = (amp * np.sin(2 * np.pi * f0 * np.arange(fs) / fs)).astype(np.float32)
    img = soma_shm.stft_image(x, fs, 0.25, 0.75, f0 / 1.01, f0 * 1.01, 40, 3)
    np.testing.assert_allclose(img[1], amp, rtol=2e-3)


def test_cwt_and_stft_share_one_scale():
    fs, amp, f0 = 44_100, 0.5, 2_000.0
    x = (amp * np.sin(2 * np.pi * f0 * np.arange(fs) / fs)).astype(np.float32)
    args = (fs, 0.3, 0.7, f0 / 1.5, f0 * 1.5, 20, 3)
    np.testing.assert_allclose(soma_shm.stft_image(x, *args)[1], soma_shm.cwt_image(x, *args)[1], rtol=3e-3)


def test_transient_between_frames_is_kept():
    # A click half-way between two frame centres, in an image with far fewer columns than frames.
    fs = 48_000
    hop = soma_shm.AnalysisSettings().stft_hop(fs)
    x = np.zeros(10 * fs, dtype=np.float32)
    x[5 * fs + hop // 2] = 1.0
    img = soma_shm.stft_image(x, fs, 0.0, 10.0, 100.0, 20_000.0, 64, 32)
    col = int((5 * fs + hop // 2) / fs / 10.0 * 64)
    assert img[:, col].min() > 0.3 * img.max()
    assert img.max() > 0.0 and np.count_nonzero(img.max(axis=0) > 1e-6) <= 2


def test_out_buffer_and_bad_input():
    fs = 8_000
    x = _signal(fs, 1.0, seed=1)
    out = np.zeros((10, 20), np.float32)
    assert soma_shm.stft_image(x, fs, 0.1, 0.9, 50, 3_000, 20, 10, out=out) is out
    with pytest.raises(soma_shm.ParameterError, match=r"fmax=4500.0 Hz is above Nyquist"):
        soma_shm.stft_image(x, fs, 0.1, 0.9, 50, 4_500, 20, 10)
    with pytest.raises(soma_shm.ParameterError, match="t0=0.9 must be before t1=0.1"):
        soma_shm.stft_image(x, fs, 0.9, 0.1, 50, 3_000, 20, 10)


def test_kernels_release_the_gil():
    # The overview runs in the UI process: another Python thread must keep running meanwhile.
    # Held GIL: the ticker stalls for the whole call. Released: only for switch intervals.
    import threading
    import time

    fs = 48_000
    x = np.random.default_rng(0).standard_normal(300 * fs).astype(np.float32)
    soma_shm.stft_image(x[:fs], fs, 0, 1, 20, 20_000, 16, 8)  # load the kernel first
    gaps = []
    done = threading.Event()

    def ticker():
        last = time.perf_counter()
        while not done.is_set():
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
            time.sleep(0.0005)

    th = threading.Thread(target=ticker)
    th.start()
    try:
        time.sleep(0.02)
        t = time.perf_counter()
        soma_shm.stft_image(x, fs, 0, 300, 20, 20_000, 2048, 256, check_finite=False)
        call = time.perf_counter() - t
    finally:
        done.set()
        th.join()
    assert call > 0.05  # long enough for the comparison to mean something
    assert max(gaps) < call / 3
