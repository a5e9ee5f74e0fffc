"""Is there a display to open a window on? Asked before QApplication exists, because Qt aborts the process when not."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

# Platform plugins that need no display server (Qt's own names).
HEADLESS_PLATFORMS = ("offscreen", "minimal", "vnc", "linuxfb", "eglfs", "vkkhrdisplay")
HINT = ("run it under a virtual display (xvfb-run -a diffusion-studio) or use the command line "
        "(diffusion-studio --help lists train, sample, info)")


def _x_reachable(display: str, timeout: float = 0.5) -> bool | None:
    """True/False when the X server named by $DISPLAY answers/does not; None when the form is not understood."""
    host, sep, rest = display.rpartition(":")
    if not sep:
        return None
    number = rest.split(".", 1)[0]
    if not number.isdigit():
        return None
    if host in ("", "unix"):
        path = f"/tmp/.X11-unix/X{number}"
        # Linux X servers listen on an abstract socket too; either one answering is enough.
        for address in (path, "\0" + path):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                try:
                    s.connect(address)
                    return True
                except OSError:
                    continue
        return False
    if "/" in host:  # e.g. a launchd path: not ours to judge
        return None
    try:
        with socket.create_connection((host, 6000 + int(number)), timeout=timeout):
            return True
    except OSError:
        return False


def _wayland_reachable(name: str) -> bool:
    path = Path(name) if os.path.isabs(name) else Path(os.environ.get("XDG_RUNTIME_DIR", "")) / name
    return path.exists()


def display_problem(environ: dict[str, str] | None = None, platform: str | None = None) -> str | None:
    """One line saying why no window can open here, or None when one can (or this cannot be judged).

    Only Linux and the BSDs need a display server; with QT_QPA_PLATFORM naming a headless plugin nothing is needed.
    """
    env = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if not platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return None
    qpa = env.get("QT_QPA_PLATFORM", "").strip().lower()
    wanted = [p.split(":", 1)[0] for p in qpa.split(";") if p] if qpa else []
    if any(p in HEADLESS_PLATFORMS for p in wanted):
        return None
    display, wayland = env.get("DISPLAY", "").strip(), env.get("WAYLAND_DISPLAY", "").strip()
    x_ok = _x_reachable(display) if display else False
    wl_ok = _wayland_reachable(wayland) if wayland else False
    if wanted == ["xcb"]:
        ok, names = x_ok, "DISPLAY"
    elif wanted and all(p.startswith("wayland") for p in wanted):
        ok, names = wl_ok, "WAYLAND_DISPLAY"
    else:
        ok, names = (x_ok or wl_ok or (x_ok is None)), "DISPLAY and WAYLAND_DISPLAY"
    if ok or ok is None:
        return None
    if not display and not wayland or names == "DISPLAY" and not display or names == "WAYLAND_DISPLAY" and not wayland:
        why = f"no display ({names} {'is' if ' and ' not in names else 'are'} not set)"
    else:
        shown = ", ".join(f"{k}={env.get(k)}" for k in ("DISPLAY", "WAYLAND_DISPLAY") if env.get(k))
        why = f"no display answers ({shown})"
    return f"diffusion-studio: cannot open a window: {why}; {HINT}"
