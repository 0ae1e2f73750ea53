"""Public image API: validate, plan, call the kernels, return (or fill) the caller's buffer.

These functions work on any 1-D float32 audio array, including a read-only view of a shared
audio block; they never copy the whole recording.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import numpy as np

from . import _validate
from .plans import column_bounds, cwt_plan, stft_plan
from .settings import AnalysisSettings

__all__ = ["cwt_image", "stft_image", "tone_map", "reference_level", "image_geometry"]


def _kernels():
    """Import the numba kernels on first use (keeps ``import soma_shm`` cheap), compiling them
    first if none is cached (:func:`soma_shm.kernel_cache.ensure_kernels`)."""
    from .kernel_cache import ensure_kernels

    ensure_kernels()
    from .kernels import cwt, stft, tonemap

    return cwt, stft, tonemap


def _prepare(audio, sample_rate, t0, t1, fmin, fmax, width, height, settings):
    fs = _validate.sample_rate(sample_rate)
    a = _validate.audio_array(audio, check_finite=False)
    duration = a.shape[0] / fs
    t0, t1, fmin, fmax, width, height = _validate.view(t0, t1, fmin, fmax, width, height, fs, duration)
    return a, fs, t0, t1, fmin, fmax, width, height, _validate.settings_or_default(settings)


def image_geometry(t0: float, t1: float, fmin: float, fmax: float, width: int, height: int, sample_rate: float):
    """Row frequencies and column sample bounds of an image (see :mod:`soma_shm.plans`)."""
    from .plans import row_frequencies

    a, b = column_bounds(t0, t1, width, sample_rate)
    return row_frequencies(fmin, fmax, height), a, b


def _interleave(cost_order: np.ndarray, threads: int) -> np.ndarray:
    """Reorder rows (sorted by decreasing cost) so each contiguous 1/threads share costs the same."""
    if threads <= 1:
        return cost_order
    return np.concatenate([cost_order[t::threads] for t in range(threads)])


def cwt_image(
    audio: Any,
    sample_rate: float,
    t0: float,
    t1: float,
    fmin: float,
    fmax: float,
    width: int,
    height: int,
    settings: AnalysisSettings | None = None,
    out: np.ndarray | None = None,
    *,
    check_finite: bool = True,
) -> np.ndarray:
    """Calibrated complex-Morlet CWT magnitude image, max-pooled per column.

    Parameters
    ----------
    audio : array_like
        The whole recording, ``(frames,)`` or ``(frames, channels)`` (mixed to mono). Float32 1-D
        input (e.g. a view of a shared audio block) is used without a copy.
    sample_rate : float
        Samples per second, 8 kHz .. 384 kHz.
    t0, t1 : float
        Time range in seconds, ``0 <= t0 < t1 <= duration``.
    fmin, fmax : float
        Frequency range in Hz, ``0 < fmin < fmax <= sample_rate / 2``.
    width, height : int
        Image size; row 0 is ``fmax``, rows are log-spaced down to ``fmin``.
    settings : AnalysisSettings, optional
        Wavelet ``cmorB-C`` (defaults B = 8, C = 1.5).
    out : ndarray, optional
        ``(height, width)`` float32 C-contiguous buffer to fill (for example a shared slot); it is
        returned.
    check_finite : bool
        Reject NaN/Inf samples in the part of the file the request reads (default). Callers that
        validated the file once (the engine does, at open) may skip the scan.

    Returns
    -------
    ndarray
        ``(height, width)`` float32 magnitude: a sine of amplitude A at a row's frequency shows A
        on that row. Pixel = max of ``|W|`` over every sample in the column's time span.

    Raises
    ------
    ParameterError, AudioFormatError
        Bad geometry, sample rate, audio or ``out`` buffer; the message names the value. Also a
        request whose working memory (:func:`request_cost`) exceeds this machine's memory.

    Notes
    -----
    One real FFT per padding segment, then per row only the FFT bins where the wavelet's
    Gaussian response exceeds -114 dB are inverse-transformed at a decimated rate. Cost is
    ``O(sum of row bandwidths x window length)``, not ``O(rows x samples)``. Plans are cached per
    geometry. Samples beyond the window are real neighbouring audio where the file has it (padded
    by the wavelet support), zeros beyond the file.

    Examples
    --------
    >>> import numpy as np, soma_shm
    >>> fs = 48000
    >>> x = np.sin(2 * np.pi * 1000 * np.arange(fs) / fs).astype(np.float32)
    >>> img = soma_shm.cwt_image(x, fs, 0.25, 0.75, 500, 2000, 100, 3)
    >>> round(float(img[1].mean()), 2)  # the 1 kHz row of a unit sine
    1.0
    """
    audio, fs, t0, t1, fmin, fmax, width, height, settings = _prepare(
        audio, sample_rate, t0, t1, fmin, fmax, width, height, settings
    )
    check_cost("cwt", fs, t0, t1, fmin, settings, physical_memory(), option=None)
    out = _validate.output(out, height, width, np.float32)
    cwt, _, _ = _kernels()
    col_a, col_b = column_bounds(t0, t1, width, fs)
    s0 = int(col_a[0])
    n_window = int(round((t1 - t0) * fs)) + 1
    plan = cwt_plan(fs, n_window, fmin, fmax, height, width, settings)
    if check_finite:
        reach = int(plan.seg_pad.max())
        _validate.finite_part(audio, s0 - reach, int(col_b[-1]) + reach + 1)
    # Rows by decreasing inverse-FFT length (their cost), interleaved over the threads so that
    # the static split of the kernel's prange gives every thread the same work.
    import numba

    order = np.argsort(-plan.row_nifft, kind="stable")
    cwt.cwt_pooled_image(
        audio,
        s0,
        *plan.kernel_args(),
        _interleave(order, numba.get_num_threads()).astype(np.int64),
        col_a - s0,
        col_b - s0,
        out,
    )
    return out


def stft_image(
    audio: Any,
    sample_rate: float,
    t0: float,
    t1: float,
    fmin: float,
    fmax: float,
    width: int,
    height: int,
    settings: AnalysisSettings | None = None,
    out: np.ndarray | None = None,
    *,
    check_finite: bool = True,
) -> np.ndarray:
    """Calibrated STFT magnitude image pooled over every frame, same geometry as :func:`cwt_image`.

    Parameters are those of :func:`cwt_image`.

    Returns
    -------
    ndarray
        ``(height, width)`` float32 magnitude on the CWT's scale: a sine of amplitude A peaks at A
        (Hann window, magnitudes scaled by ``2/sum(window)``, the peak bin refined between bins).

    Notes
    -----
    Hann frames of ``settings.stft_nfft(fs)`` samples (about 43 ms), hop at most half of that, are
    centred on multiples of the hop; a column pools every frame whose centre lies in its span (the
    frame nearest the column centre if none does), so a transient between two sparse frames
    cannot vanish. Row ``r`` takes the maximum of the bins between the geometric midpoints to its
    neighbours and interpolates between bins where its band holds none. Cost
    ``O(frames x nfft log nfft)``; memory ``O(threads x frames-per-column x nfft)``, independent of
    the recording's length.
    """
    audio, fs, t0, t1, fmin, fmax, width, height, settings = _prepare(
        audio, sample_rate, t0, t1, fmin, fmax, width, height, settings
    )
    out = _validate.output(out, height, width, np.float32)
    _, stft, _ = _kernels()
    col_a, col_b = column_bounds(t0, t1, width, fs)
    plan = stft_plan(fs, fmin, fmax, height, settings)
    if check_finite:
        half = plan.nfft // 2
        _validate.finite_part(audio, int(col_a[0]) - half - plan.hop, int(col_b[-1]) + half + plan.hop + 1)
    stft.stft_pooled_image(
        audio,
        plan.window,
        plan.hop,
        plan.scale,
        plan.bin_row,
        plan.interp_k,
        plan.interp_w,
        plan.log_fmax,
        plan.log_step,
        fs,
        col_a,
        col_b,
        out,
    )
    return out


def tone_map(
    magnitude: Any,
    amp_reference: float,
    settings: AnalysisSettings | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Map a magnitude image to uint8 for display.

    ``dB = 20 log10(magnitude / amp_reference)``, clamped to ``[min_db, max_db]``, normalised to
    ``v`` in 0..1, then ``round(255 * v ** gamma)``.

    Parameters
    ----------
    magnitude : ndarray
        Float magnitude image (any shape).
    amp_reference : float
        Magnitude shown at 0 dB (per file, from the overview, so brightness does not jump when
        zooming). Must be positive and finite.
    settings : AnalysisSettings, optional
        ``min_db``, ``max_db``, ``gamma``.
    out : ndarray, optional
        uint8 buffer of the same shape to fill; it is returned.

    Notes
    -----
    No logarithm per pixel: the 255 magnitude thresholds between output levels are computed once
    and each pixel is placed by binary search (8 comparisons), exactly equivalent to the formula.
    """
    settings = _validate.settings_or_default(settings)
    mag = np.asarray(magnitude)
    if mag.dtype.kind != "f":
        raise _validate.ParameterError(f"magnitude dtype {mag.dtype} must be floating point")
    try:
        ref = float(amp_reference)
    except (TypeError, ValueError):
        raise _validate.ParameterError(f"amp_reference={amp_reference!r} must be a number") from None
    if not (math.isfinite(ref) and ref > 0):
        raise _validate.ParameterError(
            f"amp_reference={amp_reference!r} must be positive and finite (the magnitude shown at 0 dB)"
        )
    if out is None:
        out = np.empty(mag.shape, dtype=np.uint8)
    elif not isinstance(out, np.ndarray) or out.shape != mag.shape or out.dtype != np.uint8:
        raise _validate.ParameterError(
            f"out must be a uint8 array of shape {mag.shape}, got "
            f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}"
        )
    elif not out.flags.writeable:
        raise _validate.ParameterError("out must be writeable")
    _, _, tonemap = _kernels()
    if mag.dtype == np.float32 and mag.flags.c_contiguous and out.flags.c_contiguous:
        thresholds, lo, hi = _tone_buckets(ref, settings.min_db, settings.max_db, settings.gamma)
        tonemap.tone_map_float32(mag.reshape(-1), thresholds, lo, hi, out.reshape(-1))
    else:
        tonemap.tone_map_kernel(np.ascontiguousarray(mag).reshape(-1), tone_thresholds(ref, settings), out.reshape(-1))
    return out


