"""Image display: one persistent pyqtgraph ImageItem per view, fixed levels, and numpy → QImage conversion."""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QImage, QPixmap

pg.setConfigOptions(imageAxisOrder="row-major", antialias=True)


class ImagePane(pg.GraphicsLayoutWidget):
    """A titled image view. ``show_u8`` only swaps the pixels of the one ImageItem, with no levels at all (uint8 is
    shown as it is, never auto-levelled), which is pyqtgraph's fast path: levels of (0, 255) made it rescale every
    512×512 RGB frame by the identity (~0.55 ms a frame). The view re-fits only when the image size changes."""

    def __init__(self, title: str = "", parent=None, min_size: int = 120):
        super().__init__(parent)
        self.setMinimumSize(min_size, min_size)
        self.ci.layout.setContentsMargins(2, 2, 2, 2)
        self.label = self.addLabel(title, row=0, col=0)
        self.view = self.addViewBox(row=1, col=0, lockAspect=True, invertY=True, enableMenu=False)
        self.view.setMouseEnabled(False, False)
        self.item = pg.ImageItem()
        self.view.addItem(self.item)
        self._shape: tuple[int, ...] | None = None
        self.current: np.ndarray | None = None
        self._hint: QSize | None = None
        self.on_title_fitted = None  # called after the title is wrapped to a new width (see set_title_height)

    def set_size_hint(self, size: QSize | None) -> None:
        """Ask a layout for this size (None: the view's own hint, which follows the scene and can be large)."""
        self._hint = size
        self.updateGeometry()

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        return self._hint if self._hint is not None else super().sizeHint()

    def set_title(self, text: str) -> None:
        self.label.setText(text)
        self._fit_title(self.width())

    def _fit_title(self, width: int) -> None:
        """Wrap a title wider than the pane: pyqtgraph gives a label its whole text as minimum width, which widened
        the layout past a narrow pane's edge and cut off the image's right side."""
        item = self.label.item
        item.setTextWidth(-1)
        if item.boundingRect().width() > width - 8 > 20:
            item.setTextWidth(width - 8)
        self.label.updateMin()
        self.label.resizeEvent(None)
        hook = getattr(self, "on_title_fitted", None)
        if hook is not None:
            hook()

    def title_height(self) -> float:
        """The height the title's text needs at the pane's width."""
        return float(self.label.item.boundingRect().height())

    def set_title_height(self, height: float) -> None:
        """Keep at least this much height for the title row (to line up panes whose titles wrap differently)."""
        self.ci.layout.setRowMinimumHeight(0, float(height))
        self.ci.layout.setRowMaximumHeight(0, float(height))

    def resizeEvent(self, event) -> None:
        if hasattr(self, "label"):
            self._fit_title(event.size().width() if event is not None else self.width())
        super().resizeEvent(event)

    def show_u8(self, arr: np.ndarray) -> None:
        """Show a uint8 (H, W) or (H, W, 3) array; the array is kept, so pass one you will not mutate."""
        if arr.dtype != np.uint8:
            raise TypeError("show_u8 takes uint8 arrays")
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        arr = np.ascontiguousarray(arr)
        self.current = arr
        self.item.setImage(arr, autoLevels=False, levels=None)
        if arr.shape != self._shape:
            self._shape = arr.shape
            self.view.autoRange(padding=0.0)

    def clear_image(self) -> None:
        self.item.clear()
        self.current = None
        self._shape = None


def qimage_from_u8(arr: np.ndarray) -> QImage:
    """A QImage that owns a copy of a uint8 (H, W) / (H, W, 3) / (H, W, 4) array (safe to keep and pass around)."""
    arr = np.ascontiguousarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.ascontiguousarray(arr[:, :, 0])
    h, w = arr.shape[:2]
    if arr.ndim == 2:
        fmt = QImage.Format.Format_Grayscale8
    elif arr.shape[2] == 3:
        fmt = QImage.Format.Format_RGB888
    elif arr.shape[2] == 4:
        fmt = QImage.Format.Format_RGBA8888
    else:
        raise ValueError(f"cannot show an array of shape {arr.shape}")
    # bytesPerLine given explicitly; .copy() detaches the QImage from the numpy buffer.
    return QImage(arr.data, w, h, arr.strides[0], fmt).copy()


def pixmap_from_u8(arr: np.ndarray, size: int | None = None) -> QPixmap:
    pm = QPixmap.fromImage(qimage_from_u8(arr))
    if size:
        pm = pm.scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
    return pm
