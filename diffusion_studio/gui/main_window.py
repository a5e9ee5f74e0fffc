"""The main window: panels in tabs and docks, menus, shortcuts, status bar (long messages elided before the labels
at its right, never drawn into them), remembered layout, clean close."""
from __future__ import annotations

import platform

import numpy as np
import pyqtgraph as pg
import torch
from PySide6 import __version__ as pyside_version
from PySide6.QtCore import QRect, QSettings, Qt, qVersion
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence, QPainter
from PySide6.QtWidgets import (QDockWidget, QLabel, QMainWindow, QMessageBox, QStatusBar, QStyle, QStyleOption,
                               QTabWidget, QWidget)

from .. import __version__
from .panels.forward.panel import ForwardPanel
from .panels.geometry.panel import GeometryPanel
from .panels.images.panel import ImagesPanel
from .panels.likelihood.panel import LikelihoodPanel
from .panels.sampling.panel import SamplingPanel
from .panels.schedule.panel import SchedulePanel
from .panels.training.panel import TrainingPanel
from .panels.autoencoder.panel import AutoencoderPanel
from .state import AppState
from .tour.panel import attach_tour
from .widgets.glyphs import install_marked_tooltips
from .workers import WorkerPool


class ElidingStatusBar(QStatusBar):
    """A status bar whose message ends in "…" a gap before the permanent labels at its right (QStatusBar draws it up
    to 2 px from them, clipped mid-letter, so it ran into "idle"); the whole message is its tooltip."""

    GAP = 12

    def __init__(self, parent=None):
        super().__init__(parent)
        self._permanent: list[QWidget] = []
        self.messageChanged.connect(lambda text: self.setToolTip(text))

    def addPermanentWidget(self, widget: QWidget, stretch: int = 0) -> None:  # noqa: N802 (Qt's name)
        super().addPermanentWidget(widget, stretch)
        self._permanent.append(widget)

    def message_rect(self) -> QRect:
        """Where the message may be drawn: from the left edge to a gap before the first visible permanent label."""
        right = self.width() - 12
        for w in self._permanent:
            if w.isVisible():
                right = min(right, w.x() - self.GAP)
        return QRect(6, 0, max(0, right - 6), self.height())

    def shown_message(self) -> str:
        """The message as drawn: elided to fit ``message_rect``."""
        return self.fontMetrics().elidedText(self.currentMessage(), Qt.TextElideMode.ElideRight,
                                             self.message_rect().width())

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if not self.currentMessage():
            super().paintEvent(event)
            return
        p = QPainter(self)
        opt = QStyleOption()
        opt.initFrom(self)
        self.style().drawPrimitive(QStyle.PrimitiveElement.PE_PanelStatusBar, opt, p, self)
        for w in self._permanent:
            if w.isVisible():
                item = QStyleOption()
                item.rect = w.geometry().adjusted(-2, -1, 2, 1)
                item.palette = self.palette()
                self.style().drawPrimitive(QStyle.PrimitiveElement.PE_FrameStatusBarItem, item, p, w)
        p.setPen(self.palette().windowText().color())
        p.drawText(self.message_rect(), Qt.AlignmentFlag.AlignLeading | Qt.AlignmentFlag.AlignVCenter
                   | Qt.TextFlag.TextSingleLine, self.shown_message())
        p.end()