@functools.lru_cache(maxsize=16)
def _tone_buckets(ref: float, min_db: float, max_db: float, gamma: float):
    """Thresholds and, per float32 bucket (top 16 bits), the number of them at or below its
    smallest and largest value (see :func:`soma_shm.kernels.tonemap.tone_map_float32`)."""
    settings = AnalysisSettings(min_db=min_db, max_db=max_db, gamma=gamma)
    thresholds = tone_thresholds(ref, settings)
    b = np.arange(1 << 16, dtype=np.uint32)
    with np.errstate(invalid="ignore"):  # NaN patterns; set below
        first = (b << 16).view(np.float32).astype(np.float64)
        last = ((b << 16) | 0xFFFF).view(np.float32).astype(np.float64)
    lo = np.searchsorted(thresholds, first, side="right").astype(np.uint8)
    hi = np.searchsorted(thresholds, last, side="right").astype(np.uint8)
    special = (b >= 0x7F80) & (b < 0x8000)  # +inf and NaN patterns: +inf is above every threshold
    lo[special] = hi[special] = len(thresholds)
    lo[b >= 0x8000] = hi[b >= 0x8000] = 0  # negative (never reached: caught by the floor test)
    for a in (thresholds, lo, hi):
        a.flags.writeable = False
    return thresholds, lo, hi


