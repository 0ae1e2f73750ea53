"""Snapping: a hand-drawn trace becomes a partial on the CWT ridge.

A user draws a rough stroke over a spectrogram; :func:`snap_trace` returns the partial that the
stroke meant: points ``(time s, frequency Hz, amplitude)`` that follow the true ridge, one every
``settings.time_resolution_ms``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _validate
from .plans import cwt_plan
from .settings import AnalysisSettings

__all__ = ["snap_trace", "SNAP_PRIOR_DB", "SNAP_JUMP_DB"]

SNAP_PRIOR_DB = 2.0
"""Penalty (dB per semitone squared) for a ridge away from the drawn stroke: a partial three
semitones from the stroke must be 18 dB louder to be preferred over one under it."""

SNAP_JUMP_DB = 0.1
"""Penalty (dB per grid row squared) for the ridge moving between consecutive points: a vibrato or
a glide moves about one row (12.5 cents) per 10 ms and pays almost nothing; a jump to a partial a
minor third away (24 rows) would cost 58 dB."""

SNAP_CLIMB_ROWS = 4
"""After the path is chosen, each point moves to the local maximum within this many rows."""


def snap_trace(
    audio: Any,
    sample_rate: float,
    trace: Any,
    settings: AnalysisSettings | None = None,
    *,
    check_finite: bool = True,
) -> np.ndarray:
    """Snap a drawn trace onto the CWT ridge it follows.

    Parameters
    ----------
    audio : array_like
        The whole recording (mono or ``(frames, channels)``).
    sample_rate : float
        Samples per second (8 kHz .. 384 kHz).
    trace : array_like
        ``(n, 2)`` points ``(time s, frequency Hz)`` as drawn, ``n >= 2``, sorted by time.
    settings : AnalysisSettings, optional
        Wavelet, ``time_resolution_ms`` (point spacing, default 10 ms), ``freq_window_octaves``
        (search range around the stroke, default +-0.5 octave) and ``bins_per_octave`` (the fine
        log grid, default 96).
    check_finite : bool
        Reject NaN/Inf samples in the part of the file the trace reads.

    Returns
    -------
    ndarray
        ``(K, 3)`` float64 rows ``(time, frequency, amplitude)``: times every
        ``time_resolution_ms`` from the trace's first to its last point; frequencies refined
        between grid rows; amplitude calibrated (a sine of amplitude A reports A).

    Raises
    ------
    ParameterError
        A trace with fewer than 2 points, non-finite or unsorted points, times outside the file,
        frequencies at or above Nyquist.

    Notes
    -----
    1. The stroke is resampled every ``time_resolution_ms``, its frequency interpolated on a log
       axis. Each point may take any row of a global log grid (``bins_per_octave``) within
       ``freq_window_octaves`` of the stroke.
    2. CWT magnitudes (never STFT) are computed for those rows only and only over the trace's
       time span (one FFT of the span, then each row's band at a decimated rate) and evaluated at
       the points: cost ``O(rows x span x bandwidth)``, milliseconds for a typical stroke.
    3. The ridge is the path through the grid that maximises the summed dB magnitude minus a
       penalty for leaving the stroke (:data:`SNAP_PRIOR_DB`) and for moving between points
       (:data:`SNAP_JUMP_DB`), by dynamic programming: a continuous ridge wins over isolated louder
       peaks, and the path never leaps to a neighbouring partial.
    4. Each point climbs to its local maximum (at most :data:`SNAP_CLIMB_ROWS` rows) and is refined
       by a parabola through the log-magnitudes of three grid rows.

    Examples
    --------
    >>> import numpy as np, soma_shm
    >>> fs = 48000
    >>> x = (0.5 * np.sin(2 * np.pi * 440 * np.arange(fs) / fs)).astype(np.float32)
    >>> p = soma_shm.snap_trace(x, fs, [(0.2, 450.0), (0.8, 430.0)])
    >>> p.shape, round(float(np.median(p[:, 1])), 1), round(float(np.median(p[:, 2])), 3)
    ((61, 3), 440.0, 0.5)
    """
    from .kernel_cache import kernels as _kernels

    kernels = _kernels("snap")

    fs = _validate.sample_rate(sample_rate)
    a = _validate.audio_array(audio, check_finite=False)
    settings = _validate.settings_or_default(settings)
    duration = a.shape[0] / fs
    pts = _validate.trace(trace, fs, duration)
    from .render import check_snap_cost, physical_memory

    check_snap_cost(pts, fs, settings, physical_memory(), option=None)

    dt = settings.time_resolution_ms / 1000.0
    t_first, t_last = float(pts[0, 0]), float(pts[-1, 0])
    K = int(math.floor((t_last - t_first) / dt + 1e-9)) + 1
    times = t_first + dt * np.arange(K)
    # Stroke frequency at the points, interpolated on a log axis (a stroke may be drawn with
    # several points at one time: np.interp keeps the last).
    log2_f = np.interp(times, pts[:, 0], np.log2(pts[:, 1]))

    bpo = settings.bins_per_octave
    half = int(round(settings.freq_window_octaves * bpo))
    centre = np.round(log2_f * bpo).astype(np.int64)
    # Grid rows must stay below the Nyquist roll-off and above 1 Hz.
    g_top = int(math.floor(bpo * math.log2(0.49 * fs)))
    g_lo = np.clip(centre - half, 0, g_top)
    g_hi = np.clip(centre + half, 0, g_top)
    gmin, gmax = int(g_lo.min()), int(g_hi.max())
    R = gmax - gmin + 1
    if R < 3:
        raise _validate.ParameterError(
            f"trace frequencies around {2 ** log2_f.mean():.1f} Hz leave fewer than 3 grid rows below "
            f"Nyquist ({fs / 2:g} Hz); draw the trace lower"
        )
    fmax, fmin = 2.0 ** (gmax / bpo), 2.0 ** (gmin / bpo)

    s0 = int(math.floor(t_first * fs))
    n_window = int(math.ceil(t_last * fs)) - s0 + 1
    plan = cwt_plan(fs, n_window, fmin, fmax, R, 1, settings)
    if check_finite:
        reach = int(plan.seg_pad.max())
        _validate.finite_part(a, s0 - reach, s0 + n_window + reach)

    positions = times * fs - s0
    mags = np.empty((K, R), dtype=np.float64)
    kernels.grid_magnitudes(a, s0, *plan.kernel_args(), positions, mags)

    # Row r of the grid is g = gmax - r; point k may use rows for g in [g_lo[k], g_hi[k]].
    g_rows = gmax - np.arange(R)
    semitones = (g_rows[None, :] / bpo - log2_f[:, None]) * 12.0
    with np.errstate(divide="ignore"):
        score = 20.0 * np.log10(np.maximum(mags, 1e-30)) - SNAP_PRIOR_DB * semitones**2
    lo = (gmax - g_hi).astype(np.int64)
    hi = (gmax - g_lo).astype(np.int64)
    path = np.empty(K, dtype=np.int64)
    kernels.ridge_path(score, lo, hi, SNAP_JUMP_DB, 2 * half + 1, path)
    rows = np.empty(K, dtype=np.float64)
    log_amp = np.empty(K, dtype=np.float64)
    kernels.refine_peaks(mags, path, lo, hi, SNAP_CLIMB_ROWS, rows, log_amp)

    freqs = 2.0 ** ((gmax - rows) / bpo)
    return np.column_stack([times, freqs, np.exp(log_amp)])
