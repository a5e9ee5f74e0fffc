"""The Sampling view's "Attention" tab: for the frame shown, which pixels of one image listened to each word of the
prompt, as heat maps over the sample with a colour scale, whole words under them and word pieces explained."""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (QGridLayout, QHBoxLayout, QLabel, QScrollArea, QSizePolicy, QSpinBox, QVBoxLayout,
                               QWidget)

MIN_TILE, MAX_TILE = 40, 192   # px of a map: smaller is unreadable (the tiles scroll instead), larger is blur
CAPTION_H = 20                 # px of the word under a map
NOTE = "Per-word cross-attention maps appear here when a model trained on captions samples from a prompt."
SCALE_TIP = ("The colour of a pixel is its cross-attention weight on the word: the share of the pixel's attention "
             "that goes to that token (the weights over all tokens sum to 1), averaged over heads and layers. Black "
             "is 0; white is the map's own maximum (each map is scaled to its largest weight, as DAAM shows them; "
             "the tooltip of a map gives that maximum).")


def pixmap(u8: np.ndarray, side: int) -> QPixmap:
    """A uint8 (H, W) or (H, W, 3) picture scaled (nearest neighbour) to fit side × side."""
    a = np.ascontiguousarray(u8)
    fmt = QImage.Format.Format_Grayscale8 if a.ndim == 2 else QImage.Format.Format_RGB888
    img = QImage(a.data, a.shape[1], a.shape[0], a.strides[0], fmt)
    return QPixmap.fromImage(img.copy()).scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio,
                                               Qt.TransformationMode.FastTransformation)


def heat(u8: np.ndarray) -> np.ndarray:
    """A black → red → yellow → white heat map of a uint8 map (the colours DAAM's figures use)."""
    v = u8.astype(np.float32) / 255.0
    rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1)
    return (rgb * 255).astype(np.uint8)


