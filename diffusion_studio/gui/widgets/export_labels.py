"""Exported pictures that can be read on their own: grids enlarged by an integer nearest-neighbour factor, and GIF
frames and filmstrip frames with their t written under them (text drawn with Qt, so a QGuiApplication must exist)."""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRect, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QImage, QPainter

from ...data.enlarge import enlarge


STRIP = 18          # height of a caption strip, px


def _rgb(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    return img[:, :, :3] if img.shape[2] >= 3 else np.repeat(img, 3, axis=2)


def caption_strip(width: int, captions: list[tuple[int, int, str]], height: int = STRIP) -> np.ndarray:
    """A black (height, width, 3) strip with each (x, w, text) centred in its column, white."""
    image = QImage(width, height, QImage.Format.Format_RGB888)
    image.fill(QColor(0, 0, 0))
    painter = QPainter(image)
    painter.setPen(QColor(255, 255, 255))
    for x, w, text in captions:
        painter.setFont(_fitting_font(text, w - 2, max(8, height - 6)))  # text wider than its column spills over
        painter.drawText(QRect(x, 0, w, height), int(Qt.AlignmentFlag.AlignCenter), text)
    painter.end()
    ptr = image.constBits()
    rows = np.frombuffer(ptr, dtype=np.uint8, count=image.bytesPerLine() * height).reshape(height, -1)
    # a copy: when a row has no padding the slice is a view of the QImage's buffer, freed when this function returns
    # (its first bytes were then the allocator's, drawn as grey dots at the strip's left edge)
    return rows[:, : width * 3].reshape(height, width, 3).copy()


def _fitting_font(text: str, width: int, size: int, smallest: int = 6) -> QFont:
    font = QFont()
    font.setPixelSize(size)
    while size > smallest and QFontMetrics(font).horizontalAdvance(text) > width:
        size -= 1
        font.setPixelSize(size)
    return font


def with_caption(img: np.ndarray, text: str, scale: int = 1) -> np.ndarray:
    """The image enlarged by ``scale`` with ``text`` in a strip under it, as RGB uint8."""
    big = _rgb(enlarge(img, scale))
    strip = caption_strip(big.shape[1], [(0, big.shape[1], text)])
    return np.ascontiguousarray(np.concatenate([big, strip], axis=0))


def labelled_filmstrip(film: np.ndarray, ts: list[int], gap: int) -> np.ndarray:
    """The filmstrip (frames of equal width side by side with ``gap`` px between) with "t = …" under each frame."""
    n = len(ts)
    w = (film.shape[1] - (n - 1) * gap) // n
    captions = [(i * (w + gap), w, f"t = {t}") for i, t in enumerate(ts)]
    rgb = _rgb(film)
    return np.ascontiguousarray(np.concatenate([rgb, caption_strip(rgb.shape[1], captions)], axis=0))
