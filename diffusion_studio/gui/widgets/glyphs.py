"""Letters with combining marks (x̂₀, ε̃, β̃) drawn where they belong in Qt rich text.

Qt 6.11 with DejaVu Sans Book (the usual Linux sans) places a combining mark by the font's mark anchors wrongly for
many letters: the hat of x̂ is drawn about a line too high, so in a wrapped label it lands on a letter of the line
above ("froḿ t", "ônce") and on one line it is cut off. The same font's oblique and bold faces place the marks right,
and a letter with a mark is a variable anyway: ``rich_marks`` sets each such letter in italics, which keeps the mark
and its letter one glyph cluster in one font run on every platform."""
from __future__ import annotations

import html
import re

COMBINING = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
# a letter (not a tag's "<" or ">", not a space) followed by one or more combining marks, and not already in <i>
MARKED = re.compile(rf"(?<!<i>)([^\s<>&{COMBINING}][{COMBINING}]+)")


def has_marks(text: str) -> bool:
    return re.search(f"[{COMBINING}]", text) is not None


def rich_marks(html_text: str) -> str:
    """``html_text`` (Qt rich text) with every letter that carries a combining mark wrapped in <i>…</i>."""
    return MARKED.sub(r"<i>\1</i>", html_text)


class MarkedToolTips:
    """An application event filter that shows a tooltip carrying marked letters (x̂₀ …) through ``rich_marks``, so
    the ~40 tooltips that name x̂₀ draw its hat on the x without each string being rewritten (a plain tooltip is
    escaped into rich text first, which also wraps a long one)."""

    _installed: "MarkedToolTips | None" = None

    def __init__(self):
        from PySide6.QtCore import QObject

        class _Filter(QObject):
            def eventFilter(self, obj, event):  # noqa: N802 (Qt's name)
                return show_marked_tooltip(obj, event)

        self.filter = _Filter()


def show_marked_tooltip(obj, event) -> bool:
    """Handle a QEvent.ToolTip whose widget's tooltip has marked letters (True: shown here)."""
    from PySide6.QtCore import QEvent
    from PySide6.QtGui import Qt
    from PySide6.QtWidgets import QToolTip, QWidget

    if event.type() != QEvent.Type.ToolTip or not isinstance(obj, QWidget):
        return False
    tip = obj.toolTip()
    if not tip or not MARKED.search(tip):
        return False
    rich = tip if Qt.mightBeRichText(tip) else f"<p>{html.escape(tip)}</p>"
    QToolTip.showText(event.globalPos(), rich_marks(rich), obj)
    return True


def install_marked_tooltips(app=None) -> None:
    """Install the tooltip filter on ``app`` (the running QApplication) once: every window may call it."""
    if app is None:
        from PySide6.QtWidgets import QApplication

        app = QApplication.instance()
    if app is None or MarkedToolTips._installed is not None:
        return
    MarkedToolTips._installed = MarkedToolTips()
    app.installEventFilter(MarkedToolTips._installed.filter)
