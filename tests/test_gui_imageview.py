"""What an ImagePane paints is exactly the uint8 array it was given (no levels, no rescaling), colour and grey."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtGui import QImage

from diffusion_studio.gui.widgets.imageview import ImagePane


def rendered(pane: ImagePane) -> np.ndarray:
    """The pixels of the QImage pyqtgraph renders for the pane's ImageItem, as (H, W, 3) uint8."""
    pane.item.render()
    q = pane.item.qimage.convertToFormat(QImage.Format.Format_RGB888)
    buf = np.frombuffer(q.constBits(), np.uint8).reshape(q.height(), q.bytesPerLine())
    return buf[:, : q.width() * 3].reshape(q.height(), q.width(), 3).copy()


@pytest.mark.parametrize("shape", [(37, 53, 3), (37, 53), (40, 24, 1)])
def test_painted_pixels_are_the_array(qtbot, shape):
    pane = ImagePane("x")
    qtbot.addWidget(pane)
    rng = np.random.default_rng(0)
    for _ in range(2):  # the second frame goes through the swap-only path
        arr = rng.integers(60, 190, shape, dtype=np.uint8)  # low contrast: any auto-levelling would stretch it
        pane.show_u8(arr)
        want = arr if arr.ndim == 3 and arr.shape[2] == 3 else np.repeat(arr.reshape(*arr.shape[:2], 1), 3, axis=2)
        np.testing.assert_array_equal(rendered(pane), want)


def test_only_uint8_is_shown(qtbot):
    pane = ImagePane("x")
    qtbot.addWidget(pane)
    with pytest.raises(TypeError, match="uint8"):
        pane.show_u8(np.zeros((4, 4), np.float32))
