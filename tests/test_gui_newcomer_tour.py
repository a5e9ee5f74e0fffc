"""Issue 24, the tour's part: a combining mark stays on its letter (10), equations never shrink below a readable size
(11), the posterior step's "Show me" zooms to where β̃_t and β_t part (12), the tour's new steps (the bound,
guidance and prompts, latent diffusion, the Min-SNR-5 weighting), "one seed prints …" explained, and no raw TeX in
titles, texts and tooltips. Each test drives the real window the way a learner does."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter
from PySide6.QtWidgets import QAbstractButton, QApplication, QLabel, QWidget

from diffusion_studio.core.diffusion.objective import loss_weights
from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.core.train.recipe import RECIPE
from diffusion_studio.gui.tour.data import HIGHLIGHTS, load_tour
from diffusion_studio.gui.tour.equations import EquationLabel, EquationScroll
from diffusion_studio.gui.tour.panel import start_tour
from diffusion_studio.gui.widgets.glyphs import COMBINING, rich_marks

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZES = [(1280, 800), (1024, 700)]
MARK = re.compile(f"[{COMBINING}]")


def step_index(win, sid: str) -> int:
    return [s.id for s in win.learn_dock.panel.steps].index(sid)


def settle(qtbot, ms: int = 100) -> None:
    QApplication.processEvents()
    qtbot.wait(ms)   # (layout passes, not synchronisation: nothing runs in the background here)


# ---- 10: a combining mark is drawn on its own letter --------------------------------------------------------------
def render(html: str, width: float, point_size: float) -> tuple[np.ndarray, "QTextDocument"]:
    """``html`` laid out and drawn by Qt's text engine (what a QLabel uses) on white: the dark pixels, the document."""
    from PySide6.QtGui import QTextDocument

    doc = QTextDocument()
    f = QFont(QApplication.font())
    f.setPointSizeF(point_size)
    doc.setDefaultFont(f)
    doc.setDocumentMargin(40)   # room all round: a mark drawn a line too high is still drawn, and caught
    doc.setHtml(html)
    doc.setTextWidth(width)
    size = doc.size().toSize()
    img = QImage(size, QImage.Format.Format_RGB32)
    img.fill(QColor("white"))
    painter = QPainter(img)
    doc.drawContents(painter)
    painter.end()
    h, w = img.height(), img.width()
    arr = np.frombuffer(img.constBits(), np.uint8, count=img.bytesPerLine() * h).reshape(h, img.bytesPerLine())
    rgb = arr[:, :w * 4].reshape(h, w, 4)[..., :3].astype(int)
    return rgb.sum(axis=2) < 3 * 180, doc


def letter_box(doc, index: int) -> tuple[float, float, float, float]:
    """(left, right, top, bottom) of the character at ``index`` of the document's plain text and the next."""
    block = doc.findBlock(index)
    layout = block.layout()
    pos = index - block.position()
    line = layout.lineForTextPosition(pos)
    origin = layout.position()
    left = origin.x() + line.cursorToX(pos)[0]
    right = origin.x() + line.cursorToX(pos + 2)[0]
    top = origin.y() + line.y()
    return left, right, top, top + line.height()


def assert_marks_on_their_letters(html: str, width: float, point_size: float, word: str) -> None:
    marked, doc = render(html, width, point_size)
    bare, _ = render(html.replace(word, word[0]), width, point_size)
    assert marked.shape == bare.shape                         # a mark has no width: nothing else moved
    mark = marked & ~bare
    rows, cols = np.nonzero(mark)
    assert rows.size >= 3, f"no mark drawn for {word!r}"
    text = doc.toPlainText()
    boxes = [letter_box(doc, m.start()) for m in re.finditer(re.escape(word), text)]
    assert boxes
    for r, c in zip(rows, cols):   # every pixel of the marks lies over one of the marked letters, in its own line
        assert any(left - 3 <= c <= right + 3 and top - 3 <= r <= top + 0.75 * (bottom - top)
                   for left, right, top, bottom in boxes), (word, (r, c), boxes)


@pytest.mark.parametrize("word", ["x\u0302", "\u03b5\u0302", "\u03b5\u0303", "\u03b2\u0303", "v\u0302"])
def test_a_mark_is_drawn_on_its_letter(qapp, word):
    html = rich_marks(f"jumps from t to the predicted {word}<sub>0</sub> once")
    assert_marks_on_their_letters(html, 2000, 18, word)