def crop(grid: np.ndarray | None, k: int, side: int) -> np.ndarray:
    """Image k of a make_grid grid (padding 2, ceil(sqrt(n)) columns) as RGB uint8; grey when there is none yet."""
    if grid is None:
        return np.full((side, side, 3), 128, np.uint8)
    cols = max(1, (grid.shape[1] - 2) // (side + 2))
    r, c = divmod(k, cols)
    top, left = 2 + r * (side + 2), 2 + c * (side + 2)
    tile = grid[top:top + side, left:left + side]
    return np.repeat(tile[..., None], 3, axis=-1) if tile.ndim == 2 else tile


def blend(base: np.ndarray, heat_rgb: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    return (alpha * heat_rgb.astype(np.float32) + (1 - alpha) * base.astype(np.float32)).astype(np.uint8)


def best_layout(n: int, width: int, height: int, min_cell: int = MIN_TILE) -> tuple[int, int]:
    """(columns, tile side) that make n square tiles (each with a caption line) largest in width × height, with no
    column narrower than ``min_cell`` (a caption's width): what does not fit in the height scrolls."""
    most = max(1, min(n, width // max(1, min_cell + 6)))
    best = (1, 0)
    for cols in range(1, most + 1):
        rows = (n + cols - 1) // cols
        side = min(width // cols - 6, height // rows - CAPTION_H - 2)
        if side > best[1]:
            best = (cols, side)
    if best[1] < MIN_TILE:  # too many to fit: as many columns of small, readable tiles as the width takes; scroll
        cols = max(1, min(n, width // (max(MIN_TILE, min_cell) + 6)))
        return cols, MIN_TILE
    return best[0], max(MIN_TILE, min(MAX_TILE, best[1]))


def whole_words(tokens: list[str]) -> list[str]:
    """For each word piece, the whole word it belongs to ("gi", "##raf", "##fe" → "giraffe" three times)."""
    out, start = [], 0
    for i, tok in enumerate(tokens):
        if not tok.startswith("##"):
            start = i
        end = i + 1
        while end < len(tokens) and tokens[end].startswith("##"):
            end += 1
        out.append(tokens[start] + "".join(t[2:] for t in tokens[start + 1:end]))
    return out


def word_tip(tokens: list[str], k: int, peak: float | None) -> str:
    """A map's tooltip: the word, what a word piece is when it is one, and the map's largest weight."""
    tok, word = tokens[k], whole_words(tokens)[k]
    pieces = [t for t, w in zip(tokens, whole_words(tokens)) if w == word]
    tip = f"Attention on “{tok}”"
    if tok.startswith("##") or len(pieces) > 1:
        tip += (f". “{tok}” is a word piece: the encoder knows “{word}” only as the pieces "
                f"{' + '.join('“' + p + '”' for p in dict.fromkeys(pieces))}; “##” marks a piece that continues the "
                "word before it, and each piece gets its own map")
    if peak is not None:
        tip += f". White is {peak:.2f}, the largest share of a pixel's attention on it"
    return tip + "."


class ColourScale(QWidget):
    """What the colours mean: 0 (black) … the map's own maximum (white), on the heat map's colours."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("attentionScale")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        self.low, self.high = QLabel("0"), QLabel("max")
        self.bar = QLabel()
        self.bar.setObjectName("attentionScaleBar")
        self.bar.setMinimumSize(30, 10)
        self.bar.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.bar.setScaledContents(True)
        ramp = heat(np.tile(np.arange(256, dtype=np.uint8), (6, 1)))
        self.bar.setPixmap(QPixmap.fromImage(QImage(np.ascontiguousarray(ramp).data, 256, 6, 256 * 3,
                                                    QImage.Format.Format_RGB888).copy()))
        self.caption = QLabel("attention")
        lay.addWidget(self.caption)
        lay.addWidget(self.low)
        lay.addWidget(self.bar, 1)
        lay.addWidget(self.high)
        self.setToolTip(SCALE_TIP)


class AttentionView(QWidget):
    """The "Attention" tab: for the frame shown, which pixels of one image listened to each word of the prompt."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("attentionView")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        top = QHBoxLayout()
        top.addWidget(QLabel("Image"))
        self.image_spin = QSpinBox()
        self.image_spin.setObjectName("attentionImageSpin")
        self.image_spin.setRange(1, 1)
        self.image_spin.setToolTip("Which sample of the batch to show the maps of")
        top.addWidget(self.image_spin)
        top.addStretch(1)
        lay.addLayout(top)
        self.note = QLabel(NOTE)
        self.note.setObjectName("attentionNote")
        self.note.setWordWrap(True)
        lay.addWidget(self.note)
        self.holder = QWidget()
        self.grid = QGridLayout(self.holder)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(3)
        self.grid.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.scroll = QScrollArea()
        self.scroll.setObjectName("attentionScroll")
        self.scroll.setWidget(self.holder)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.viewport().installEventFilter(self)  # re-flow the tiles to the space they really have
        lay.addWidget(self.scroll, 1)
        self.scale = ColourScale()
        lay.addWidget(self.scale)
        self.tiles: list[tuple[QLabel, QLabel]] = []
        self._frame = None
        self._cols = None
        self.image_spin.valueChanged.connect(lambda _v: self.show_frame(self._frame))
        self.setToolTip("Cross-attention weight of each pixel on each word, averaged over heads and over every "
                        "cross-attention layer (upsampled to the image), at the step that made this frame.")
        # its tiles must not set the quadrant's size: the pane grid decides it, and the tiles scroll
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.show_frame(None)

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QEvent.Type.Resize and self._frame is not None:
            self.show_frame(self._frame)
        return False

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self.scale.caption.setVisible(event.size().width() > 200)  # "0 ▬ max" alone in a narrow quadrant

    def clear(self, note: str = NOTE) -> None:
        """No maps (another model, or a run without a prompt): ``note`` says why."""
        self.note.setText(note)
        self.show_frame(None)

    def show_frame(self, frame) -> None:
        self._frame = frame
        att = getattr(frame, "attention", None) if frame is not None else None
        for img, cap in self.tiles:
            img.setVisible(att is not None)
            cap.setVisible(att is not None)
        self.note.setVisible(att is None)
        self.scale.setVisible(att is not None)
        if att is None:
            return
        n_img = att.maps.shape[0]
        self.image_spin.setMaximum(max(1, n_img))
        i = min(self.image_spin.value(), n_img) - 1
        base = crop(frame.x0, i, att.maps.shape[-1])  # the sample's x̂₀ under its maps, as DAAM overlays them
        tiles = [("sample", base)] + [(w, blend(base, heat(att.maps[i, k]))) for k, w in enumerate(att.words)]
        peaks = getattr(att, "peaks", None)
        self._ensure(len(tiles))
        fm = self.fontMetrics()
        widest = max(fm.horizontalAdvance(w) for w, _ in tiles) + 6  # every word whole under its map
        width = self.scroll.viewport().width() - 2
        cols, side = best_layout(len(tiles), width, self.scroll.viewport().height(), widest)
        cell = max(side, widest)
        if self._cols != (cols, len(tiles)):  # re-flow the tiles into the best column count
            self._cols = (cols, len(tiles))
            for k, (img, cap) in enumerate(self.tiles):
                self.grid.removeWidget(img)
                self.grid.removeWidget(cap)
                if k < len(tiles):
                    self.grid.addWidget(img, 2 * (k // cols), k % cols, Qt.AlignmentFlag.AlignHCenter)
                    self.grid.addWidget(cap, 2 * (k // cols) + 1, k % cols, Qt.AlignmentFlag.AlignHCenter)
        for k, (img, cap) in enumerate(self.tiles):
            if k >= len(tiles):
                img.hide()
                cap.hide()
                continue
            word, picture = tiles[k]
            img.setFixedSize(side, side)
            img.setPixmap(pixmap(picture, side))
            cap.setFixedWidth(cell)
            cap.setText(word)
            tip = "The sample's predicted x̂₀, under every map" if k == 0 else \
                word_tip(att.words, k - 1, None if peaks is None else float(peaks[i, k - 1]))
            img.setToolTip(tip)
            cap.setToolTip(tip)
            img.show()
            cap.show()

    def _ensure(self, n: int) -> None:
        while len(self.tiles) < n:
            img, cap = QLabel(), QLabel()
            img.setAlignment(Qt.AlignmentFlag.AlignCenter)
            cap.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
            cap.setFixedHeight(CAPTION_H)
            cap.setObjectName(f"attentionWord{len(self.tiles)}")
            self.tiles.append((img, cap))
            self._cols = None
