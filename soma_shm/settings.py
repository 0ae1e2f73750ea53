"""Analysis settings shared by the kernels, the engine, snapping and the app.

One frozen value object: it is hashable (plans are cached per settings), picklable as plain data
(it crosses process boundaries in requests) and validated once, at construction.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import ParameterError

__all__ = ["AnalysisSettings"]

_CMOR = re.compile(r"^cmor(?P<b>[0-9.]+)-(?P<c>[0-9.]+)$")


@dataclass(frozen=True)
class AnalysisSettings:
    """Wavelet, snapping and display settings.

    Parameters
    ----------
    wavelet_bandwidth : float
        ``B`` of the complex Morlet ``cmorB-C`` (PyWavelets convention). Larger B means a longer
        wavelet: finer frequency resolution, coarser time resolution. Default 8.0.
    wavelet_center : float
        ``C`` of ``cmorB-C``; the scale of a row at frequency ``f`` is ``s = C * fs / f``. Default 1.5.
    bins_per_octave : int
        Density of the fine log-frequency grid that snapping searches. Default 96.
    time_resolution_ms : float
        Spacing of the points of a snapped partial. Default 10 ms.
    freq_window_octaves : float
        Snapping searches the ridge within +- this many octaves of the drawn trace. Default 0.5.
    min_db, max_db : float
        The dB range mapped to 0..255 by :func:`soma_shm.tone_map` (dB relative to the file's
        amplitude reference). Defaults -80 and 0.
    gamma : float
        Gamma applied to the normalised dB value before quantising. Default 1.0 (linear in dB).
    stft_window_ms : float
        STFT (Hann) window length; the FFT size is the power of two nearest to this duration at the
        file's sample rate (2048 at 48 kHz), so the window scales with the sample rate. Default 42.7 ms.
    stft_hop_fraction : float
        Hop as a fraction of the FFT size; at most 0.5 so every sample lies in the main lobe of some
        frame (nothing between frames can vanish from a pooled image). Default 0.5.

    Raises
    ------
    ParameterError
        If a value is out of range; the message names the field and the accepted range.
    """

    wavelet_bandwidth: float = 8.0
    wavelet_center: float = 1.5
    bins_per_octave: int = 96
    time_resolution_ms: float = 10.0
    freq_window_octaves: float = 0.5
    min_db: float = -80.0
    max_db: float = 0.0
    gamma: float = 1.0
    stft_window_ms: float = 42.666666666666664
    stft_hop_fraction: float = 0.5

    def __post_init__(self) -> None:
        def positive(name: str, lo: float, hi: float) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ParameterError(f"{name}={v!r} must be a finite number in [{lo}, {hi}]")
            if not lo <= v <= hi:
                raise ParameterError(f"{name}={v!r} is outside [{lo}, {hi}]; choose a value in range")

        positive("wavelet_bandwidth", 0.1, 100.0)
        positive("wavelet_center", 0.1, 20.0)
        positive("time_resolution_ms", 0.1, 1000.0)
        positive("freq_window_octaves", 0.01, 4.0)
        positive("gamma", 0.05, 20.0)
        positive("stft_window_ms", 1.0, 1000.0)
        positive("stft_hop_fraction", 0.01, 0.5)
        positive("min_db", -300.0, 300.0)
        positive("max_db", -300.0, 300.0)
        if isinstance(self.bins_per_octave, bool) or not isinstance(self.bins_per_octave, int) or not (
            1 <= self.bins_per_octave <= 1200
        ):
            raise ParameterError(
                f"bins_per_octave={self.bins_per_octave!r} must be an integer in [1, 1200]"
            )
        # Normalise ints given for float fields so equal settings hash equally.
        for f in fields(self):
            if f.type == "float":
                object.__setattr__(self, f.name, float(getattr(self, f.name)))
        if not self.min_db < self.max_db:
            raise ParameterError(
                f"min_db={self.min_db!r} must be below max_db={self.max_db!r}; swap or widen them"
            )

    # -- conveniences ------------------------------------------------------------------------
    @property
    def wavelet(self) -> str:
        """The PyWavelets name of the wavelet, e.g. ``"cmor8.0-1.5"``."""
        return f"cmor{self.wavelet_bandwidth:g}-{self.wavelet_center:g}"

    @classmethod
    def from_wavelet(cls, name: str, **kwargs: Any) -> "AnalysisSettings":
        """Settings for a PyWavelets complex Morlet name such as ``"cmor8.0-1.5"``."""
        m = _CMOR.match(name.strip()) if isinstance(name, str) else None
        if m is None:
            raise ParameterError(
                f"wavelet={name!r} is not a complex Morlet name; use 'cmorB-C', e.g. 'cmor8.0-1.5'"
            )
        return cls(wavelet_bandwidth=float(m["b"]), wavelet_center=float(m["c"]), **kwargs)

    def stft_nfft(self, sample_rate: float) -> int:
        """FFT size of the STFT at ``sample_rate``: the power of two nearest the window duration."""
        n = sample_rate * self.stft_window_ms / 1000.0
        return max(16, 1 << int(round(math.log2(max(n, 1.0)))))

    def stft_hop(self, sample_rate: float) -> int:
        """Hop of the STFT in samples at ``sample_rate`` (at most half the FFT size)."""
        return max(1, int(self.stft_nfft(sample_rate) * self.stft_hop_fraction))

    def replace(self, **changes: Any) -> "AnalysisSettings":
        """A copy with some fields changed (validated like the constructor)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ParameterError(f"unknown settings {sorted(unknown)}; valid: {[f.name for f in fields(self)]}")
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-friendly)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AnalysisSettings":
        """Inverse of :meth:`to_dict`; unknown keys are rejected with their names."""
        if not isinstance(data, dict):
            raise ParameterError(f"settings must be a dict, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ParameterError(f"unknown settings {sorted(unknown)}; valid: {sorted(names)}")
        return cls(**data)
