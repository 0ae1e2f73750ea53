"""The built-in demo recording: a short, seeded piece with the features the tool is for.

Notes with eight harmonics and vibrato, a glide of an octave per second, a two-note chord a minor
third apart, decaying plucks, a few clicks and a little noise. Deterministic, so demos, tests and
benchmarks see the same audio everywhere.
"""

from __future__ import annotations

import numpy as np

__all__ = ["demo_recording"]


def demo_recording(seconds: float = 12.0, sample_rate: int = 48_000, seed: int = 7) -> np.ndarray:
    """Mono float32 demo audio, peak about 0.8."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    x = np.zeros(n)

    def env(t0: float, t1: float, attack: float = 0.02, release: float = 0.1) -> np.ndarray:
        e = np.clip((t - t0) / attack, 0, 1) * np.clip((t1 - t) / release, 0, 1)
        return e

    def harmonic(f_inst_phase: np.ndarray, amp: float, e: np.ndarray, n_h: int = 8) -> np.ndarray:
        out = np.zeros(n)
        for h in range(1, n_h + 1):
            out += (amp / h) * np.sin(h * f_inst_phase)
        return out * e

    seg = seconds / 4
    # 1. A sung note with 5 Hz vibrato (+-20 cents).
    f0 = 220.0
    vib = 2 ** (20 / 1200 * np.sin(2 * np.pi * 5.0 * t))
    x += harmonic(2 * np.pi * np.cumsum(f0 * vib) / sample_rate, 0.35, env(0.2, seg))
    # 2. A glide of an octave per second.
    f = 300.0 * 2 ** np.clip(t - seg, 0, None)
    x += harmonic(2 * np.pi * np.cumsum(f) / sample_rate, 0.3, env(seg, 2 * seg - 0.1), n_h=5)
    # 3. A chord a minor third apart.
    for fc in (440.0, 440.0 * 2 ** (3 / 12)):
        x += harmonic(2 * np.pi * fc * t, 0.18, env(2 * seg, 3 * seg - 0.1), n_h=6)
    # 4. Decaying plucks and clicks.
    for k, fp in enumerate((196.0, 261.6, 329.6, 392.0)):
        start = 3 * seg + k * seg / 4
        e = np.where(t >= start, np.exp(-(t - start) * 6.0), 0.0)
        x += harmonic(2 * np.pi * fp * t, 0.4, e, n_h=10)
    for tc in rng.uniform(0.5, seconds - 0.5, size=6):
        x[int(tc * sample_rate)] += 0.6
    x += 0.002 * rng.standard_normal(n)
    return (0.8 * x / np.max(np.abs(x))).astype(np.float32)
