"""Batch analysis for scripts and notebooks: many files, many windows, many traces.

Every path computes with the same kernels and the same per-file amplitude reference
(:func:`soma_shm.render.reference_level`), so its images are identical, bit for bit, whichever
way they were made:

- in this process (:func:`render_file`, :func:`render_files`);
- through an :class:`soma_shm.Engine` (``render_files(..., engine=engine)``): the file is decoded
  once into shared memory and the image computed in the viewport worker;
- on a Dask cluster (:mod:`soma_shm.pipeline.distributed`): each task reads its own file.

Results are :class:`Rendered` records (float32 magnitude, uint8 image, geometry); PNG or ``.npy``
files are written on request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Sequence

import numpy as np

from .. import _validate
from ..settings import AnalysisSettings

__all__ = ["Rendered", "render_array", "render_file", "render_files", "snap_file", "write_outputs"]

Method = Literal["cwt", "stft"]


@dataclass
class Rendered:
    """One rendered image and where it came from."""

    source: str
    magnitude: np.ndarray
    image: np.ndarray
    t0: float
    t1: float
    fmin: float
    fmax: float
    method: str
    amp_reference: float
    outputs: list[str] = field(default_factory=list)


def _window(duration: float, t0: float | None, t1: float | None) -> tuple[float, float]:
    return (0.0 if t0 is None else float(t0)), (duration if t1 is None else float(t1))


def render_array(
    audio: np.ndarray,
    sample_rate: float,
    t0: float | None = None,
    t1: float | None = None,
    fmin: float = 20.0,
    fmax: float | None = None,
    width: int = 1600,
    height: int = 600,
    method: Method = "cwt",
    settings: AnalysisSettings | None = None,
    amp_reference: float | None = None,
    source: str = "<array>",
) -> Rendered:
    """Render one image of an in-memory recording (whole file unless ``t0``/``t1`` are given)."""
    from .. import render

    if method not in ("cwt", "stft"):
        raise _validate.ParameterError(f"method={method!r} must be 'cwt' or 'stft'")
    fs = _validate.sample_rate(sample_rate)
    audio = _validate.audio_array(audio)
    t0, t1 = _window(audio.shape[0] / fs, t0, t1)
    fmax = min(20_000.0, 0.49 * fs) if fmax is None else float(fmax)
    ref = render.reference_level(audio, fs, settings) if amp_reference is None else float(amp_reference)
    fn = render.cwt_image if method == "cwt" else render.stft_image
    mag = fn(audio, fs, t0, t1, fmin, fmax, width, height, settings, check_finite=False)
    image = render.tone_map(mag, ref, settings)
    return Rendered(source, mag, image, t0, t1, fmin, fmax, method, ref)


def render_file(path: str | os.PathLike, **kwargs: Any) -> Rendered:
    """Decode ``path`` and render it with :func:`render_array` (same keyword arguments)."""
    from ..audio import load_audio

    audio, fs = load_audio(path)
    return render_array(audio, fs, source=str(path), **kwargs)


def write_outputs(r: Rendered, out_dir: str | os.PathLike, png: bool = True, npy: bool = False, colormap: str = "magma") -> Rendered:
    """Write ``<stem>.png`` (colour-mapped) and/or ``<stem>.npy`` (float32 magnitude)."""
    from ..imageio import apply_colormap, write_png

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(r.source).stem or "image"
    if png:
        r.outputs.append(str(write_png(out / f"{stem}.png", apply_colormap(r.image, colormap))))
    if npy:
        np.save(out / f"{stem}.npy", r.magnitude)
        r.outputs.append(str(out / f"{stem}.npy"))
    return r


def render_files(
    paths: Sequence[str | os.PathLike],
    *,
    engine: Any = None,
    out_dir: str | os.PathLike | None = None,
    png: bool = False,
    npy: bool = False,
    keep: bool = True,
    progress: Callable[[int, int], None] | None = None,
    **kwargs: Any,
) -> list[Rendered]:
    """Render many files, one after another, in this process or through an ``engine``.

    Parameters
    ----------
    paths : sequence of paths
        Audio files.
    engine : soma_shm.Engine, optional
        Compute in its viewport worker (the file is decoded into shared memory; the image comes
        back through a shared slot). Opening a file cancels the engine's pending requests. For
        batches create it with ``pyramid=False``: a file's STFT pyramid pays off only for many
        wide views, and without it every image equals the in-process one bit for bit (with it,
        STFT windows wider than 30 s are cut from the pyramid, within 0.5 dB).
    out_dir, png, npy : optional
        Write ``<stem>.png`` / ``<stem>.npy`` for every file into ``out_dir``.
    keep : bool
        Keep the arrays in the returned records (``False`` saves memory on big batches that only
        write files).
    progress : callable, optional
        ``progress(done, total)`` after each file.
    **kwargs
        ``t0, t1, fmin, fmax, width, height, method, settings`` as for :func:`render_array`.
    """
    results = []
    for i, path in enumerate(paths):
        if engine is None:
            r = render_file(path, **kwargs)
        else:
            r = _render_with_engine(engine, path, **kwargs)
        if out_dir is not None and (png or npy):
            write_outputs(r, out_dir, png=png, npy=npy)
        if not keep:
            r.magnitude = r.image = None  # type: ignore[assignment]
        results.append(r)
        if progress is not None:
            progress(i + 1, len(paths))
    return results


def _render_with_engine(
    engine: Any,
    path: str | os.PathLike,
    t0: float | None = None,
    t1: float | None = None,
    fmin: float = 20.0,
    fmax: float | None = None,
    width: int = 1600,
    height: int = 600,
    method: Method = "cwt",
    settings: AnalysisSettings | None = None,
) -> Rendered:
    if settings is not None:
        engine.set_settings(settings)
    info = engine.open(path)
    t0, t1 = _window(info.duration, t0, t1)
    fmax = min(20_000.0, 0.49 * info.sample_rate) if fmax is None else float(fmax)
    res = engine.submit_viewport(t0, t1, fmin, fmax, width, height, method=method, magnitude=True).result()
    res.copy()
    return Rendered(str(path), res.magnitude, res.image, t0, t1, fmin, fmax, res.method, engine.amp_reference)


def snap_file(
    path: str | os.PathLike,
    traces: Iterable[Any],
    settings: AnalysisSettings | None = None,
) -> list[np.ndarray]:
    """Snap many traces on one file (decoded once); returns one ``(K, 3)`` partial per trace."""
    from ..audio import load_audio
    from ..snap import snap_trace

    audio, fs = load_audio(path)
    return [snap_trace(audio, fs, tr, settings, check_finite=False) for tr in traces]
