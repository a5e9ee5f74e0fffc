"""The sampler lab in the Sampling tab (issue 23): every sampler in the sampler list with diffusers' timestep
spacings and Karras σs; the Compare tab (samplers from one x_T, side by side); the Quality tab (classifier score and
FID against model evaluations, measured in a worker and cached per model)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from diffusion_studio import resources
from diffusion_studio.jobs import quality
from diffusion_studio.jobs.frames import grid_u8
from diffusion_studio.jobs.sampling import final_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MODELS = Path(__file__).parent / "fixtures" / "release2" / "models"
WAIT_MS = 180_000


@pytest.fixture
def panel(qtbot, settings, tmp_path, monkeypatch):
    from diffusion_studio.gui.panels.sampling.panel import SamplingPanel
    from diffusion_studio.gui.state import AppState
    from diffusion_studio.gui.workers import WorkerPool

    (tmp_path / "no-models").mkdir()
    monkeypatch.setattr(resources, "models_dir", lambda: tmp_path / "no-models")  # no first look
    monkeypatch.setenv("DIFFUSION_STUDIO_CACHE", str(tmp_path / "cache"))  # the quality cache of this test alone
    p = SamplingPanel(AppState(device="cpu"), WorkerPool(), settings)
    qtbot.addWidget(p)
    p.resize(1200, 760)
    p.show()
    qtbot.waitExposed(p)
    yield p
    p.shutdown()
    assert p.pool.shutdown(timeout_ms=20_000)


SHIPPED_DIGITS = Path(__file__).resolve().parents[1] / "resources" / "models" / "digits"


def _load(panel, qtbot, name="cli_run"):
    folder = SHIPPED_DIGITS if name == "digits" else MODELS / name
    with qtbot.waitSignal(panel.model_loaded, timeout=WAIT_MS):
        panel.open_checkpoint(folder / "checkpoint.json")
    return panel.loaded


@pytest.mark.parametrize("text, spacing, karras", [("DPM-Solver++ (2M)", "trailing", False),
                                                   ("Heun (ODE, 2nd order)", "linspace", True),
                                                   ("UniPC", "leading", False),
                                                   ("Euler ancestral", "linspace", False)])
def test_every_sampler_runs_from_the_sampler_list(panel, qtbot, text, spacing, karras):
    loaded = _load(panel, qtbot)
    c = panel.controls
    c.sampler_combo.setCurrentIndex(c.sampler_combo.findText(text))
    c.steps_spin.setValue(4)
    c.n_spin.setValue(4)
    c.seed_spin.setValue(9)
    c.clip_check.setChecked(False)
    c.spacing_combo.setCurrentIndex(c.spacing_combo.findData(spacing))
    assert c.karras_check.isEnabled()
    c.karras_check.setChecked(karras)
    with qtbot.waitSignal(panel.run_finished, timeout=WAIT_MS) as blocker:
        qtbot.mouseClick(panel.sample_button, Qt.MouseButton.LeftButton)
    assert blocker.args[0] == "done"
    job = panel.job
    assert (job.timestep_spacing, job.karras, job.steps) == (spacing, karras, 4)
    assert panel.frames[-1].is_final and panel.frames[0].x0 is None
    want = final_images(loaded, job, "auto")  # the pipeline run independently of the panel
    got = panel.frames[-1].x
    assert np.abs(got.astype(int) - grid_u8(want).astype(int)).max() <= 1
    evals = 7 if job.sampler == "heun" else 4
    assert f"{evals} evaluations" in panel.made_by


def test_ddim_greys_out_karras(panel, qtbot):
    _load(panel, qtbot)
    c = panel.controls
    c.select_sampler("ddim")
    assert not c.karras_check.isEnabled()
    c.karras_check.setChecked(True)
    assert c.job().karras is False


def test_compare_runs_the_chosen_samplers_from_one_x_T(panel, qtbot):
    loaded = _load(panel, qtbot, "digits")  # a trained model: its samplers' pictures differ in the details
    panel.controls.seed_spin.setValue(4)
    panel.controls.clip_check.setChecked(False)  # an untrained net's x̂₀ clipped would saturate every sampler alike
    view = panel.compare_view
    assert panel.tabs.show_tab("Compare")
    for key, box in view.checks.items():
        box.setChecked(key in ("ddim", "heun", "dpm++2m"))
    view.evals_spin.setValue(5)
    worker = view.start()
    assert worker is not None
    with qtbot.waitSignal(worker.finished, timeout=WAIT_MS):
        pass
    qtbot.waitUntil(lambda: view.worker is None, timeout=30_000)
    rows = {r.sampler: r for r in view.results}
    assert set(rows) == {"ddim", "heun", "dpm++2m"}
    assert (rows["heun"].steps, rows["heun"].evals) == (3, 5) and rows["dpm++2m"].evals == 5
    # every row starts from the x_T the seed draws: the DDIM row is the pipeline's own DDIM-5 from seed 4
    from diffusion_studio.jobs.sampling import SamplingJob

    want = final_images(loaded, SamplingJob(sampler="ddim", steps=5, n_images=4, seed=4, clip_x0=False), "auto")
    assert np.abs(rows["ddim"].final.astype(int) - grid_u8(want).astype(int)).max() <= 1
    side = loaded.config.image_size
    assert rows["ddim"].path_steps == [1, 2, 3, 4, 5] and rows["ddim"].path.shape[1] >= 5 * side
    assert not np.array_equal(rows["ddim"].final, rows["dpm++2m"].final)  # different solvers, different samples


def test_quality_is_measured_once_and_then_read_from_the_cache(panel, qtbot, monkeypatch):
    _load(panel, qtbot)  # trained on builtin:digits: the shipped digits classifier judges it
    view = panel.quality_view
    assert view.run_button.isEnabled() and "builtin:digits" in view.note.text()
    view.n_spin.setValue(32)
    monkeypatch.setattr(quality, "BUDGETS", (2, 4))
    monkeypatch.setattr(quality, "SAMPLERS", ("ddim", "dpm++2m", "ddpm"))
    runs = quality.plan(panel.loaded.schedule.T, quality.SAMPLERS, quality.BUDGETS)
    monkeypatch.setattr(quality, "plan", lambda T, *a, **k: runs)
    worker = view.start()
    with qtbot.waitSignal(worker.finished, timeout=WAIT_MS):
        pass
    qtbot.waitUntil(lambda: view.worker is None, timeout=30_000)
    assert len(view.points) == len(runs) == 2 + 2 + 2 + 1
    for p in view.points:
        assert 0.0 <= p.confident <= 1.0 and np.isfinite(p.fid) and p.fid >= 0 and p.n == 32
    assert {("ddim", "score"), ("dpm++2m", "fid"), ("ddpm", "fid")} <= set(view.curves)
    first = [(p.sampler, p.steps, p.fid) for p in view.points]
    # The second time nothing is sampled: every point comes from the cache, keyed by the model's weights.
    monkeypatch.setattr(quality, "final_images", lambda *a, **k: pytest.fail("sampled again"))
    worker = view.start()
    with qtbot.waitSignal(worker.finished, timeout=WAIT_MS):
        pass
    qtbot.waitUntil(lambda: view.worker is None, timeout=30_000)
    assert [(p.sampler, p.steps, p.fid) for p in view.points] == first


def test_quality_says_when_no_classifier_knows_the_data(panel, qtbot):
    _load(panel, qtbot, "latent_run")  # builtin:shapes at 8 px
    loaded = panel.loaded
    if quality.judge_for(loaded) is None:
        assert not panel.quality_view.run_button.isEnabled()
        assert "No shipped classifier" in panel.quality_view.note.text()
    else:
        assert panel.quality_view.run_button.isEnabled()
