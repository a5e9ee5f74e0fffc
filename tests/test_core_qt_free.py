"""The import contract (as napari enforces for its components/): every package outside gui/ — core, data, jobs,
cli — imports with Qt unavailable (the CLI opens the app, and so imports Qt, only when asked to)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import importlib, pkgutil, sys
    for name in ("PySide6", "shiboken6", "pyqtgraph", "PyQt5", "PyQt6", "PySide2", "qtpy"):
        sys.modules[name] = None  # any import of these now raises ImportError
    pkg = importlib.import_module(sys.argv[1])
    names = [pkg.__name__]
    for info in pkgutil.walk_packages(getattr(pkg, "__path__", []), pkg.__name__ + "."):
        if info.name.endswith(".__main__"):
            continue  # runs the command line
        importlib.import_module(info.name)
        names.append(info.name)
    qt = ("PySide6", "shiboken6", "pyqtgraph")
    leaked = [m for m in sys.modules if m.split(".")[0] in qt and sys.modules[m] is not None]
    assert not leaked, leaked
    print(len(names), " ".join(names))
""")


@pytest.mark.parametrize("package, must_have", [
    ("diffusion_studio.core",
     {"diffusion.schedule", "diffusion.forward", "diffusion.reverse", "diffusion.samplers", "nets.unet",
      "runtime.device", "train.trainer", "io.checkpoint", "io.models", "errors"}),
    ("diffusion_studio.data", {"specs", "dataset", "shapes", "captions"}),
    ("diffusion_studio.jobs", {"sampling", "frames", "prompts", "runs", "training", "likelihood", "autoencoder"}),
    ("diffusion_studio.cli", {"sample", "train", "train_setup", "info", "nll", "fid"}),
    ("diffusion_studio.resources", set()),
])
def test_imports_without_qt(package, must_have):
    r = subprocess.run([sys.executable, "-c", SCRIPT, package], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    imported = set(r.stdout.split()[1:])
    for sub in must_have:
        assert f"{package}.{sub}" in imported, (sub, r.stdout)


def test_the_block_really_blocks():
    """The contract test would pass vacuously if blocking did not work: a module importing Qt must fail under it."""
    code = ('import sys; sys.modules["PySide6"] = None\n'
            'try:\n import PySide6.QtCore\nexcept ImportError:\n print("blocked")')
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "blocked", r.stderr
