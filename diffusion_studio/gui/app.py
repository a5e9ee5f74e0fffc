"""Starting the app: QApplication, settings, the main window, and an optional timed screenshot for docs and CI."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path

from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication

ORG, APP = "DiffusionStudio", "Diffusion Studio"
log = logging.getLogger("diffusion_studio")


def make_settings(path: str | None = None) -> QSettings:
    """The app's settings; DIFFUSION_STUDIO_SETTINGS (or ``path``) points them at an .ini file instead."""
    path = path or os.environ.get("DIFFUSION_STUDIO_SETTINGS")
    if path:
        return QSettings(path, QSettings.Format.IniFormat)
    return QSettings(ORG, "DiffusionStudio")


def _install_excepthook() -> None:
    """An exception in a slot is logged and shown in the status bar instead of ending the app."""

    def hook(exc_type, exc, tb):
        log.error("unhandled: %s", "".join(traceback.format_exception(exc_type, exc, tb)))
        app = QApplication.instance()
        for w in (app.topLevelWidgets() if app else []):
            state = getattr(w, "state", None)
            if state is not None and hasattr(state, "message"):
                state.message.emit(f"error: {exc_type.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")

    sys.excepthook = hook


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="diffusion-studio", description="Open the Diffusion Studio window.")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps")
    p.add_argument("--settings", help="keep settings in this .ini file instead of the user's settings")
    p.add_argument("--screenshot", help="save a screenshot of the window to this PNG after --delay ms, then quit")
    p.add_argument("--delay", type=int, default=3000, help="milliseconds before the screenshot")
    p.add_argument("--demo", action="store_true", help="start with a sample image, t = 300 and a sampling run")
    p.add_argument("--tab", choices=("forward", "training", "sampling"), default="forward",
                   help="the tab to show with --demo")
    return p.parse_args(argv)


def run_app(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if QApplication.instance() is None:
        from .display import display_problem

        problem = display_problem()  # Qt would abort the process (exit 134) without a display
        if problem:
            print(problem, file=sys.stderr)
            return 1
    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setOrganizationName(ORG)
    app.setApplicationName(APP)
    _install_excepthook()
    from .main_window import MainWindow  # imported late: it pulls in torch and pyqtgraph

    window = MainWindow(make_settings(args.settings), device=args.device)
    window.show()
    if args.demo:
        QTimer.singleShot(0, lambda: window.start_demo(args.tab))
    if args.screenshot:
        def shoot() -> None:
            out = Path(args.screenshot)
            out.parent.mkdir(parents=True, exist_ok=True)
            window.grab().save(str(out))
            print(f"screenshot saved to {out} (platform {QApplication.platformName()}, "
                  f"window {window.width()}x{window.height()})")
            window.close()
            app.quit()

        QTimer.singleShot(args.delay, shoot)
    return app.exec()
