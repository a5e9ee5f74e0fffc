"""Equations rendered at run time with matplotlib's mathtext (shipped as a dependency, nothing fetched) into QImages."""
from __future__ import annotations

import io
from functools import lru_cache

from PySide6.QtGui import QImage


class EquationError(ValueError):
    """An equation mathtext cannot parse; the message names the equation."""


@lru_cache(maxsize=128)
def render_png(tex: str, fontsize: float = 13.0, color: str = "#202020", dpi: int = 100) -> bytes:
    """PNG bytes of ``$tex$`` (mathtext, a TeX subset) on a transparent background."""
    import logging

    import matplotlib
    from matplotlib import mathtext
    from matplotlib.font_manager import FontProperties

    logging.getLogger("matplotlib.mathtext").setLevel(logging.WARNING)  # "substituting symbol N" notes, per glyph

    buf = io.BytesIO()
    try:
        with matplotlib.rc_context({"savefig.transparent": True}):  # no white box on the dock's background
            mathtext.math_to_image(f"${tex}$", buf, prop=FontProperties(size=fontsize), dpi=dpi, format="png",
                                   color=color)
    except ValueError as exc:
        raise EquationError(f"cannot render equation {tex!r}: {str(exc).splitlines()[0]}") from None
    return buf.getvalue()


def render_equation(tex: str, fontsize: float = 13.0, color: str = "#202020", dpi: int = 100) -> QImage:
    """A QImage of the equation (ARGB, transparent around the glyphs)."""
    img = QImage.fromData(render_png(tex, fontsize, color, dpi), "PNG")
    if img.isNull():
        raise EquationError(f"cannot render equation {tex!r}")
    return img
