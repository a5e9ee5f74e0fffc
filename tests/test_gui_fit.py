"""The app fits a 1024×700 screen (every tab's main widgets get room), and exported caption strips are clean."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize("width", [40, 64, 256, 300, 512])
def test_caption_strip_margins_are_background_for_every_width(qapp, width):
    from diffusion_studio.gui.export_labels import STRIP, caption_strip, labelled_filmstrip, with_caption

    for _ in range(3):  # the stray dots came from freed memory: repeat, with other allocations in between
        junk = [bytearray(b"\x7f" * (width * STRIP * 3)) for _ in range(4)]
        out = with_caption(np.full((width, width), 90, np.uint8), "t = 1000")
        strip = out[width:]
        assert strip.shape == (STRIP, width, 3)
        assert strip[:2].max() == 0 and strip[-2:].max() == 0      # top and bottom margins: background
        assert strip[:, :1].max() == 0 and strip[:, -1:].max() == 0  # left and right margins: background
        assert strip.max() > 200                                       # and the caption itself is there
        del junk
    lone = caption_strip(width, [])
    assert lone.max() == 0                                             # nothing drawn: all background
    # narrow frames: "t = 1000" shrinks to its column, so nothing is drawn in the gaps between frames
    gap, n = 2, 4
    film = np.full((width, n * width + (n - 1) * gap), 90, np.uint8)
    labelled = labelled_filmstrip(film, [1000, 500, 10, 1], gap)[width:]
    for i in range(1, n):
        x = i * (width + gap) - gap
        assert labelled[:, x:x + gap].max() == 0, f"text spilled into the gap before frame {i}"