@pytest.mark.parametrize("size", SIZES)
def test_the_ddim_step_wrapped_in_the_dock_draws_its_hat_on_the_x(qtbot, window, size):
    """'froḿ t': in the step's wrapped text the hat of x̂₀ landed on a letter of the line above."""
    window.resize(*size)
    start_tour(window, step_index(window, "ddim"))
    settle(qtbot)
    lab = window.learn_dock.panel.text_label
    assert "x\u0302" in lab.text()
    assert_marks_on_their_letters(lab.text(), lab.width(), QApplication.font().pointSizeF(), "x\u0302")


def test_the_tour_and_its_titles_set_marked_letters_so_they_draw_right(qtbot, window):
    start_tour(window)
    panel = window.learn_dock.panel
    marked = [i for i, s in enumerate(panel.steps) if MARK.search(s.text + s.title)]
    assert marked, "the tour has letters with marks (x̂₀, β̃_t): the test needs one"
    for i in marked:
        panel.go(i)
        for lab in (panel.text_label, panel.title_label):
            shown = lab.text()
            for m in re.finditer(f"[^{COMBINING}][{COMBINING}]+", shown):   # each in italics: drawn right
                assert shown[max(0, m.start() - 3):m.start()] == "<i>", (panel.step.id, shown[m.start() - 10:])
                word = m.group()
                assert_marks_on_their_letters(shown, lab.width(), lab.font().pointSizeF(), word)


# ---- 11: equations stay readable, wrapped or scrolled --------------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
def test_tour_equations_never_shrink_below_a_readable_size(qtbot, window, size):
    window.resize(*size)
    start_tour(window)
    panel = window.learn_dock.panel
    settle(qtbot)
    for i, step in enumerate(panel.steps):
        panel.go(i)
        settle(qtbot, 30)
        assert len(panel.equation_labels) == len(step.equations)
        for lab, box in zip(panel.equation_labels, panel.equation_boxes):
            assert isinstance(lab, EquationLabel) and isinstance(box, EquationScroll)
            natural_h = lab.natural_height
            shown_h = lab.pixmap().height() / lab.pixmap().devicePixelRatio()
            assert shown_h >= EquationLabel.MIN_SCALE * natural_h - 1, (step.id, shown_h, natural_h)
            assert lab.scale >= EquationLabel.MIN_SCALE
            # the glyphs: a 12 pt equation at 100 dpi has 16.7 px em; three quarters of it is 12.5 px, the dock's text
            assert lab.scale * 12 * 100 / 72 >= 12
            view = box.viewport().width()
            assert box.width() <= panel.width()                              # inside the dock
            if lab.width() > view + 1:                                       # wider: scrolled, all of it reachable
                bar = box.horizontalScrollBar()
                assert bar.isVisible() and bar.maximum() >= lab.width() - view - 1, (step.id, bar.maximum())
            else:
                assert lab.width() <= view + 1
    assert window.learn_dock.width() < size[0] / 3


# ---- 12: the posterior step zooms to where β̃_t is below β_t ------------------------------------------------------
def scene_point(plot, x: float, y: float):
    p = plot.vb.mapViewToScene(pg_point(x, y))
    return p.x(), p.y()


def pg_point(x, y):
    from PySide6.QtCore import QPointF
    return QPointF(x, y)


