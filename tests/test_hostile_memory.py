"""A size, batch or dataset that cannot fit in this machine's memory is refused before any of it is allocated:
one line naming the field and what would fit, from the command line and from the app's form alike."""
from __future__ import annotations

import math
import subprocess
import tempfile
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from diffusion_studio import cli
from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.core.nets.unet import preset_config
from diffusion_studio.core.runtime import memory
from diffusion_studio.core.train.config import TrainConfig
from diffusion_studio.data.errors import DataError
from diffusion_studio.data.specs import load_dataset
from diffusion_studio.jobs.training import RunRequest, check_request

GIB = 1 << 30


class _Two(nn.Module):
    """Two leaves with outputs of known size: conv (1→4 channels) and ReLU, both size² each."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x, t, condition=None):
        return self.act(self.conv(x))


def test_activation_bytes_count_each_leaf_output_on_the_meta_device():
    with torch.device("meta"):
        net = _Two()
    # conv output 2×4×16×16 floats and ReLU's the same: 2 × 2048 values × 4 bytes
    assert memory.activation_bytes(net, (2, 1, 16, 16)) == 2 * (2 * 4 * 16 * 16) * 4


def test_training_bytes_grow_with_the_batch_and_start_from_the_weights_state():
    cfg = preset_config("tiny", 16, 3)
    one, state = memory.training_bytes(cfg, 1)
    eight, state8 = memory.training_bytes(cfg, 8)
    params = sum(p.numel() for p in __import__("diffusion_studio.core.nets.networks", fromlist=["x"])
                 .build_network(cfg).parameters())
    assert state == state8 == memory.TRAIN_STATE * 4 * params
    assert eight - state == 8 * (one - state) > 0
    # the activations of a real forward pass at batch 8 (every leaf's output) are what the meta pass counts
    net = __import__("diffusion_studio.core.nets.networks", fromlist=["x"]).build_network(cfg)
    total = 0

    def hook(_m, _i, out):
        nonlocal total
        total += out.numel() * 4 if isinstance(out, torch.Tensor) else 0
    for m in net.modules():
        if not list(m.children()):
            m.register_forward_hook(hook)
    with torch.no_grad():
        net(torch.zeros(8, 3, 16, 16), torch.zeros(8, dtype=torch.long))
    assert total == eight - state


@pytest.mark.parametrize("free_gib, batch, field", [(0.05, 10_000, "batch_size"), (0.001, 1, "image_size")])
def test_a_step_that_cannot_fit_names_the_field_and_what_would(monkeypatch, free_gib, batch, field):
    monkeypatch.setattr(memory, "available_bytes", lambda: int(free_gib * GIB))
    cfg = preset_config("tiny", 32, 3)
    with pytest.raises(ValueError) as e:
        memory.check_training_fits(cfg, batch, "cpu")
    msg = str(e.value)
    assert msg.startswith(f"{field}: training 3×32×32 with batch {batch} needs at least") and "\n" not in msg
    need, state = memory.training_bytes(cfg, batch)
    have = int(free_gib * GIB * memory.HEADROOM)
    if field == "batch_size":
        fits = int(msg.rsplit("a batch of ", 1)[1].split()[0])
        per = (need - state) // batch * memory.ACTIVATION_UPPER  # the advice allows for a real step's extra
        assert state + fits * per <= have < state + (fits + 1) * per
    memory.check_training_fits(cfg, 1, "cuda")  # a GPU's allocator speaks for itself


def test_a_step_that_fits_passes(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: 4 * GIB)
    memory.check_training_fits(preset_config("tiny", 32, 3), 64, "cpu")


_PEAK = """
import sys
from diffusion_studio.cli import main
try:
    code = main(sys.argv[2:])
finally:
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    open(sys.argv[1], "w").write(hwm.split()[1])
sys.exit(code)
"""


def _peak_child_mb(argv) -> tuple[subprocess.CompletedProcess, float]:
    """Run the CLI in a child and return its own peak resident size: VmHWM of the child's own memory after exec
    (ru_maxrss would count the parent's size at fork — this test process's, over a gigabyte late in the suite)."""
    with tempfile.TemporaryDirectory() as tmp:
        peak = Path(tmp) / "peak"
        p = subprocess.run([sys.executable, "-c", _PEAK, str(peak), *argv], capture_output=True, text=True,
                           timeout=300)
        return p, int(peak.read_text()) / 1024


@pytest.mark.parametrize("argv, flag", [
    (["--data", "builtin:shapes", "--size", "4096"], "--size"),
    (["--data", "builtin:shapes", "--size", "256", "--batch", "4096"], "--batch"),
])
def test_the_command_line_refuses_a_run_that_cannot_fit_before_loading_anything(argv, flag, tmp_path):
    p, peak = _peak_child_mb(["train", *argv, "--steps", "1", "--out", str(tmp_path / "run")])
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert f"argument {flag}: training" in lines[0] and "GiB" in lines[0] and ("should fit" in lines[0] or "px or less" in lines[0]), lines
    assert peak < 1024, f"{peak:.0f} MB used to refuse {argv}"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, flag", [
    (["--data", "builtin:digits", "--size", "4096"], "--size"),
    (["--data", "builtin:digits", "--batch", "1000000"], "--batch"),
])
def test_the_same_refusals_in_process(argv, flag, tmp_path, capsys):
    code = cli.main(["train", *argv, "--steps", "1", "--out", str(tmp_path / "run")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and f"argument {flag}: training" in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_builtin_data_too_large_for_memory_is_refused_before_drawing(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: 1 * GIB)
    with pytest.raises(DataError) as e:
        load_dataset("builtin:shapes", 512)  # 2,000 × 3 × 512² bytes = 1.5 GiB
    msg = str(e.value)
    assert msg.startswith("size: builtin:shapes has 2,000 images; at 512×512 they need 1.5 GiB") and "px or less" \
        in msg
    most = int(msg.split("; ")[-1].split()[0])
    assert 2000 * 3 * most**2 <= 1 * GIB * memory.HEADROOM < 2000 * 3 * (most + 1) ** 2
    load_dataset("builtin:shapes", 32)  # a size that fits still loads


def test_a_folder_too_large_for_memory_is_refused_before_any_image_is_opened(monkeypatch, tmp_path):
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)).save(tmp_path / f"{i}.png")
    monkeypatch.setattr(memory, "available_bytes", lambda: 64 << 20)
    opened = []
    from diffusion_studio.data import folder
    real = folder.open_image
    monkeypatch.setattr(folder, "open_image", lambda *a, **k: opened.append(a) or real(*a, **k))
    with pytest.raises(DataError) as e:
        load_dataset(tmp_path, 2048)
    assert str(tmp_path.name) in str(e.value) and "3 images at 2048×2048 would not fit in memory" in str(e.value)
    assert not opened
    assert len(load_dataset(tmp_path, 64)) == 3


def test_the_apps_form_refuses_a_size_that_cannot_fit(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: 1 * GIB)
    req = RunRequest("builtin:shapes", 1024, "tiny", NoiseSchedule.create("linear", 50),
                     TrainConfig(steps=10, batch_size=64, lr=1e-3, device="cpu"), out=Path("unused.json"))
    with pytest.raises(ValueError, match=r"^(Batch size \(batch_size\)|Image size \(image_size\)): training "
                                         r"3×1024×1024 with batch 64 needs at least"):
        check_request(req)
    req.image_size = 32
    check_request(req)
    assert math.isfinite(memory.available_bytes())