def tone_thresholds(amp_reference: float, settings: AnalysisSettings) -> np.ndarray:
    """Magnitudes at which the output level steps from ``i-1`` to ``i`` (i = 1..255), float64."""
    i = np.arange(1, 256, dtype=np.float64)
    v = ((i - 0.5) / 255.0) ** (1.0 / settings.gamma)
    db = settings.min_db + (settings.max_db - settings.min_db) * v
    return amp_reference * 10.0 ** (db / 20.0)


def reference_view(samples: int, sample_rate: float) -> tuple[float, float, float, float, int, int]:
    """The image whose peak is a file's 0 dB level (:func:`reference_level`): ``(t0, t1, fmin,
    fmax, width, height)`` of a coarse (256 x 64) pooled STFT of the whole file."""
    fmax = 0.49 * sample_rate
    return 0.0, samples / sample_rate, min(20.0, fmax / 4), fmax, 256, 64


def reference_peak(peak: float) -> float:
    """A file's 0 dB level from the peak of its :func:`reference_view` image (1.0 for silence)."""
    peak = float(peak)
    return peak if peak > 0 and math.isfinite(peak) else 1.0


def reference_level(audio: Any, sample_rate: float, settings: AnalysisSettings | None = None) -> float:
    """The amplitude a file shows at 0 dB: the largest magnitude of a coarse (256 x 64) pooled
    STFT of the whole file (the overview's kernel and scale; max-pooling keeps every frame's
    peak). Computed once per file so brightness never jumps while zooming; the engine, the batch
    pipeline and the command line use this same function, so their images are identical (a long
    file the engine decodes range by range gets the same value, bit for bit, from the transforms
    of its pyramid: :class:`soma_shm.pyramid.ProgressiveBuild`).

    Returns 1.0 for silence.
    """
    fs = _validate.sample_rate(sample_rate)
    a = _validate.audio_array(audio, check_finite=False)
    mag = stft_image(a, fs, *reference_view(a.shape[0], fs), settings, check_finite=False)
    return reference_peak(mag.max())


