"""The Learn dock: a guided tour through the seeds' equations, read from resources/tour.json and run by generic
code. Each step shows its equations (rendered by matplotlib's mathtext), a few sentences and a "Show me" button that
puts the app into the state the step talks about and outlines the widget to look at."""
from __future__ import annotations

import html
import math
import time

import torch

from PySide6.QtCore import QEvent, QObject, QRect, Qt, Slot
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import (QComboBox, QDockWidget, QHBoxLayout, QLabel, QMainWindow, QPushButton, QScrollArea,
                               QStatusBar, QVBoxLayout, QWidget)

from ...core.diffusion.schedule import NoiseSchedule
from ..widgets.glyphs import rich_marks
from .equations import EquationLabel, EquationScroll
from ..widgets.mathtext import EquationError, render_equation
from .data import ACTIONS, DOCKS, HIGHLIGHTS, TABS, TourError, TourStep, read_tour

HIGHLIGHT_COLOR = "#ff8c1a"
STEP_RENDER_SECONDS = 3.0  # a step's equations after this long are shown as their TeX (each is bounded: mathtext.py)


class Highlighter(QWidget):
    """An orange outline drawn over a widget of the main window (clicks pass through); it follows the widget as it
    moves or resizes and stays until another is highlighted or ``clear``."""

    def __init__(self, window: QMainWindow):
        super().__init__(window)
        self.setObjectName("tourHighlight")
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.setAttribute(Qt.WidgetAttribute.WA_NoSystemBackground)
        self.target: QWidget | None = None
        self.hide()

    def show_on(self, widget: QWidget | None) -> None:
        if self.target is not None:
            self.target.removeEventFilter(self)
        self.target = widget
        if widget is None:
            self.hide()
            return
        widget.installEventFilter(self)
        self._place()

    def clear(self) -> None:
        self.show_on(None)

    def _place(self) -> None:
        w = self.target
        if w is None or not w.isVisible():
            self.hide()
            return
        top_left = w.mapTo(self.parentWidget(), w.rect().topLeft())
        self.setGeometry(QRect(top_left, w.size()).adjusted(-3, -3, 3, 3))
        self.show()
        self.raise_()

    def eventFilter(self, obj, event) -> bool:
        if obj is self.target and event.type() in (QEvent.Type.Move, QEvent.Type.Resize, QEvent.Type.Show,
                                                   QEvent.Type.Hide):
            self._place()
        return False

    def paintEvent(self, _event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setPen(QPen(QColor(HIGHLIGHT_COLOR), 3))
        p.drawRoundedRect(self.rect().adjusted(2, 2, -2, -2), 5, 5)
        p.end()


def tick_text(v: float) -> str:
    """0.002, or 2e-4 below 10⁻³: short, for the β axis is 42 px wide and pyqtgraph leaves out a label wider."""
    if v >= 1e-3:
        return f"{v:g}"
    m, e = f"{v:.0e}".split("e")
    return f"{m}e{int(e)}"


class TourActions(QObject):
    """The verbs a tour step's "show" list may use, each a small call on the window's public parts (the arguments
    are checked when the tour is read: data.py's ACTIONS; the names are looked up in its allow-lists)."""

    def __init__(self, window):
        super().__init__(window)
        self.win = window
        self._pending_sample = None
        self._after_load: dict | None = None
        self._ticks_hooked = False

    def run(self, actions) -> None:
        for name, arg in actions:
            if name not in ACTIONS:  # (a step made in code: the loader lets only these through)
                raise ValueError(f"unknown action {name!r}")
            getattr(self, f"do_{name}")(arg)

    def do_tab(self, name: str) -> None:
        self.win.show_panel(TABS[name](self.win))

    def do_dock(self, name: str) -> None:
        dock = DOCKS[name](self.win)
        dock.show()
        dock.raise_()

    def do_image(self, which: str) -> None:
        if self.win.state.image is None and which == "sample":
            self.win.images.load_builtin_sample()

    def do_schedule(self, spec: dict) -> None:
        params = {k: float(v) for k, v in spec.items() if k not in ("kind", "T")}
        self.win.state.set_schedule(NoiseSchedule.create(spec.get("kind", "linear"), int(spec.get("T", 1000)),
                                                         **params))

    def do_t(self, paper_t: int) -> None:
        self.win.state.set_t(min(int(paper_t), self.win.state.schedule.T) - 1)

    def do_chain(self, on: bool) -> None:
        self.win.forward.chain_check.setChecked(bool(on))

    def do_colour_scale(self, value: float) -> None:
        combo = self.win.forward.extras.scale_combo
        i = combo.findData(float(value))
        if i >= 0:
            combo.setCurrentIndex(i)

    def do_log_beta(self, on: bool) -> None:
        self.win.schedule.log_beta.setChecked(bool(on))

    def do_t_range(self, span) -> None:
        """Zoom the Schedule dock's t axis to [first, last] (the paper's t), the β plot's y range fitted to β_t and
        β̃_t there, with a few labelled ticks; false: all of 0 … T again."""
        sp = self.win.schedule
        plots = sp.plots
        beta_axis = plots.plot_items[0].getAxis("left")
        if span is False:
            beta_axis.setTicks(None)
            plots.set_x_extent(sp.schedule.T, sp.normalise.isChecked())
            return
        s = sp.schedule
        lo, hi = (max(1, min(int(x), s.T)) for x in span)
        if lo >= hi:
            lo, hi = 1, s.T
        div = float(s.T) if sp.normalise.isChecked() else 1.0
        plots.plot_items[0].setXRange(lo / div, hi / div, padding=0.02)
        shown = torch.cat([s.betas[lo - 1:hi], s.posterior_variance[lo - 1:hi]]).double()
        shown = shown[shown > 0]
        if not sp.log_beta.isChecked() or shown.numel() == 0:
            return
        y0, y1 = math.log10(float(shown.min())), math.log10(float(shown.max()))
        pad = 0.06 * max(y1 - y0, 0.1)
        plots.plot_items[0].setYRange(y0 - pad, y1 + pad, padding=0)
        # pyqtgraph labels every 1…9 × 10ᵏ inside a decade, and drops them all when they do not fit: a few instead
        ticks = [(math.log10(v), tick_text(v)) for e in range(-8, 1) for m in (1, 2, 5) for v in (m * 10.0 ** e,)
                 if y0 - pad <= math.log10(v) <= y1 + pad]
        beta_axis.setTicks([ticks] if len(ticks) >= 2 else None)
        if not self._ticks_hooked:  # the fixed ticks are log10 positions: they go when log β or the zoom does
            self._ticks_hooked = True
            sp.log_beta.toggled.connect(lambda _on: beta_axis.setTicks(None))

    def do_compare(self, spec) -> None:
        sp = self.win.schedule
        if spec is False:
            sp.compare.setChecked(False)
            return
        spec = {} if spec is True else spec
        params = {k: float(v) for k, v in spec.items() if k not in ("kind", "T")}
        sp.compare_form.set_values(spec.get("kind", "cosine"), int(spec.get("T", sp.schedule.T)), params)
        sp.compare.setChecked(True)
        sp.compare_form.validate()

    def do_sample(self, spec: dict) -> None:
        sp = self.win.sampling
        if sp.loaded is None and not sp.chooser.is_loading:
            sp.chooser.select_default()
        if sp.chooser.is_loading:
            # The model arrives later, and the tab's first look may start its own quick run as it does: configure
            # and start once that has happened (queued: after the panel has handled the load), stopping that run.
            if self._after_load is None:
                sp.model_loaded.connect(self._on_loaded, Qt.ConnectionType.QueuedConnection)
            self._after_load = spec
            return
        if sp.loaded is None:
            self.win.state.message.emit("The tour's sampling step needs a model: open a checkpoint or train one")
            return
        c = sp.controls
        c.select_sampler(spec.get("sampler", "ddim"), spec.get("variance", "beta_tilde"))
        if "steps" in spec:
            c.steps_spin.setValue(min(int(spec["steps"]), c.steps_spin.maximum()))
        if "eta" in spec:
            c.eta_spin.setValue(float(spec["eta"]))
        if "n" in spec:
            c.n_spin.setValue(int(spec["n"]))
        if sp.running:  # a run in progress: stop it and start this one when it has ended
            if self._pending_sample is None:
                self._pending_sample = sp.run_finished.connect(self._start_after_stop)
            sp.stop()
        else:
            sp.start()

    @Slot(object)
    def _on_loaded(self, _model) -> None:
        self.win.sampling.model_loaded.disconnect(self._on_loaded)
        spec, self._after_load = self._after_load, None
        if spec is not None:
            self.do_sample(spec)

    def _start_after_stop(self, _outcome: str) -> None:
        sp = self.win.sampling
        sp.run_finished.disconnect(self._start_after_stop)
        self._pending_sample = None
        sp.start()

    def do_model(self, name: str) -> None:
        """Sample from the shipped model ``name`` (as if picked in the Sampling tab's model list)."""
        chooser = self.win.sampling.chooser
        key = f"builtin:{name}"
        if name not in chooser.builtins:
            self.win.state.message.emit(f"The tour's step uses the shipped model {name!r}, which is not installed")
            return
        if key not in (chooser.current_key, chooser._pending):
            chooser.user_picked = True
            chooser.select(key)

    def do_sampling_tab(self, title: str) -> None:
        self.win.sampling.tabs.show_tab(title)


class LearnPanel(QWidget):
    """One step at a time: its number and title, equations, text, and Back · Show me · Next."""

    def __init__(self, window, steps: list[TourStep], parent: QWidget | None = None, problems=()):
        super().__init__(parent)
        self.win, self.steps, self.problems = window, steps, list(problems)
        self.actions = TourActions(window)
        self.highlighter = Highlighter(window)
        self.index = 0
        self.highlighted: QWidget | None = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        self.step_combo = QComboBox()
        self.step_combo.setObjectName("tourStepCombo")
        # a combo sizes itself to its longest step title, which made the dock wider than its place and cut the text
        self.step_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.step_combo.setMinimumContentsLength(12)
        for i, s in enumerate(steps):
            self.step_combo.addItem(f"{i + 1}. {s.title}")
        self.step_combo.currentIndexChanged.connect(self.go)
        lay.addWidget(self.step_combo)
        self.problems_label = QLabel("\n".join(self.problems))  # one line per step of tour.json left out
        self.problems_label.setObjectName("tourProblems")
        self.problems_label.setTextFormat(Qt.TextFormat.PlainText)
        self.problems_label.setWordWrap(True)
        self.problems_label.setStyleSheet(f"color: {HIGHLIGHT_COLOR}")
        self.problems_label.setVisible(bool(self.problems))
        lay.addWidget(self.problems_label)
        self.title_label = QLabel()
        self.title_label.setObjectName("tourTitle")
        self.title_label.setWordWrap(True)
        lay.addWidget(self.title_label)
        self.eq_box = QVBoxLayout()
        self.eq_box.setSpacing(6)
        lay.addLayout(self.eq_box)
        self.text_label = QLabel()
        self.text_label.setObjectName("tourText")
        self.text_label.setWordWrap(True)
        self.text_label.setTextFormat(Qt.TextFormat.RichText)
        lay.addWidget(self.text_label)
        row = QHBoxLayout()
        self.back_button = QPushButton("Back")
        self.back_button.setObjectName("tourBack")
        self.show_button = QPushButton("Show me")
        self.show_button.setObjectName("tourShowMe")
        self.show_button.setToolTip("Put the app in the state this step talks about and outline where to look")
        self.next_button = QPushButton("Next")
        self.next_button.setObjectName("tourNext")
        for b in (self.back_button, self.show_button, self.next_button):
            b.setMinimumWidth(60)  # the style's 80 each made the panel wider than the dock on a 1024 px screen
            row.addWidget(b)
        lay.addLayout(row)
        lay.addStretch(1)
        self.back_button.clicked.connect(lambda: self.go(self.index - 1))
        self.next_button.clicked.connect(lambda: self.go(self.index + 1))
        self.show_button.clicked.connect(self.show_me)
        self.equation_labels: list[QLabel] = []
        self.equation_boxes: list[QWidget] = []   # an EquationScroll around each label (an error: the label)
        self._shown_equations: int | None = None
        self.go(0)

    def _eq_color(self) -> str:
        return self.palette().windowText().color().name()

    def go(self, index: int) -> None:
        index = max(0, min(int(index), len(self.steps) - 1))
        self.index = index
        step = self.steps[index]
        if self.step_combo.currentIndex() != index:
            self.step_combo.setCurrentIndex(index)
        self.title_label.setText(rich_marks(f"<b>Step {index + 1} of {len(self.steps)}: "
                                            f"{html.escape(step.title)}</b>"))
        self.text_label.setText(rich_marks(step.text))
        self.back_button.setEnabled(index > 0)
        self.next_button.setEnabled(index < len(self.steps) - 1)
        self.highlighter.clear()
        self.highlighted = None
        self._shown_equations = None
        if self.isVisible():  # rendering (and importing matplotlib) waits until the dock is first shown
            self._render_equations()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self._shown_equations != self.index:
            self._render_equations()

    def _render_equations(self) -> None:
        step = self.step
        self._shown_equations = self.index
        for box in self.equation_boxes:
            self.eq_box.removeWidget(box)
            box.hide()  # until the deferred delete runs it would sit, unlaid-out, over the step combo
            box.deleteLater()
        self.equation_labels, self.equation_boxes = [], []
        start = time.monotonic()
        for tex in step.equations:
            try:
                if time.monotonic() - start > STEP_RENDER_SECONDS:
                    raise EquationError(f"not rendered (this step's equations took over {STEP_RENDER_SECONDS:g} s): "
                                        f"{tex[:200]}")
                img = render_equation(tex, fontsize=12.0, color=self._eq_color(), dpi=100 * EquationLabel.SCALE)
                lab = EquationLabel(img, tex)
                box: QWidget = EquationScroll(lab)
            except EquationError as exc:  # a typo in the tour file shows itself instead of breaking the tour
                lab = QLabel(str(exc))
                lab.setObjectName("tourEquationError")
                lab.setTextFormat(Qt.TextFormat.PlainText)
                lab.setWordWrap(True)
                box = lab
            self.eq_box.addWidget(box)
            self.equation_labels.append(lab)
            self.equation_boxes.append(box)

    @property
    def step(self) -> TourStep:
        return self.steps[self.index]

    def show_me(self) -> None:
        step = self.step
        try:
            self.actions.run(step.show)
            target = HIGHLIGHTS[step.highlight](self.win) if step.highlight else None
        except (AttributeError, KeyError, TypeError, ValueError, OverflowError) as exc:  # checked at load: not expected
            reason = (str(exc).splitlines() or [repr(exc)])[0][:200]
            self.win.state.message.emit(f"Tour step {step.id!r}: {reason}")
            return
        self.highlighted = target
        if target is not None:
            _scroll_into_view(target)
        self.highlighter.show_on(target)


def _scroll_into_view(widget) -> None:
    """Scroll every scroll area around ``widget`` (the Schedule dock scrolls when its plots need the room) so that
    the outline is drawn where the learner can see it."""
    from PySide6.QtWidgets import QScrollArea

    child, parent = widget, widget.parentWidget()
    while parent is not None:
        if isinstance(parent, QScrollArea) and parent.widget() is not None and parent.widget().isAncestorOf(child):
            parent.ensureWidgetVisible(child, 0, 0)
            child = parent
        parent = parent.parentWidget()


class LearnDock(QDockWidget):
    def __init__(self, window, steps: list[TourStep], problems=()):
        super().__init__("Learn", window)
        self.setObjectName("dock_learn")
        self.panel = LearnPanel(window, steps, problems=problems)
        scroll = QScrollArea()
        scroll.setWidget(self.panel)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWidget(scroll)
        self.visibilityChanged.connect(lambda on: None if on else self.panel.highlighter.clear())


class TourOffer(QWidget):
    """First launch only: "New here? Take the tour" in the status bar. Never modal, so nothing waits for it."""

    def __init__(self, start, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("tourOffer")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("New here?"))
        self.take = QPushButton("Take the tour")
        self.take.setObjectName("tourOfferTake")
        self.dismiss = QPushButton("Not now")
        self.dismiss.setObjectName("tourOfferDismiss")
        self.dismiss.setFlat(True)
        for b in (self.take, self.dismiss):
            row.addWidget(b)
        self.take.clicked.connect(lambda: (start(), self.hide()))
        self.dismiss.clicked.connect(self.hide)


def attach_tour(window) -> None:
    """Help ▸ Tour and the Learn dock (hidden until asked for), and the first-launch offer in the status bar. A step
    of tour.json that is broken is left out and named (the dock and the status bar); a tour file that cannot be
    used at all leaves the app without a tour and with one line saying why (Help ▸ Tour says it again)."""
    window.tour_offer = None
    try:
        tour = read_tour()
    except TourError as exc:
        window.learn_dock, window.tour_problem = None, str(exc)
        _add_tour_action(window)
        window.state.message.emit(str(exc))
        return
    dock = LearnDock(window, tour.steps, tour.problems)
    window.learn_dock = dock
    window.tour_problem = None
    if tour.problems:
        more = f" (and {len(tour.problems) - 1} more: see the Learn dock)" if len(tour.problems) > 1 else ""
        window.state.message.emit(tour.problems[0] + more)
    window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, dock)
    window.tabifyDockWidget(window.images_dock, dock)
    dock.hide()
    _add_tour_action(window)
    if not window.settings.value("tour/offered", False, type=bool):
        window.settings.setValue("tour/offered", True)
        offer = TourOffer(lambda: start_tour(window))
        sb: QStatusBar = window.statusBar()
        sb.addWidget(offer)
        window.tour_offer = offer


def _add_tour_action(window) -> None:
    window.tour_action = None
    help_menu = next((a.menu() for a in window.menuBar().actions() if a.menu() and "Help" in a.text()), None)
    if help_menu is not None:
        act = help_menu.addAction("&Tour")
        act.setObjectName("tourAction")
        act.setStatusTip("A guided tour through the seeds' equations, each with a Show me button")
        act.triggered.connect(lambda _c=False: start_tour(window))
        window.tour_action = act


def start_tour(window, step: int = 0) -> None:
    dock = window.learn_dock
    if dock is None:  # the tour file could not be used: say why again
        window.state.message.emit(getattr(window, "tour_problem", None) or "The tour is not available")
        return
    dock.show()
    dock.raise_()
    dock.panel.go(step)