@pytest.mark.parametrize("size", SIZES)
def test_the_posterior_show_me_makes_beta_tilde_visibly_smaller_at_t5(qtbot, window, size):
    window.resize(*size)
    start_tour(window, step_index(window, "posterior"))
    panel = window.learn_dock.panel
    qtbot.mouseClick(panel.show_button, Qt.MouseButton.LeftButton)
    settle(qtbot)
    sp = window.schedule
    plot = sp.plots.plot_items[0]
    assert sp.log_beta.isChecked() and window.state.paper_t == 5
    (x0, x1), (y0, y1) = plot.viewRange()
    assert x0 <= 1 and 5 < x1 <= 40, (x0, x1)                     # zoomed in on the first steps, t = 5 inside
    # the formula, independently: β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t)
    s = NoiseSchedule.create("linear", 1000)
    beta, abar = s.betas.double(), s.alpha_bars.double()
    b5 = float(beta[4])
    bt5 = float(beta[4] * (1 - abar[3]) / (1 - abar[4]))
    assert y0 <= math.log10(bt5) and math.log10(b5) <= y1
    xa, ya = scene_point(plot, 5, math.log10(b5))
    _, yb = scene_point(plot, 5, math.log10(bt5))
    x_one, _ = scene_point(plot, 1, math.log10(b5))
    assert xa - x_one >= 40, "t = 1 and t = 5 are pixels apart: not zoomed"
    assert yb - ya >= 8, f"β̃_5 is only {yb - ya:.1f} px below β_5"
    # the β axis is labelled there (pyqtgraph dropped every label of the dense 1…9 × 10ᵏ ticks)
    from PySide6.QtGui import QImage as _I
    img = _I(10, 10, _I.Format.Format_ARGB32)
    painter = QPainter(img)
    try:
        texts = plot.getAxis("left").generateDrawSpecs(painter)[2]
    finally:
        painter.end()
    assert len(texts) >= 2, texts
    # what the step says about the numbers is what the formula gives
    text = panel.step.text
    assert abs(bt5 / b5 - 0.75) < 0.02 and f"{bt5 * 1e4:.2f}" in text and f"{b5 * 1e4:.2f}" in text
    assert float(beta[1] * (1 - abar[0]) / (1 - abar[1])) < 0.5 * float(beta[1]) and "under half" in text
    # the schedule step after it shows the whole 0 … T again
    start_tour(window, step_index(window, "schedule"))
    qtbot.mouseClick(panel.show_button, Qt.MouseButton.LeftButton)
    settle(qtbot)
    (x0, x1), _ = plot.viewRange()
    assert x0 <= 0 and x1 >= 1000
    assert plot.getAxis("left")._tickLevels is None


# ---- the tour covers the whole app -----------------------------------------------------------------------------------
def test_the_tour_goes_on_past_fid_to_the_bound_guidance_latents_and_the_loss_weighting(qtbot, window):
    steps = {s.id: s for s in load_tour()}
    want = {"bound": ("likelihood", "likelihood.terms_plot"), "guidance": ("sampling", "sampling.tabs"),
            "latent": ("autoencoder", "autoencoder.latent_pane"),
            "min_snr": ("training", "training.form.objective_combo")}
    for sid, (tab, highlight) in want.items():
        assert sid in steps and ("tab", tab) in steps[sid].show and steps[sid].highlight == highlight
        start_tour(window, step_index(window, sid))
        panel = window.learn_dock.panel
        qtbot.mouseClick(panel.show_button, Qt.MouseButton.LeftButton)
        settle(qtbot, 30)
        assert window.tabs.currentWidget() is getattr(window, tab)
        target = HIGHLIGHTS[highlight](window)
        assert panel.highlighted is target and target.isVisible()
        qtbot.waitUntil(lambda: panel.highlighter.isVisible(), timeout=30_000)
    # guidance: Show me loads the shipped text model, whose Attention tab then shows
    sp = window.sampling
    start_tour(window, step_index(window, "guidance"))
    qtbot.mouseClick(window.learn_dock.panel.show_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: sp.loaded is not None and sp.loaded.name.endswith("shapes")
                    and sp.tabs.tabText(sp.tabs.currentIndex()) == "Attention", timeout=60_000)
    assert sp.tabs.currentWidget().isVisible()
    if sp.running:
        sp.stop()
    qtbot.waitUntil(lambda: not window.pool.running, timeout=60_000)
    # the weighting the step describes is the one the default recipe trains with, and its formula is the code's
    assert (RECIPE["prediction"], RECIPE["loss_weighting"], RECIPE["snr_gamma"]) == ("eps", "min_snr", 5.0)
    text = steps["min_snr"].text
    assert "Min-SNR-5" in text and "min(SNR, 5)/SNR" in text
    s = NoiseSchedule.create("linear", 1000)
    snr = s.alpha_bars.double() / (1 - s.alpha_bars.double())
    w = loss_weights("eps", "min_snr", snr, 5.0)
    assert torch.allclose(w, torch.clamp(snr, max=5.0) / snr)
    last_weighted = int(torch.nonzero(w < 1 - 1e-9).max()) + 1           # the paper's t
    assert f"every t above {last_weighted}" in text and f"5/{snr[0]:.0f}" in text
    # the guidance step's formula is the code's: ε̃ = ε_∅ + w (ε_c − ε_∅), w = 0 and 1 as the text says
    g = steps["guidance"]
    assert any(r"+ w\," in e and r"\varnothing" in e for e in g.equations)
    assert "w = 0 ignores the prompt" in g.text and "w = 1 is the conditional model alone" in g.text


