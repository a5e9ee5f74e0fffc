"""Equations rendered at run time with matplotlib's mathtext (shipped as a dependency, nothing fetched) into QImages."""
from __future__ import annotations

import io
import time
from functools import lru_cache

from PySide6.QtGui import QImage

# An equation is data (the tour file is the user's to edit): these bound what one may cost. mathtext's parser is
# recursive (400 nested \frac{ is a RecursionError) and linear in the length (20,000 terms took ~40 s); 500
# characters lay out in about 0.25 s, and the tour's longest equation has 182.
MAX_EQUATION_CHARS = 500
MAX_EQUATION_DEPTH = 20          # nested groups: { [ ( opened and not yet closed
MAX_LAYOUT_SECONDS = 2.0         # a layout slower than this is not rasterised (and then cached) at all
MAX_WIDTH_PX, MAX_HEIGHT_PX = 8000, 2000   # the image at the dpi asked for (\hspace{100000} is 100,000 pt wide)
OPENERS, CLOSERS = frozenset("{[("), frozenset("}])")


class EquationError(ValueError):
    """An equation mathtext cannot parse; the message names the equation."""


def _name(tex: str) -> str:
    return repr(tex if len(tex) <= 60 else tex[:57] + "…")


def short_repr(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def nesting_depth(tex: str) -> int:
    """The deepest nesting of { [ ( in ``tex`` (a count, not a parse: unbalanced closers never go below 0)."""
    depth = deepest = 0
    for ch in tex:
        if ch in OPENERS:
            depth += 1
            deepest = max(deepest, depth)
        elif ch in CLOSERS and depth:
            depth -= 1
    return deepest


def equation_problem(tex) -> str | None:
    """Why ``tex`` may not be rendered ("longer than …", "nested …"), or None; cheap, and needs no matplotlib."""
    if not isinstance(tex, str) or not tex.strip():
        return "must be a non-empty string"
    if len(tex) > MAX_EQUATION_CHARS:
        return f"{len(tex):,} characters is longer than an equation may be ({MAX_EQUATION_CHARS})"
    if "$" in tex:
        return "must not contain $ (the equation is put between $…$ for you)"
    depth = nesting_depth(tex)
    if depth > MAX_EQUATION_DEPTH:
        return f"nested {depth} deep (at most {MAX_EQUATION_DEPTH} {{ [ ( groups inside each other)"
    return None


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


@lru_cache(maxsize=128)
def render_png(tex: str, fontsize: float = 13.0, color: str = "#202020", dpi: int = 100) -> bytes:
    """PNG bytes of ``$tex$`` (mathtext, a TeX subset) on a transparent background; EquationError for anything that
    is not a small, well-formed equation (too long, too deep, too large an image, too slow, or unparsable)."""
    problem = equation_problem(tex)
    if problem is not None:
        raise EquationError(f"cannot render equation {_name(tex) if isinstance(tex, str) else short_repr(tex)}: "
                            f"{problem}")
    import logging

    import matplotlib
    from matplotlib import figure, mathtext
    from matplotlib.font_manager import FontProperties

    # "substituting symbol N" notes and missing glyphs, one line each: the picture shows them well enough
    logging.getLogger("matplotlib.mathtext").setLevel(logging.ERROR)

    prop = FontProperties(size=fontsize)
    buf = io.BytesIO()
    start = time.monotonic()
    try:  # what math_to_image does, with the checks between laying out and drawing
        width, height, depth, _, _ = mathtext.MathTextParser("path").parse(f"${tex}$", dpi=72, prop=prop)
        took = time.monotonic() - start
        if took > MAX_LAYOUT_SECONDS:
            raise EquationError(f"took {took:.1f} s to lay out (at most {MAX_LAYOUT_SECONDS:g} s)")
        w_px, h_px = width * dpi / 72.0, height * dpi / 72.0
        if not (0 < w_px <= MAX_WIDTH_PX and 0 < h_px <= MAX_HEIGHT_PX):
            raise EquationError(f"{w_px:,.0f} × {h_px:,.0f} pixels is larger than an equation may be "
                                f"({MAX_WIDTH_PX} × {MAX_HEIGHT_PX})")
        with matplotlib.rc_context({"savefig.transparent": True}):  # no white box on the dock's background
            fig = figure.Figure(figsize=(width / 72.0, height / 72.0))
            fig.text(0, depth / height, f"${tex}$", fontproperties=prop, color=color)
            fig.savefig(buf, dpi=dpi, format="png")
    except EquationError as exc:
        raise EquationError(f"cannot render equation {_name(tex)}: {exc}") from None
    except Exception as exc:  # ValueError from the parser, RecursionError, a font or colour problem, MemoryError
        raise EquationError(f"cannot render equation {_name(tex)}: {_first_line(exc)}") from None
    return buf.getvalue()


def render_equation(tex: str, fontsize: float = 13.0, color: str = "#202020", dpi: int = 100) -> QImage:
    """A QImage of the equation (ARGB, transparent around the glyphs)."""
    if not isinstance(tex, str):  # (render_png's cache needs a hashable key)
        raise EquationError(f"cannot render equation {short_repr(tex)}: not a string")
    img = QImage.fromData(render_png(tex, fontsize, color, dpi), "PNG")
    if img.isNull():
        raise EquationError(f"cannot render equation {_name(tex)}")
    return img
