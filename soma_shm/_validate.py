"""Validation of public inputs: one place, so the library, the engine and the app agree.

Each check raises a typed error (see :mod:`soma_shm.errors`) naming the bad value and the remedy.
Kernels never validate; wrappers call these first.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import AudioFormatError, ParameterError
from .settings import AnalysisSettings

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 384_000
MAX_IMAGE_SIDE = 16_384


def settings_or_default(settings: AnalysisSettings | None) -> AnalysisSettings:
    if settings is None:
        return AnalysisSettings()
    if not isinstance(settings, AnalysisSettings):
        raise ParameterError(
            f"settings must be an AnalysisSettings (or None for the defaults), got {type(settings).__name__}"
        )
    return settings


def sample_rate(value: Any) -> float:
    """A supported sample rate as float (8 kHz .. 384 kHz)."""
    try:
        fs = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"sample_rate={value!r} is not a number; give the rate in Hz") from None
    if not math.isfinite(fs) or not MIN_SAMPLE_RATE <= fs <= MAX_SAMPLE_RATE:
        raise AudioFormatError(
            f"sample_rate={value!r} Hz is not supported; rates from {MIN_SAMPLE_RATE} to "
            f"{MAX_SAMPLE_RATE} Hz are (resample the audio first)"
        )
    return fs


def audio_array(audio: Any, check_finite: bool = True) -> np.ndarray:
    """A read-only, C-contiguous 1-D float32 view (or copy, if needed) of ``audio``; multichannel
    is mixed to mono.

    Accepts ``(n,)`` or ``(n, channels)`` arrays of any real dtype. Every kernel receives audio in
    this one form (numba compiles one machine-code version per array type: writable, read-only
    and strided audio would each cost a compile of every kernel), and a strided view is copied
    once here instead.
    """
    a = np.asarray(audio)
    if a.dtype.kind not in "fiu":
        raise AudioFormatError(f"audio dtype {a.dtype} is not a real number type; pass float or int samples")
    if a.ndim == 2:
        if a.shape[1] > a.shape[0]:
            raise AudioFormatError(
                f"audio has shape {a.shape}: expected (frames, channels); transpose it (audio.T)"
            )
        a = a.mean(axis=1, dtype=np.float64).astype(np.float32)
    elif a.ndim != 1:
        raise AudioFormatError(f"audio has {a.ndim} dimensions; pass (frames,) or (frames, channels)")
    if a.size == 0:
        raise AudioFormatError("audio is empty (0 frames); nothing to analyse")
    if a.dtype != np.float32:
        if a.dtype.kind in "iu":
            scale = float(2 ** (8 * a.dtype.itemsize - 1))
            a = (a.astype(np.float64) / scale).astype(np.float32)
        else:
            a = a.astype(np.float32)
    if check_finite and not np.isfinite(a).all():
        bad = int(np.flatnonzero(~np.isfinite(a))[0])
        raise AudioFormatError(
            f"audio holds NaN or Inf samples (first at frame {bad}); clean or replace them before analysis"
        )
    return read_only(a)


def read_only(a: np.ndarray) -> np.ndarray:
    """``a`` as a read-only, C-contiguous view (copied only when ``a`` is strided)."""
    a = np.ascontiguousarray(a)
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ParameterError(f"{name}={value!r} must be a number")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name}={value!r} must be a number") from None
    if not math.isfinite(v):
        raise ParameterError(f"{name}={value!r} must be finite")
    return v


def _size(name: str, value: Any, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ParameterError(f"{name}={value!r} must be an integer number of pixels")
    v = int(value)
    if v < 1:
        raise ParameterError(f"{name}={v} must be at least 1 pixel")
    if v > limit:
        raise ParameterError(f"{name}={v} exceeds the limit of {limit} pixels; request a smaller image")
    return v


def view(
    t0: Any,
    t1: Any,
    fmin: Any,
    fmax: Any,
    width: Any,
    height: Any,
    sample_rate: float,
    duration: float,
    max_width: int = MAX_IMAGE_SIDE,
    max_height: int = MAX_IMAGE_SIDE,
) -> tuple[float, float, float, float, int, int]:
    """Validate an image request against the file; returns the normalised values."""
    t0 = _number("t0", t0)
    t1 = _number("t1", t1)
    fmin = _number("fmin", fmin)
    fmax = _number("fmax", fmax)
    width = _size("width", width, max_width)
    height = _size("height", height, max_height)
    if not t0 < t1:
        raise ParameterError(f"t0={t0} must be before t1={t1}; give a non-empty time range")
    tol = 0.5 / sample_rate
    if t0 < -tol or t1 > duration + tol:
        raise ParameterError(
            f"time range [{t0}, {t1}] s lies outside the file [0, {duration:.6f}] s; clamp it to the file"
        )
    if not 0 < fmin < fmax:
        raise ParameterError(f"fmin={fmin} must be positive and below fmax={fmax}")
    nyquist = sample_rate / 2
    if fmax > nyquist * (1 + 1e-12):
        raise ParameterError(
            f"fmax={fmax} Hz is above Nyquist ({nyquist:g} Hz) for sample_rate={sample_rate:g}; lower it"
        )
    return max(t0, 0.0), min(t1, duration), fmin, fmax, width, height


def trace(points: Any, sample_rate: float, duration: float) -> np.ndarray:
    """Validate a hand-drawn trace: ``(n, 2)`` of (time s, frequency Hz), n >= 2, sorted in time."""
    try:
        p = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError("trace must be a sequence of (time, frequency) pairs") from None
    if p.ndim != 2 or p.shape[1] != 2:
        raise ParameterError(f"trace has shape {p.shape}; expected (n, 2) rows of (time s, frequency Hz)")
    if p.shape[0] < 2:
        raise ParameterError(
            f"trace has {p.shape[0]} point(s); draw at least 2 points (a stroke, not a click)"
        )
    if not np.isfinite(p).all():
        bad = int(np.flatnonzero(~np.isfinite(p).all(axis=1))[0])
        raise ParameterError(f"trace point {bad} is not finite ({p[bad].tolist()}); remove it")
    dt = np.diff(p[:, 0])
    if (dt < 0).any():
        bad = int(np.flatnonzero(dt < 0)[0]) + 1
        raise ParameterError(
            f"trace times are not sorted: point {bad} at t={p[bad, 0]} s comes after t={p[bad - 1, 0]} s; "
            "sort the points by time"
        )
    if p[-1, 0] <= p[0, 0]:
        raise ParameterError(
            f"trace spans no time (t={p[0, 0]} s .. {p[-1, 0]} s); draw along the time axis"
        )
    tol = 0.5 / sample_rate
    if p[0, 0] < -tol or p[-1, 0] > duration + tol:
        raise ParameterError(
            f"trace times [{p[0, 0]}, {p[-1, 0]}] s lie outside the file [0, {duration:.6f}] s"
        )
    nyquist = sample_rate / 2
    if (p[:, 1] <= 0).any():
        bad = int(np.flatnonzero(p[:, 1] <= 0)[0])
        raise ParameterError(f"trace point {bad} has frequency {p[bad, 1]} Hz; frequencies must be positive")
    if (p[:, 1] >= nyquist).any():
        bad = int(np.flatnonzero(p[:, 1] >= nyquist)[0])
        raise ParameterError(
            f"trace point {bad} has frequency {p[bad, 1]} Hz, at or above Nyquist ({nyquist:g} Hz)"
        )
    return p


def output(out: Any, height: int, width: int, dtype: type, name: str = "out") -> np.ndarray:
    if out is None:
        return np.empty((height, width), dtype=dtype)
    if not isinstance(out, np.ndarray):
        raise ParameterError(f"{name} must be a numpy array, got {type(out).__name__}")
    if out.shape != (height, width) or out.dtype != np.dtype(dtype):
        raise ParameterError(
            f"{name} has shape {out.shape} and dtype {out.dtype}; expected ({height}, {width}) {np.dtype(dtype)}"
        )
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ParameterError(f"{name} must be a writeable C-contiguous array")
    return out


def finite_part(audio: np.ndarray, start: int, stop: int) -> None:
    """Reject NaN/Inf in the part of the file a request reads (``start:stop``, clipped)."""
    part = audio[max(start, 0) : min(stop, audio.shape[0])]
    if part.size and not np.isfinite(part).all():
        bad = int(np.flatnonzero(~np.isfinite(part))[0]) + max(start, 0)
        raise AudioFormatError(
            f"audio holds NaN or Inf samples (first at frame {bad}); clean or replace them before analysis"
        )
