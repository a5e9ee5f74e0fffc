"""One sampling pipeline (issue 21): for the same choices, the app's Sampling tab and `diffusion-studio sample` build
the same SamplingJob and draw the same pixels from the same seed — a pixel class model with guidance, a latent model,
and a text model with a prompt, a negative prompt and guidance."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt

from diffusion_studio import cli
from diffusion_studio.jobs import sampling as pipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MODELS = Path(__file__).parent / "fixtures" / "release2" / "models"
WAIT_MS = 120_000
N, STEPS, SEED = 4, 4, 5
CHOICES = ("sampler", "variance", "steps", "eta", "n_images", "seed", "clip_x0", "label", "guidance", "prompt",
           "negative_prompt")

CASES = {
    # name: (model folder, CLI options, how the app's controls are set)
    "pixel, class 3, w = 2": ("cli_class", ["--label", "3", "--guidance", "2"], dict(label=3, guidance=2.0)),
    "pixel, each class in turn (the default)": ("cli_class", [], dict(label=-1, guidance=2.0)),
    "latent": ("latent_run", [], {}),
    "text, prompt + negative, w = 4": ("text_run", ["--prompt", "a red circle", "--negative-prompt", "blue",
                                                    "--guidance", "4"],
                                       dict(prompt="a red circle", negative="blue", guidance=4.0)),
}


@pytest.fixture
def spy(monkeypatch):
    """Every job the pipeline is asked to run, with the model it ran on."""
    seen = []
    real = pipeline.frames

    def frames(loaded, job, *args, **kw):
        seen.append((Path(loaded.path).parent.name, job))
        return real(loaded, job, *args, **kw)

    monkeypatch.setattr(pipeline, "frames", frames)
    return seen


@pytest.fixture
def panel(qtbot, settings, tmp_path, monkeypatch):
    from diffusion_studio import resources

    (tmp_path / "no-models").mkdir()
    monkeypatch.setattr(resources, "models_dir", lambda: tmp_path / "no-models")  # no first look to wait for
    from diffusion_studio.gui.panels.sampling.panel import SamplingPanel
    from diffusion_studio.gui.state import AppState
    from diffusion_studio.gui.workers import WorkerPool

    p = SamplingPanel(AppState(device="cpu"), WorkerPool(), settings)
    qtbot.addWidget(p)
    p.resize(1000, 700)
    p.show()
    qtbot.waitExposed(p)
    yield p
    p.shutdown()
    assert p.pool.shutdown(timeout_ms=10_000)


def _tiles(grid: np.ndarray, n: int, side: int) -> list[np.ndarray]:
    """The n images of a make_grid grid (padding 2, ceil(√n) columns)."""
    cols = int(np.ceil(np.sqrt(n)))
    out = []
    for k in range(n):
        r, c = divmod(k, cols)
        out.append(grid[2 + r * (side + 2):2 + r * (side + 2) + side, 2 + c * (side + 2):2 + c * (side + 2) + side])
    return out


def _app(panel, qtbot, folder: Path, how: dict) -> np.ndarray:
    with qtbot.waitSignal(panel.model_loaded, timeout=WAIT_MS):
        panel.open_checkpoint(folder / "checkpoint.json")
    c = panel.controls
    c.select_sampler("ddim")
    c.steps_spin.setValue(STEPS)
    c.n_spin.setValue(N)
    c.seed_spin.setValue(SEED)
    c.eta_spin.setValue(0.0)
    if c.clip_check.isEnabled():
        c.clip_check.setChecked(bool(how.get("prompt")))  # the CLI clips a pixel text model's x̂₀, else not
    if "label" in how:
        c.class_combo.setCurrentIndex(c.class_combo.findData(how["label"]))
        c.guidance_spin.setValue(how["guidance"])
    if "prompt" in how:
        panel.prompt_box.set_prompt(how["prompt"])
        panel.prompt_box.negative_edit.setText(how["negative"])
        panel.prompt_box.set_guidance(how["guidance"])
    with qtbot.waitSignal(panel.run_finished, timeout=WAIT_MS) as blocker:
        qtbot.mouseClick(panel.sample_button, Qt.MouseButton.LeftButton)
    assert blocker.args[0] == "done"
    # the network's precision and why are said with the run (issue 25): on the progress bar, and when it ends
    assert panel.precision_note.split()[0] in ("fp32", "bf16"), panel.precision_note
    assert panel.progress.toolTip() == f"Network precision: {panel.precision_note}"
    final = panel.frames[-1]
    assert final.is_final
    return final.x


@pytest.mark.parametrize("case", list(CASES))
def test_the_app_and_the_cli_build_one_job_and_draw_the_same_pixels(case, panel, qtbot, spy, tmp_path, capsys):
    name, options, how = CASES[case]
    folder = MODELS / name
    out = tmp_path / "cli"
    code = cli.main(["sample", "--model", str(folder), "--n", str(N), "--batch", str(N), "--steps", str(STEPS),
                     "--seed", str(SEED), "--out", str(out), "--quiet", *options])
    assert code == 0, capsys.readouterr().err
    cli_job = spy[-1][1]
    grid = _app(panel, qtbot, folder, how)
    app_job = spy[-1][1]
    assert len(spy) == 2 and spy[-1][0] == name
    assert {k: getattr(cli_job, k) for k in CHOICES} == {k: getattr(app_job, k) for k in CHOICES}, \
        (dataclasses.asdict(cli_job), dataclasses.asdict(app_job))
    files = sorted(out.glob("sample_*.png"))
    assert len(files) == N
    cli_images = [np.asarray(Image.open(f)) for f in files]
    side = cli_images[0].shape[0]
    app_images = _tiles(grid, N, side)
    for k, (a, b) in enumerate(zip(cli_images, app_images)):
        b = b if a.ndim == b.ndim else b[..., 0]
        assert a.shape == b.shape, (k, a.shape, b.shape)
        assert np.array_equal(a, b), (k, int(np.abs(a.astype(int) - b.astype(int)).max()))
    assert len({a.tobytes() for a in cli_images}) > 1  # four different samples, not one repeated
