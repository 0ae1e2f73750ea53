"""The page colours images with the very table PNG files use (soma_shm/imageio.py)."""

from __future__ import annotations

import numpy as np
import pytest

from soma_shm.imageio import colormap

from ._browser import chromium_page, need_chromium, served

pytestmark = pytest.mark.gui


def test_the_page_colour_table_is_the_png_table():
    need_chromium()
    with served() as url, chromium_page() as page:
        page.goto(url)
        # What the image worker imports, unpacked as the page's ImageData bytes (R, G, B, A).
        lut = page.evaluate("""async () => {
          const m = await import('/static/colormap.js');
          return Array.from(new Uint8Array(m.LUT.buffer));
        }""")
        assert page.page_errors == []
    rgba = np.asarray(lut, dtype=np.uint8).reshape(256, 4)
    assert (rgba[:, 3] == 255).all()
    np.testing.assert_array_equal(rgba[:, :3], colormap("magma"))
