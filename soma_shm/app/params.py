"""Checks of the values the page sends to the backend's API methods."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ParameterError


def _ids(ids: Any) -> None:
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ParameterError(f"ids={ids!r} must be a list of partial ids")


def _path_param(name: str, value: Any, what: str) -> str:
    """A path given to the API: a non-empty string without NUL bytes, of a sane length."""
    if not isinstance(value, str) or not value.strip():
        raise ParameterError(f"{name}={value!r} must be the path of {what}")
    if "\x00" in value or len(value) > 4096:
        raise ParameterError(f"{name} is not a usable path (it holds a NUL byte or is too long); give the path of {what}")
    return value.strip()


def _json_kind(value: Any) -> str:
    return {list: "a list", str: "a string", bool: "true/false", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__)


def _inside(path: str, folder: str) -> bool:
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False
