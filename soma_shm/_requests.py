"""A caller's arguments made into a role's request parameters, in the caller's thread.

Used by :class:`soma_shm.Engine`: each function validates its arguments (typed errors naming the
value and the remedy), bounds the request's cost before anything is queued (``docs/design.md``,
"Cost bound") and returns the parameters the role's task reads (:mod:`soma_shm.ipc.tasks`).
Nothing here touches a worker. ``opened`` is the open file (:class:`soma_shm._files.Opened`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _validate
from .errors import ParameterError

__all__ = ["pyramid_for", "viewport", "snap"]


def pyramid_for(opened, method: str, span: float, settings, options):
    """The file's pyramid if a view of ``method`` over ``span`` seconds is cut from it, else None."""
    pyramid = opened.pyramid
    if (method != "stft" or pyramid is None or span <= options.stft_above_seconds
            or not pyramid.layout.matches(settings)):
        return None
    return pyramid


def viewport(opened, settings, options, amp_reference: float | None, t0: float, t1: float, fmin: float,
             fmax: float, width: int, height: int, magnitude: Any, method: str | None) -> dict:
    """Parameters of a viewport request (see :meth:`soma_shm.Engine.submit_viewport`)."""
    fs, o = opened.sample_rate, options
    t0, t1, fmin, fmax, width, height = _validate.view(t0, t1, fmin, fmax, width, height, fs,
                                                       opened.frames / fs, o.max_width, o.max_height)
    if method is None:
        method = "stft" if (t1 - t0) > o.stft_above_seconds else "cwt"
    elif method not in ("cwt", "stft"):
        raise ParameterError(f"method={method!r} must be 'cwt', 'stft' or None (automatic)")
    if not isinstance(magnitude, (bool, np.bool_)):
        raise ParameterError(f"magnitude={magnitude!r} must be True or False")
    pyramid = pyramid_for(opened, method, t1 - t0, settings, o)
    if pyramid is None:
        from .render import check_cost

        check_cost(method, fs, t0, t1, fmin, settings, o.max_request_bytes)
    return dict(t0=t0, t1=t1, fmin=fmin, fmax=fmax, width=width, height=height, method=method,
                settings=settings, amp_reference=amp_reference, magnitude=bool(magnitude),
                pyramid=None if pyramid is None else opened.pyramid_block.desc())


def snap(opened, settings, options, trace: Any) -> dict:
    """Parameters of a snap request (see :meth:`soma_shm.Engine.submit_snap`): the validated
    trace (``"trace"``, (N, 2) float64) and the settings."""
    from .render import check_snap_cost

    fs = opened.sample_rate
    pts = _validate.trace(trace, fs, opened.frames / fs)
    check_snap_cost(pts, fs, settings, options.max_request_bytes)
    return dict(trace=pts, settings=settings)
