"""Exported pictures that can be read on their own: grids enlarged by an integer nearest-neighbour factor, and GIF
frames and filmstrip frames with their t written under them (text drawn with Qt, so a QGuiApplication must exist)."""
from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QRect, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter

MIN_SIDE = 256      # an exported grid's longer side is at least this many pixels
STRIP = 18          # height of a caption strip, px


def integer_scale(shape: tuple[int, ...], target: int = MIN_SIDE, most: int = 16) -> int:
    """The smallest whole factor that makes the longer side at least ``target`` (1 when it already is)."""
    return int(max(1, min(most, math.ceil(target / max(1, max(shape[0], shape[1]))))))


def enlarge(img: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement by a whole factor: every pixel becomes a scale × scale block."""
    if scale == 1:
        return np.ascontiguousarray(img)
    return np.ascontiguousarray(np.repeat(np.repeat(img, scale, axis=0), scale, axis=1))


def _rgb(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    return img[:, :, :3] if img.shape[2] >= 3 else np.repeat(img, 3, axis=2)


def caption_strip(width: int, captions: list[tuple[int, int, str]], height: int = STRIP) -> np.ndarray:
    """A black (height, width, 3) strip with each (x, w, text) centred in its column, white."""
    image = QImage(width, height, QImage.Format.Format_RGB888)
    image.fill(QColor(0, 0, 0))
    painter = QPainter(image)
    font = QFont()
    font.setPixelSize(max(8, height - 6))
    painter.setFont(font)
    painter.setPen(QColor(255, 255, 255))
    for x, w, text in captions:
        painter.drawText(QRect(x, 0, w, height), int(Qt.AlignmentFlag.AlignCenter), text)
    painter.end()
    ptr = image.constBits()
    rows = np.frombuffer(ptr, dtype=np.uint8, count=image.bytesPerLine() * height).reshape(height, -1)
    return np.ascontiguousarray(rows[:, : width * 3].reshape(height, width, 3))


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