class MainWindow(QMainWindow):
    """Images and Schedule are docks (always at hand); Forward, Training and Sampling are the central tabs."""

    def __init__(self, settings: QSettings, device: str = "auto", parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Diffusion Studio")
        self.setObjectName("MainWindow")
        self.settings = settings
        self.state = AppState(device=device, parent=self)
        self.pool = WorkerPool(self)
        args = (self.state, self.pool, settings)
        self.images = ImagesPanel(*args)
        self.forward = ForwardPanel(*args)
        self.schedule = SchedulePanel(*args)
        self.training = TrainingPanel(*args)
        self.sampling = SamplingPanel(*args)
        self.panels = [self.images, self.forward, self.schedule, self.training, self.sampling]
        self.images.training_data_chosen.connect(self.training.form.set_dataset_spec)
        self.training.form.spec_changed.connect(self.images.set_training_choice)  # the dock names the Training data
        self.images.set_training_choice(self.training.form.spec())

        self.tabs = QTabWidget()
        self.tabs.setObjectName("tabs")
        self.tabs.setDocumentMode(True)
        for panel in (self.forward, self.training, self.sampling):
            self.tabs.addTab(panel, panel.title)
        self.likelihood = LikelihoodPanel(*args)  # issue 13: the variational bound term by term
        self.panels.append(self.likelihood)
        self.tabs.addTab(self.likelihood, self.likelihood.title)
        self.autoencoder = AutoencoderPanel(*args)  # issue 12: the autoencoder of latent models
        self.panels.append(self.autoencoder)
        self.tabs.addTab(self.autoencoder, self.autoencoder.title)
        self.geometry = GeometryPanel(*args)  # issue 22: diffusion in two dimensions
        self.panels.append(self.geometry)
        self.tabs.addTab(self.geometry, self.geometry.title)
        self.setCentralWidget(self.tabs)
        self.images_dock = self._dock(self.images, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.schedule_dock = self._dock(self.schedule, Qt.DockWidgetArea.RightDockWidgetArea)

        self._build_menus()
        self._build_status_bar()
        attach_tour(self)  # Help ▸ Tour, the Learn dock, the first-launch offer (tour/panel.py); before the layout restore
        install_marked_tooltips()  # x̂₀ in a tooltip: its hat drawn on the x (widgets/glyphs.py)
        self._closing = False
        self._restore()
        if not self.training.extras.offer.isHidden():  # an interrupted run: the offer to continue it is in view
            self.show_panel(self.training)

    # ---- layout ---------------------------------------------------------------------------------------------------
    def _dock(self, panel, area) -> QDockWidget:
        dock = QDockWidget(panel.title, self)
        dock.setObjectName(f"dock_{panel.settings_group}")
        dock.setWidget(panel)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable
                         | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(area, dock)
        return dock

    def _action(self, menu, text: str, slot, shortcut=None, tip: str | None = None) -> QAction:
        act = QAction(text, self)
        if shortcut:
            act.setShortcut(QKeySequence(shortcut))
        if tip:
            act.setStatusTip(tip)
        act.triggered.connect(lambda _checked=False: slot())
        menu.addAction(act)
        return act

    def _build_menus(self) -> None:
        mb = self.menuBar()
        f = mb.addMenu("&File")
        self._action(f, "Open &Images…", self.images.open_files_dialog, QKeySequence.StandardKey.Open,
                     "Open image files as x₀")
        self._action(f, "Open &Folder…", self.images.open_folder_dialog, "Ctrl+Shift+O", "Open a folder of images")
        f.addSeparator()
        self._action(f, "Open &Checkpoint…", self.sampling.open_checkpoint_dialog, "Ctrl+L",
                     "Load a trained model to sample from")
        self._action(f, "&Save Checkpoint…", self.training.save_checkpoint_dialog, QKeySequence.StandardKey.Save,
                     "Save the model being trained")
        exp = f.addMenu("&Export")
        self._action(exp, "Schedule Curves as &CSV…", self.schedule.export_csv_dialog)
        self._action(exp, "Schedule &Plot as PNG…", self.schedule.export_png_dialog)
        self._action(exp, "Forward &Filmstrip as PNG…", self.forward.export_filmstrip_dialog)
        self._action(exp, "Samples &Grid as PNG…", self.sampling.export_grid_dialog, "Ctrl+E")
        self._action(exp, "Sampling &Animation as GIF…", self.sampling.export_gif_dialog, "Ctrl+Shift+E")
        f.addSeparator()
        self._action(f, "&Quit", self.close, QKeySequence.StandardKey.Quit)

        v = mb.addMenu("&View")
        for i, panel in enumerate((self.forward, self.training, self.sampling)):
            self._action(v, f"&{panel.title}", lambda p=panel: self.show_panel(p), f"Ctrl+{i + 1}")
        v.addSeparator()
        for dock in (self.images_dock, self.schedule_dock):
            act = dock.toggleViewAction()
            v.addAction(act)
        v.addSeparator()
        self._action(v, "&Reset Layout", self.reset_layout)

        r = mb.addMenu("&Run")
        self._action(r, "Start/Resume &Training", self.training.start, "Ctrl+T")
        self._action(r, "&Pause Training", self.training.pause, "Ctrl+P")
        self._action(r, "S&top Training", self.training.stop, "Ctrl+Shift+T")
        r.addSeparator()
        self._action(r, "&Sample", self.sampling.start, "Ctrl+R")
        self._action(r, "Stop S&ampling", self.sampling.stop, "Ctrl+Shift+R")

        h = mb.addMenu("&Help")
        self._action(h, "&About Diffusion Studio", self.show_about, QKeySequence.StandardKey.HelpContents)

    def _build_status_bar(self) -> None:
        sb = ElidingStatusBar(self)
        sb.setObjectName("statusBar")
        self.setStatusBar(sb)
        self.busy_label = QLabel("")
        self.busy_label.setObjectName("busyLabel")
        self.device_label = QLabel(f"Device: {self.state.device_description}")
        self.device_label.setObjectName("deviceLabel")
        sb.addPermanentWidget(self.busy_label)
        sb.addPermanentWidget(self.device_label)
        self.state.message.connect(lambda text: sb.showMessage(text, 8000))
        self.state.busy_changed.connect(self._show_busy)
        self.busy_label.setText("idle")

    BUSY_WIDTH = 380  # px: several background jobs at once are elided, leaving the message its room

    def _show_busy(self, text: str) -> None:
        text = text or "idle"
        shown = self.busy_label.fontMetrics().elidedText(text, Qt.TextElideMode.ElideMiddle, self.BUSY_WIDTH)
        self.busy_label.setText(shown)
        self.busy_label.setToolTip(text if shown != text else "")

    def show_panel(self, panel) -> None:
        self.tabs.setCurrentWidget(panel)

    def start_demo(self, tab: str = "forward") -> None:
        """What a first-time visitor should see: a sample photo part-noised, and the built-in model sampling."""
        self.images.load_builtin_sample()
        self.state.set_t(self.state.schedule.T * 3 // 10 - 1)
        self.sampling.start()
        self.show_panel({"forward": self.forward, "training": self.training, "sampling": self.sampling}[tab])

    def reset_layout(self) -> None:
        for dock, area in ((self.images_dock, Qt.DockWidgetArea.LeftDockWidgetArea),
                           (self.schedule_dock, Qt.DockWidgetArea.RightDockWidgetArea)):
            dock.setFloating(False)
            self.addDockWidget(area, dock)
            dock.show()
        self.resize(1280, 800)

    def about_text(self) -> str:
        return (f"<h3>Diffusion Studio {__version__}</h3>"
                "<p>See DDPM (Ho et al. 2020) happen: scrub t through the forward process, compare noise schedules, "
                "train a noise-prediction UNet and watch reverse sampling frame by frame.</p>"
                f"<p>Python {platform.python_version()} · PyTorch {torch.__version__} · PySide6 {pyside_version} "
                f"(Qt {qVersion()}) · pyqtgraph {pg.__version__} · NumPy {np.__version__}</p>"
                f"<p>Device in use: {self.state.device_description}</p>")

    def show_about(self) -> None:
        box = QMessageBox(QMessageBox.Icon.Information, "About Diffusion Studio", self.about_text(),
                          QMessageBox.StandardButton.Ok, self)
        box.setObjectName("aboutBox")
        box.setModal(False)
        box.show()
        self._about = box

    # ---- settings -------------------------------------------------------------------------------------------------
    def _restore(self) -> None:
        geo = self.settings.value("window/geometry")
        if geo is not None:
            self.restoreGeometry(geo)
        else:
            self.resize(1280, 800)
        st = self.settings.value("window/state")
        if st is not None:
            self.restoreState(st)
        tab = self.settings.value("window/tab", 0)
        try:
            self.tabs.setCurrentIndex(int(tab))
        except (TypeError, ValueError):
            pass

    def save_settings(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.setValue("window/tab", self.tabs.currentIndex())
        for panel in self.panels:
            panel.save_settings()
        self.settings.sync()

    # ---- closing --------------------------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:
        """Stop background work (training saves its checkpoint as it stops), join the workers, remember the layout."""
        if not self._closing and not self.training.extras.may_close(self):  # training runs: asked first
            event.ignore()
            return
        if not self._closing:
            self._closing = True
            self.save_settings()
            for panel in self.panels:
                panel.shutdown()
            if not self.pool.shutdown(timeout_ms=10000):
                self.state.message.emit("some background work did not stop in time")
        super().closeEvent(event)
