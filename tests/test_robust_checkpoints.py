"""Checkpoints are data, never code: every bad checkpoint is refused with one line naming the file and the reason, in
the CLI (`sample --model X`) and in the Sampling panel, where the model already loaded stays in use and still samples.
No pickle is ever unpickled: a payload that would create a file never runs."""
from __future__ import annotations

import json
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PySide6.QtCore import Qt

from diffusion_studio import resources
from diffusion_studio.core.io.checkpoint import load_checkpoint, save_checkpoint
from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.core.nets.unet import UNet, preset_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WAIT_MS = 60_000


class Payload:
    """Unpickling this calls open(path, "w"): the file appearing would prove a pickle was executed."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def good_checkpoint(folder: Path, seed: int = 0) -> Path:
    """A tiny (untrained) model whose output layer is randomised, so ε_θ is not identically 0."""
    torch.manual_seed(seed)
    cfg = preset_config("tiny", 8, 1)
    model = UNet(cfg)
    with torch.no_grad():
        torch.nn.init.normal_(model.out[-1].weight, std=0.05)
    meta = {"step": 3, "model": cfg.to_dict(), "schedule": NoiseSchedule.create("linear", 20).to_dict()}
    return save_checkpoint(folder / "checkpoint.json", {"ema": dict(model.state_dict())}, meta)


@dataclass
class Bad:
    label: str
    path: Path        # what the user opens
    names: str        # the file the message must name
    keyword: str      # and a word of its reason


def _copy_of(good: Path, folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True)
    manifest = json.loads(good.read_text())
    shutil.copy(good, folder / good.name)
    shutil.copy(good.parent / manifest["weights"], folder / manifest["weights"])
    return folder / good.name, folder / manifest["weights"]


def _edit(manifest: Path, fn) -> None:
    meta = json.loads(manifest.read_text())
    fn(meta)
    manifest.write_text(json.dumps(meta))


def build_bad_checkpoints(root: Path, good: Path, marker: Path) -> list[Bad]:
    evil = pickle.dumps({"weights": Payload(marker)}, protocol=pickle.HIGHEST_PROTOCOL)
    out = []

    pt = root / "model.pt"  # what torch.save writes: a zip of pickles (with the payload inside)
    torch.save({"state_dict": UNet(preset_config("tiny", 8, 1)).state_dict(), "extra": Payload(marker)}, pt)
    out.append(Bad("torch.save .pt", pt, "model.pt", "pickle"))

    (root / "pickled-run").mkdir()
    as_json = root / "pickled-run" / "checkpoint.json"
    as_json.write_bytes(evil)
    out.append(Bad("pickle renamed checkpoint.json", as_json, "checkpoint.json", "pickle"))

    as_st = root / "weights.safetensors"
    as_st.write_bytes(evil)
    out.append(Bad("pickle named .safetensors", as_st, "weights.safetensors", "pickle"))

    manifest, weights = _copy_of(good, root / "pickled-weights")
    weights.write_bytes(evil)  # a genuine manifest naming pickled "weights"
    out.append(Bad("manifest naming pickled weights", manifest, weights.name, "pickle"))

    manifest, weights = _copy_of(good, root / "truncated")
    blob = weights.read_bytes()
    weights.write_bytes(blob[: len(blob) // 2])
    out.append(Bad("truncated weights", manifest, weights.name, "truncated"))

    manifest, weights = _copy_of(good, root / "flipped")
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0x10  # inside the tensor data: still a well-formed safetensors file
    weights.write_bytes(bytes(blob))
    out.append(Bad("one flipped byte", manifest, weights.name, "corrupted"))

    manifest, weights = _copy_of(good, root / "shapes")
    _edit(manifest, lambda m: m["model"].update(base_channels=16))
    out.append(Bad("wrong tensor shapes", manifest, weights.name, "shape"))

    manifest, _ = _copy_of(good, root / "huge")
    _edit(manifest, lambda m: m["model"].update(preset="huge"))
    out.append(Bad("unknown preset", manifest, manifest.name, "unknown preset 'huge'"))

    manifest, _ = _copy_of(good, root / "badjson")
    text = manifest.read_text()
    manifest.write_text(text[: len(text) // 2])
    out.append(Bad("invalid JSON", manifest, manifest.name, "not valid JSON"))
    return out


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    marker = root / "PWNED"
    probe = root / "probe"
    pickle.loads(pickle.dumps(Payload(probe))).close()  # the payload does work when unpickled
    assert probe.exists()
    good = good_checkpoint(root / "good")
    return good, build_bad_checkpoints(root, good, marker), marker


def test_cli_refuses_each_bad_checkpoint_with_one_line(capsys, tmp_path, zoo):
    from diffusion_studio.cli import main

    good, cases, marker = zoo
    shown = []
    for case in cases:
        code = main(["sample", "--model", str(case.path), "--n", "1", "--out", str(tmp_path / "out")])
        out, err = capsys.readouterr()
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 1 and out == "" and len(lines) == 1, (case.label, err)
        assert lines[0].startswith(f"diffusion-studio: {case.names}: "), (case.label, lines[0])
        assert case.keyword in lines[0], (case.label, lines[0])
        shown.append(f"{case.label:32s} {lines[0]}")
    assert not (tmp_path / "out").exists() and not marker.exists()
    assert main(["sample", "--model", str(good), "--n", "1", "--steps", "2", "--out", str(tmp_path / "ok")]) == 0
    assert (tmp_path / "ok" / "sample_00000.png").is_file()
    print("\nCLI, bad checkpoints:\n" + "\n".join(shown))


@pytest.fixture
def panel(qtbot, settings, tmp_path, monkeypatch):
    from diffusion_studio.gui.panels.sampling.panel import SamplingPanel
    from diffusion_studio.gui.state import AppState
    from diffusion_studio.gui.workers import WorkerPool

    (tmp_path / "no-models").mkdir()
    monkeypatch.setattr(resources, "models_dir", lambda: tmp_path / "no-models")  # no shipped model to autostart
    p = SamplingPanel(AppState(device="cpu"), WorkerPool(), settings)
    qtbot.addWidget(p)
    p.resize(900, 650)
    p.show()
    qtbot.waitExposed(p)
    yield p
    p.shutdown()
    assert p.pool.shutdown(timeout_ms=10_000)


def test_sampling_panel_refuses_each_bad_checkpoint_and_keeps_the_loaded_model(qtbot, panel, zoo):
    good, cases, marker = zoo
    with qtbot.waitSignal(panel.model_loaded, timeout=WAIT_MS):
        panel.open_checkpoint(good)
    loaded, key = panel.loaded, panel.chooser.current_key
    weights = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    shown = []
    for case in cases:
        with qtbot.waitSignal(panel.chooser.load_failed, timeout=WAIT_MS) as failed:
            panel.open_checkpoint(case.path)
        qtbot.waitUntil(lambda: not panel.chooser.is_loading and not panel.pool.running, timeout=WAIT_MS)
        message = panel.error_label.text()
        assert panel.error_label.isVisible() and "\n" not in message, case.label
        assert f"{case.names}: " in message and case.keyword in message, (case.label, message)
        assert failed.args[0] in message
        assert panel.loaded is loaded and panel.chooser.current_key == key, case.label
        assert panel.chooser.combo.currentData() == key
        shown.append(f"{case.label:32s} {message}")
    assert not marker.exists()
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, weights[k]), k

    # The model in use still samples.
    c = panel.controls
    c.select_sampler("ddim", "beta_tilde")
    c.steps_spin.setValue(2)
    c.n_spin.setValue(1)
    with qtbot.waitSignal(panel.run_finished, timeout=WAIT_MS) as finished:
        qtbot.mouseClick(panel.sample_button, Qt.MouseButton.LeftButton)
    assert finished.args[0] == "done" and panel.frames[-1].is_final
    assert not panel.error_label.isVisible()
    assert load_checkpoint(good).step == 3  # and the good file itself is untouched
    print("\nGUI Sampling panel, bad checkpoints:\n" + "\n".join(shown))