CWT_BYTES_PER_SAMPLE = 16
"""Peak working memory of the CWT per sample of a segment's forward FFT (the window padded by
the lowest row's wavelet support): measured 15.5 bytes (float32 input, complex spectrum, FFT
scratch). Time is proportional to the same count (about 25 ns per sample on one core here)."""


def request_cost(method: str, sample_rate: float, t0: float, t1: float, fmin: float,
                 settings: AnalysisSettings | None = None) -> int:
    """Estimated working memory (bytes) of a ``method`` image over ``[t0, t1]`` down to ``fmin``.

    Made from the geometry alone, before any plan is built: the CWT pads the window by the
    wavelet support of its lowest row on both sides, ``sqrt(2 ln(1/eps)) * sigma(fmin)`` samples
    with ``sigma = C fs / fmin * sqrt(B / 2)``, so the cost grows as ``1 / fmin``. The STFT pools
    frame by frame into the output and needs no more than the image: 0.
    """
    if method != "cwt":
        return 0
    from .plans import NYQUIST_TAPER, WAVELET_EPS, wavelet_sigma_samples

    s = _validate.settings_or_default(settings)
    kt = math.sqrt(2.0 * math.log(1.0 / WAVELET_EPS))
    pad = kt * (float(wavelet_sigma_samples(fmin, sample_rate, s)) + 1.0 / (2.0 * math.pi * NYQUIST_TAPER))
    return int(CWT_BYTES_PER_SAMPLE * ((t1 - t0) * sample_rate + 2.0 * pad))


def physical_memory() -> int:
    """Bytes of physical memory of this machine (a bound no request can exceed)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 1 << 40


def _cost_fix(cost: int, fmin: float, t0: float, t1: float, sample_rate: float, limit: int) -> float | None:
    """The lowest fmin whose request fits ``limit`` (cost is linear in 1/fmin), or None if the
    window alone exceeds it."""
    window = (t1 - t0) * sample_rate * CWT_BYTES_PER_SAMPLE
    return None if window >= limit else (cost - window) * fmin / (limit - window)


def _too_costly(what: str, cost: int, limit: int, fix: str, option: str | None) -> ParameterError:
    gib = 2.0**30
    where = f"{limit / gib:.2f} GiB" + ("" if option else ", this machine's memory")
    return _validate.ParameterError(
        f"{what}: the CWT would need about {cost / gib:.2f} GiB of working memory (a wavelet's length grows "
        f"as 1/frequency; the limit is {where}); {fix}" + (f", or raise {option}" if option else "")
    )


def check_cost(method: str, sample_rate: float, t0: float, t1: float, fmin: float,
               settings: AnalysisSettings | None, limit: int,
               option: str | None = "EngineOptions.max_request_bytes") -> None:
    """Raise ParameterError if :func:`request_cost` exceeds ``limit`` bytes, naming the lowest
    ``fmin`` (or the widest window) that fits and the ``option`` that raises the limit (None: the
    limit is the machine's memory)."""
    cost = request_cost(method, sample_rate, t0, t1, fmin, settings)
    if cost <= limit:
        return
    ok = _cost_fix(cost, fmin, t0, t1, sample_rate, limit)
    fix = (f"raise fmin to at least {ok:.3g} Hz" if ok is not None
           else f"narrow the window to under {limit / CWT_BYTES_PER_SAMPLE / sample_rate:.0f} s")
    raise _too_costly(f"fmin={fmin:g} Hz over a {t1 - t0:g} s window", cost, limit, fix, option)


def check_snap_cost(points: np.ndarray, sample_rate: float, settings: AnalysisSettings | None, limit: int,
                    option: str | None = "EngineOptions.max_request_bytes") -> None:
    """:func:`check_cost` for snapping validated trace ``points``: the CWT over the trace's span,
    down to the lowest frequency the snap searches (``freq_window_octaves`` below the trace)."""
    s = _validate.settings_or_default(settings)
    below = 2.0 ** -s.freq_window_octaves
    lowest, t0, t1 = float(points[:, 1].min()), float(points[0, 0]), float(points[-1, 0])
    cost = request_cost("cwt", sample_rate, t0, t1, lowest * below, s)
    if cost <= limit:
        return
    ok = _cost_fix(cost, lowest * below, t0, t1, sample_rate, limit)
    fix = (f"draw the trace above {ok / below:.3g} Hz" if ok is not None
           else f"snap under {limit / CWT_BYTES_PER_SAMPLE / sample_rate:.0f} s at a time")
    raise _too_costly(f"a trace down to {lowest:g} Hz over {t1 - t0:g} s", cost, limit, fix, option)
