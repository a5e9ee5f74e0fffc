"""The data layer must import and work with Qt unavailable (the CLI runs on headless machines)."""

import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = r"""
import importlib, pkgutil, sys
for blocked in ("PySide6", "shiboken6", "pyqtgraph", "PyQt5", "PyQt6"):
    sys.modules[blocked] = None  # any import of these now raises ImportError

import diffusion_studio.data as data
names = sorted(m.name for m in pkgutil.iter_modules(data.__path__))
for name in names:
    importlib.import_module(f"diffusion_studio.data.{name}")

ds = data.load_dataset("builtin:digits", 8)
assert len(ds) == 1797
qt = sorted(m for m in sys.modules if m.split(".")[0] in ("PySide6", "shiboken6", "pyqtgraph") and sys.modules[m])
print("modules", ",".join(names))
print("qt", qt)
print("sklearn", "sklearn" in sys.modules)
"""


def test_data_imports_with_qt_blocked():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
    modules = lines["modules"].split(",")
    for expected in ("builtin", "cifar", "convert", "dataset", "errors", "folder", "images", "mnist"):
        assert expected in modules
    assert lines["qt"] == "[]"
    # Digits come straight from the CSV inside scikit-learn: the (slow) sklearn import is not needed.
    assert lines["sklearn"] == "False"


def test_data_sources_never_mention_qt_or_downloads():
    for path in (REPO / "diffusion_studio" / "data").glob("*.py"):
        text = path.read_text()
        for word in ("PySide6", "pyqtgraph", "shiboken", "urllib", "requests", "http://", "https://", "fetch_"):
            assert word not in text, f"{path.name} mentions {word}"
        first = text.lstrip().splitlines()[0]
        assert first.startswith('"""') and first.endswith('"""') and len(first) > 10, path.name
        assert len(text.splitlines()) <= 400, path.name
