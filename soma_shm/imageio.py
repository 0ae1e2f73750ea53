"""Colour maps and PNG writing for images rendered by soma_shm (numpy + zlib only).

Colour maps are 256-entry RGB lookup tables built by interpolating a few anchor colours. The
app's page does not build its own: the server sends it this very table (:func:`colormap_module`
is served as ``/static/colormap.js``), so a PNG and the page show the same colour for every level.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import ParameterError

__all__ = ["COLORMAPS", "colormap", "colormap_module", "apply_colormap", "write_png"]

# Anchor colours (equally spaced from level 0 to 255).
COLORMAPS: dict[str, list[tuple[int, int, int]]] = {
    "magma": [(0, 0, 4), (28, 16, 68), (79, 18, 123), (129, 37, 129), (181, 54, 122), (229, 80, 100),
              (251, 135, 97), (254, 194, 135), (252, 253, 191)],
    "viridis": [(68, 1, 84), (72, 40, 120), (62, 74, 137), (49, 104, 142), (38, 130, 142),
                (31, 158, 137), (53, 183, 121), (109, 205, 89), (180, 222, 44), (253, 231, 37)],
    "gray": [(0, 0, 0), (255, 255, 255)],
}


def colormap(name: str = "magma") -> np.ndarray:
    """(256, 3) uint8 lookup table of the named colour map."""
    try:
        anchors = np.asarray(COLORMAPS[name], dtype=np.float64)
    except KeyError:
        raise ParameterError(f"colormap={name!r} is unknown; choose one of {sorted(COLORMAPS)}") from None
    x = np.linspace(0, 255, len(anchors))
    levels = np.arange(256)
    return np.stack([np.interp(levels, x, anchors[:, k]) for k in range(3)], axis=1).round().astype(np.uint8)


def colormap_module(name: str = "magma") -> str:
    """The colour map as the ES module the page imports: ``LUT``, a ``Uint32Array`` of 256 packed
    RGBA words (little-endian ABGR, as ``ImageData`` stores a pixel), made from :func:`colormap`."""
    lut = colormap(name).astype(np.uint32)
    words = (255 << 24) | (lut[:, 2] << 16) | (lut[:, 1] << 8) | lut[:, 0]
    rows = [", ".join(f"0x{int(w):08x}" for w in words[i : i + 8]) for i in range(0, 256, 8)]
    return (
        f"// The {name} colour map of soma_shm.imageio (the PNG files' table), made by the server.\n"
        f"export const NAME = {name!r};\n"
        "export const LUT = new Uint32Array([\n  " + ",\n  ".join(rows) + ",\n]);\n"
    )


def apply_colormap(image: np.ndarray, name: str = "magma") -> np.ndarray:
    """uint8 (H, W) levels -> (H, W, 3) RGB."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ParameterError(f"image must be a 2-D uint8 array, got {image.dtype} with shape {image.shape}")
    return colormap(name)[image]


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write a uint8 image, (H, W) grey or (H, W, 3) RGB, as a PNG file."""
    img = np.ascontiguousarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ParameterError(f"write_png needs uint8 (H, W) or (H, W, 3), got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    colour_type = 0 if img.ndim == 2 else 2
    rows = img.reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()  # filter 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    path = Path(path)
    path.write_bytes(png)
    return path
