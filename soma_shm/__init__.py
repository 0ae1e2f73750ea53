"""soma_shm: a shared-memory, zero-copy compute engine for audio time-frequency images.

Public surface (everything else is private or lives in a subpackage with its own ``__all__``):

- :class:`AnalysisSettings` - wavelet, snapping and display settings (frozen).
- :func:`cwt_image`, :func:`stft_image` - calibrated, max-pooled magnitude images.
- :func:`tone_map` - magnitude to uint8 via dB, clamp and gamma.
- :func:`build_pyramid` / :class:`Pyramid` - a recording's pooled STFT pyramid: wide views of
  long recordings cut in milliseconds instead of recomputed.
- :func:`snap_trace` - a hand-drawn trace to a partial on the CWT ridge.
- :func:`render_partials` / :class:`Resynthesis` - partials back to sound (one sine each), and
  a document's mix kept up to date edit by edit.
- :class:`Engine` - shared audio, persistent workers, terminate-and-respawn cancellation.
- :func:`load_audio` - decode a file to mono float32.
- the errors of :mod:`soma_shm.errors`.

``import soma_shm`` is cheap: numba and the kernels load on first use (spawned workers re-import
this package, so nothing heavy may happen here).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    AudioFormatError,
    EngineClosed,
    ParameterError,
    QueueFull,
    RequestCancelled,
    SharedMemoryError,
    SomaError,
    WorkerCrashed,
    WorkerError,
    WorkerTimeout,
)
from .settings import AnalysisSettings

__version__ = "0.1.0"

# name -> submodule that defines it; loaded on first attribute access.
_LAZY = {
    "cwt_image": "render",
    "stft_image": "render",
    "tone_map": "render",
    "snap_trace": "snap",
    "render_partials": "synth",
    "Resynthesis": "synth",
    "build_pyramid": "pyramid",
    "Pyramid": "pyramid",
    "Engine": "engine",
    "EngineOptions": "engine",
    "load_audio": "audio",
    "audio_info": "audio",
}

__all__ = [
    "AnalysisSettings",
    "AudioFormatError",
    "EngineClosed",
    "ParameterError",
    "QueueFull",
    "RequestCancelled",
    "SharedMemoryError",
    "SomaError",
    "WorkerCrashed",
    "WorkerError",
    "WorkerTimeout",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'soma_shm' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover
    from .audio import audio_info, load_audio
    from .engine import Engine, EngineOptions
    from .pyramid import Pyramid, build_pyramid
    from .render import cwt_image, stft_image, tone_map
    from .snap import snap_trace
    from .synth import Resynthesis, render_partials
