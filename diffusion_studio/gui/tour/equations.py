"""The tour's equations as pictures: drawn at their natural size or scaled to the dock's width, never below a readable
size (wider than that they scroll sideways), with their TeX one right-click away."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QGuiApplication, QImage, QPixmap
from PySide6.QtWidgets import QLabel, QScrollArea, QSizePolicy, QWidget


class EquationLabel(QLabel):
    """An equation image at its natural size, or scaled down to the width there is, but never below MIN_SCALE (7 px
    glyphs at 1280 px, 4 px at 1024 could not be read): wider than that, its EquationScroll scrolls it sideways."""

    SCALE = 2  # rendered at twice the resolution, so scaling down stays sharp
    MIN_SCALE = 0.75  # of the 12 pt rendering: about the size of the dock's own 9 pt text

    def __init__(self, image: QImage, tex: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("tourEquation")
        self.image = image
        self.tex = tex
        # no TeX source in the tooltip (a learner reads q(x_{t−1} …) there): it is one right-click away instead
        self.setToolTip("Right-click to copy this equation as TeX")
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)
        copy = QAction("Copy as TeX", self)
        copy.triggered.connect(lambda _c=False: QGuiApplication.clipboard().setText(self.tex))
        self.addAction(copy)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.scale = 1.0
        self.fit(self.natural_width)

    @property
    def natural_width(self) -> int:
        return self.image.width() // self.SCALE

    @property
    def natural_height(self) -> int:
        return self.image.height() // self.SCALE

    def fit(self, width: int) -> None:
        """Draw at the scale that fits ``width``, within [MIN_SCALE, 1]."""
        scale = max(self.MIN_SCALE, min(1.0, max(1, width) / max(1, self.natural_width)))
        w = max(1, round(self.natural_width * scale))
        if self.pixmap() is not None and not self.pixmap().isNull() and w == self.width():
            return
        self.scale = scale
        pm = QPixmap.fromImage(self.image.scaledToWidth(w * self.SCALE, Qt.TransformationMode.SmoothTransformation))
        pm.setDevicePixelRatio(self.SCALE)
        self.setPixmap(pm)
        self.setFixedSize(w, pm.height() // self.SCALE + 2)


class EquationScroll(QScrollArea):
    """One equation, as wide as the dock: scaled to fit down to EquationLabel.MIN_SCALE, scrolled sideways beyond."""

    def __init__(self, label: EquationLabel, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("tourEquationScroll")
        self.label = label
        self.setWidget(label)
        self.setWidgetResizable(False)
        self.setFrameShape(QScrollArea.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.setMinimumWidth(40)
        self._fit(self.width())

    def _fit(self, width: int) -> None:
        self.label.fit(width)
        bar = self.horizontalScrollBar().sizeHint().height() if self.label.width() > width else 0
        self.setFixedHeight(self.label.height() + bar)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if event.size().width() != event.oldSize().width():
            self._fit(event.size().width())
