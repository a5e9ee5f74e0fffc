"""`diffusion-studio` without a display says so in one line and exits 1, instead of Qt aborting the process."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from diffusion_studio.gui.display import display_problem


def _unused_display() -> str:
    """An X display number no server listens on."""
    for n in range(97, 140):
        if not Path(f"/tmp/.X11-unix/X{n}").exists():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                try:
                    s.connect(f"\0/tmp/.X11-unix/X{n}")
                except OSError:
                    return f":{n}"
    raise AssertionError("no free display number")


def _run_app(env_changes: dict[str, str | None], tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env.update({k: v for k, v in env_changes.items() if v is not None})
    env["DIFFUSION_STUDIO_SETTINGS"] = str(tmp_path / "settings.ini")
    return subprocess.run([sys.executable, "-m", "diffusion_studio"], env=env, capture_output=True, text=True,
                          timeout=120)


def test_no_display_prints_one_line_and_exits_1(tmp_path):
    proc = _run_app({}, tmp_path)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "no display" in lines[0] and "xvfb-run" in lines[0] and "diffusion-studio --help" in lines[0]
    assert proc.stdout == ""
    assert not (tmp_path / "settings.ini").exists()  # nothing started


def test_a_display_nobody_answers_is_named(tmp_path):
    gone = _unused_display()
    proc = _run_app({"DISPLAY": gone}, tmp_path)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"DISPLAY={gone}" in lines[0] and "xvfb-run" in lines[0], proc.stderr


def test_display_problem_judges_the_environment():
    linux = "linux"
    assert display_problem({}, linux) is not None
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}, linux) is None
    assert display_problem({"QT_QPA_PLATFORM": "minimal"}, linux) is None
    assert "DISPLAY is not set" in display_problem({"QT_QPA_PLATFORM": "xcb"}, linux)
    assert "WAYLAND_DISPLAY is not set" in display_problem({"QT_QPA_PLATFORM": "wayland"}, linux)
    assert display_problem({}, "darwin") is None and display_problem({}, "win32") is None
    assert display_problem({"DISPLAY": _unused_display()}, linux) is not None


def test_a_listening_x_socket_counts_as_a_display(tmp_path):
    # A stand-in server on a TCP display (localhost:N → port 6000 + N): the probe only needs the connection.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        for n in range(150, 250):
            try:
                server.bind(("127.0.0.1", 6000 + n))
                break
            except OSError:
                continue
        else:
            raise AssertionError("no free port in 6150..6249")
        server.listen(1)
        assert display_problem({"DISPLAY": f"127.0.0.1:{n}"}, "linux") is None
        assert display_problem({"DISPLAY": f"127.0.0.1:{n}", "QT_QPA_PLATFORM": "xcb"}, "linux") is None
    assert display_problem({"DISPLAY": f"127.0.0.1:{n}"}, "linux") is not None