def test_one_seed_prints_is_explained_and_never_read_as_a_random_seed():
    steps = load_tour()
    first = steps[0].text
    assert "the seeds" in first and "source texts" in first and "not a random seed" in first
    for s in steps:
        assert "one seed prints" not in s.text          # "misprints" says what it is
    schedule = next(s for s in steps if s.id == "schedule")
    assert "0.002" in schedule.text and "0.02" in schedule.text and "misprint" in schedule.text


# ---- no raw TeX where a learner reads --------------------------------------------------------------------------------
RAW_TEX = re.compile(r"_\{|\^\{|\\[A-Za-z]+")


def visible_strings(win) -> list[tuple[str, str]]:
    out = []
    for w in win.findChildren(QWidget):
        name = w.objectName() or type(w).__name__
        if w.toolTip():
            out.append((f"{name}.toolTip", w.toolTip()))
        if isinstance(w, (QLabel, QAbstractButton)) and w.text():
            out.append((f"{name}.text", w.text()))
    for a in win.findChildren(type(win.menuBar().actions()[0])):
        for what in ("text", "toolTip", "statusTip"):
            v = getattr(a, what)()
            if v:
                out.append((f"action.{what}", v))
    return out


def test_no_raw_tex_in_titles_texts_and_tooltips(qtbot, window):
    steps = load_tour()
    for s in steps:
        assert not RAW_TEX.search(s.title), s.title
        assert not RAW_TEX.search(s.text), s.id
        assert "_" not in s.title, s.title                         # q(xₜ₋₁ | xₜ, x₀), αₜ: Unicode, no x_t
    start_tour(window)
    panel = window.learn_dock.panel
    for i in range(len(panel.steps)):
        panel.go(i)
        for lab in panel.equation_labels:                          # the TeX is a right-click away, not a tooltip
            assert not RAW_TEX.search(lab.toolTip())
        assert not RAW_TEX.search(panel.title_label.text())
        assert not RAW_TEX.search(panel.step_combo.itemText(i))
    for tab in (window.forward, window.training, window.sampling, window.likelihood, window.autoencoder):
        window.show_panel(tab)
        settle(qtbot, 20)
    bad = [(where, text[:80]) for where, text in visible_strings(window) if RAW_TEX.search(text)]
    assert bad == []


def test_the_equation_tex_is_copied_with_a_right_click(qtbot, window):
    start_tour(window, step_index(window, "posterior"))
    lab = window.learn_dock.panel.equation_labels[0]
    (copy,) = lab.actions()
    copy.trigger()
    assert QApplication.clipboard().text() == window.learn_dock.panel.step.equations[0]
    assert QColor  # (imported for the pixel helpers)


def test_a_tooltip_naming_x_hat_draws_the_hat_on_the_x(qtbot, window):
    """The same mark, in the ~40 tooltips that name x̂₀ (plain text there): shown through the app's tooltip filter."""
    from PySide6.QtCore import QEvent, QPoint
    from PySide6.QtGui import QHelpEvent
    from PySide6.QtWidgets import QToolTip

    window.show_panel(window.sampling)
    widget = next(w for w in window.sampling.findChildren(QWidget) if "x\u0302" in w.toolTip() and w.isVisible())
    assert "<i>x\u0302" not in widget.toolTip()                   # the string itself is as its author wrote it
    event = QHelpEvent(QEvent.Type.ToolTip, QPoint(5, 5), widget.mapToGlobal(QPoint(5, 5)))
    QApplication.sendEvent(widget, event)
    qtbot.waitUntil(QToolTip.isVisible, timeout=30_000)
    shown = QToolTip.text()
    assert "<i>x\u0302</i>" in shown
    assert_marks_on_their_letters(shown, 400, QApplication.font().pointSizeF(), "x\u0302")
    QToolTip.hideText()
