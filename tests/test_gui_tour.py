"""The Learn dock's guided tour (issue 10, section 3): the shipped tour file, its equations rendered offline, every
step's "Show me" driven in the real window with the state it sets checked, the first-launch offer, bad tour files."""
from __future__ import annotations

import json

import pytest
import torch
from PySide6.QtCore import QRect, Qt
from PySide6.QtWidgets import QApplication, QWidget

from diffusion_studio import resources
from diffusion_studio.core.io.checkpoint import save_checkpoint
from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.core.nets.unet import UNet, preset_config
from diffusion_studio.gui.widgets.mathtext import EquationError, render_equation
from diffusion_studio.gui.tour.panel import EquationLabel, start_tour
from diffusion_studio.gui.tour.data import HIGHLIGHTS, TourError, load_tour, read_tour, tour_path

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WAIT_MS = 60_000
SEED_ORDER = ["forward_step", "schedule", "closed_form", "posterior", "training", "sampling", "ddim", "fid"]


def attr(root, path):
    for part in path.split("."):
        root = getattr(root, part)
    return root


def test_the_shipped_tour_follows_the_seeds_and_every_equation_renders(qapp):
    steps = load_tour()
    ids = [s.id for s in steps]
    assert [i for i in ids if i in SEED_ORDER] == SEED_ORDER      # the seeds' order
    for s in steps:  # (each step's equations are rendered and checked in the Show-me test below)
        assert s.equations and s.show and s.highlight and 2 <= s.text.count(". ") + 1 <= 6
    img = render_equation(steps[0].equations[0])
    assert not img.isNull() and img.width() > 100 and img.height() > 10
    assert img.hasAlphaChannel() and img.pixelColor(0, 0).alpha() == 0     # drawn on the dock's own background
    text = json.dumps([s.equations for s in steps])
    # the seeds' typos are not repeated: the sampling step divides by √(1−ᾱ_t) and μ̃ has 1/√α_t; β ends at 0.02
    sampling = next(s for s in steps if s.id == "sampling")
    assert any(r"\sqrt{1-\bar\alpha_t}" in e and r"\frac{1-\alpha_t}" in e for e in sampling.equations)
    posterior = next(s for s in steps if s.id == "posterior")
    assert any(r"\frac{1}{\sqrt{\alpha_t}}" in e for e in posterior.equations)
    assert r"\frac{1}{\sqrt{\bar\alpha_t}}" not in text and "0.02" in text


def test_the_shipped_tour_reads_without_a_problem_and_names_only_allowed_widgets():
    tour = read_tour()
    assert tour.problems == [] and [s.id for s in tour.steps] == [s.id for s in load_tour()]
    assert all(s.highlight in HIGHLIGHTS for s in tour.steps)


def test_a_broken_step_is_left_out_and_named_the_others_kept(tmp_path):
    doc = json.loads(tour_path().read_text(encoding="utf-8"))
    doc["steps"][1]["highlight"] = "__class__.__init__.__globals__"
    p = tmp_path / "tour.json"
    p.write_text(json.dumps(doc))
    tour = read_tour(p)
    assert len(tour.steps) == len(doc["steps"]) - 1 and doc["steps"][1]["id"] not in [s.id for s in tour.steps]
    assert tour.problems == [f"{p}: steps[1].highlight: not a widget the tour can point at (known: "
                             f"{', '.join(HIGHLIGHTS)}), got '__class__.__init__.__globals__'"]


def test_a_typo_in_an_equation_is_one_clear_error(qapp):
    with pytest.raises(EquationError, match="cannot render equation"):
        render_equation(r"\frac{1}{")


@pytest.mark.parametrize("doc, field", [
    ({"steps": []}, "steps"),
    ({"steps": [{"id": "a", "title": "A", "text": "x", "show": [["teleport", 1]]}]}, "steps[0].show[0]"),
    ({"steps": [{"id": "a", "title": "A", "text": "x", "show": [["t", "ten"]]}]}, "steps[0].show[0]"),
    ({"steps": [{"id": "a", "title": "A", "text": "x"}, {"id": "a", "title": "B", "text": "y"}]}, "steps[1].id"),
    ({"steps": [{"id": "a", "title": "", "text": "x"}]}, "steps[0].title"),
])
def test_bad_tour_files_name_the_file_and_field(tmp_path, doc, field):
    p = tmp_path / "tour.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(TourError) as e:
        load_tour(p)
    assert str(e.value).startswith(str(p)) and field in str(e.value) and "\n" not in str(e.value)
    p.write_text("{not json")
    with pytest.raises(TourError, match="not JSON"):
        load_tour(p)


def make_checkpoint(path, T=30):
    torch.manual_seed(0)
    cfg = preset_config("tiny", 16, 1)
    model = UNet(cfg)
    meta = {"step": 1, "model": cfg.to_dict(), "schedule": NoiseSchedule.create("linear", T).to_dict(),
            "data": {"spec": "test"}}
    return save_checkpoint(path, {"ema": dict(model.state_dict())}, meta)


@pytest.fixture
def tiny_models(tmp_path, monkeypatch):
    """No shipped model; a tiny T = 30 checkpoint to sample from instead (keeps the sampling steps quick)."""
    root = tmp_path / "models"
    root.mkdir()
    monkeypatch.setattr(resources, "models_dir", lambda: root)
    return make_checkpoint(tmp_path / "tiny.json")


def covers(outline: QWidget, target: QWidget, window) -> bool:
    r = QRect(target.mapTo(window, target.rect().topLeft()), target.size())
    return outline.isVisible() and outline.geometry().contains(r)


def check_action(win, name, arg, sample_max_steps):
    """The state each action promises, read back from the window (independently of the code that set it)."""
    if name == "tab":
        assert win.tabs.currentWidget() is getattr(win, arg)
    elif name == "dock":
        assert getattr(win, f"{arg}_dock").isVisible()
    elif name == "image":
        assert win.state.image is not None
    elif name == "schedule":
        assert win.state.schedule.kind == arg["kind"] and win.state.schedule.T == arg["T"]
    elif name == "t":
        assert win.state.paper_t == min(arg, win.state.schedule.T)
        assert win.schedule.plots.cursor_value == pytest.approx(win.state.paper_t)
    elif name == "chain":
        assert win.forward.chain_check.isChecked() is arg
    elif name == "colour_scale":
        assert win.forward.display_range == arg and win.forward.extras.colour_bar.value_range == arg
    elif name == "log_beta":
        assert win.schedule.log_beta.isChecked() is arg
    elif name == "sample":
        job = win.sampling.job
        assert job is not None and job.sampler == arg["sampler"] and job.n_images == arg.get("n", job.n_images)
        assert job.steps == min(arg["steps"], sample_max_steps)
        if "eta" in arg:
            assert job.eta == arg["eta"]
        if arg["sampler"] == "ddpm":
            assert job.variance == arg["variance"]
    elif name == "t_range":
        (x0, x1), _ = win.schedule.plots.plot_items[0].viewRange()
        if arg is False:
            assert x0 <= 0 and x1 >= win.state.schedule.T
        else:
            assert x0 <= arg[0] and arg[1] <= x1 <= arg[1] + 0.1 * (arg[1] - arg[0])
    elif name == "model":
        chooser = win.sampling.chooser
        assert arg not in chooser.builtins or f"builtin:{arg}" in (chooser.current_key, chooser._pending)
    elif name == "sampling_tab":
        tabs = win.sampling.tabs
        assert tabs.wanted == arg      # shown now, or as soon as a model it concerns is in use (Attention: text)
        if tabs.isTabVisible(tabs.indexOf(tabs.tab(arg))):
            assert tabs.tabText(tabs.currentIndex()) == arg
    else:
        raise AssertionError(f"the test does not know action {name!r}: add its check here")


def test_every_step_show_me_sets_its_state_and_highlights(tiny_models, window, qtbot):
    win = window
    combo = win.images.size_combo
    combo.setCurrentIndex(combo.findData(min(combo.itemData(i) for i in range(combo.count()))))  # a quick chain
    win.show_panel(win.sampling)
    with qtbot.waitSignal(win.sampling.model_loaded, timeout=WAIT_MS):
        win.sampling.open_checkpoint(tiny_models)
    win.tour_action.trigger()                                  # Help ▸ Tour
    dock = win.learn_dock
    assert dock.isVisible() and QApplication.activeModalWidget() is None
    panel = dock.panel
    assert panel.index == 0 and "Step 1 of" in panel.title_label.text()
    for i, step in enumerate(panel.steps):
        if i:
            qtbot.mouseClick(panel.next_button, Qt.MouseButton.LeftButton)
        assert panel.index == i and panel.step is step
        assert len(panel.equation_labels) == len(step.equations)
        assert all(isinstance(lab, EquationLabel) for lab in panel.equation_labels)   # none failed to render
        assert all(not lab.pixmap().isNull() and lab.pixmap().width() > 20 for lab in panel.equation_labels)
        qtbot.mouseClick(panel.show_button, Qt.MouseButton.LeftButton)
        for name, arg in step.show:
            check_action(win, name, arg, sample_max_steps=30)
        target = attr(win, step.highlight)
        assert panel.highlighted is target and target.isVisible()
        qtbot.waitUntil(lambda: covers(panel.highlighter, target, win), timeout=30_000)
        if win.sampling.running:
            with qtbot.waitSignal(win.sampling.run_finished, timeout=WAIT_MS):
                pass
    assert not panel.next_button.isEnabled()
    qtbot.mouseClick(panel.back_button, Qt.MouseButton.LeftButton)
    assert panel.index == len(panel.steps) - 2 and panel.highlighter.isHidden()


def test_show_me_while_sampling_restarts_with_the_new_sampler(tiny_models, window, qtbot):
    win = window
    win.show_panel(win.sampling)
    with qtbot.waitSignal(win.sampling.model_loaded, timeout=WAIT_MS):
        win.sampling.open_checkpoint(tiny_models)
    ids = [s.id for s in win.learn_dock.panel.steps]
    start_tour(win, ids.index("sampling"))
    win.learn_dock.panel.show_me()
    assert win.sampling.running and win.sampling.job.sampler == "ddpm"
    start_tour(win, ids.index("ddim"))
    with qtbot.waitSignal(win.sampling.run_finished, timeout=WAIT_MS):
        win.learn_dock.panel.show_me()                     # stops the DDPM run …
    qtbot.waitUntil(lambda: win.sampling.job.sampler == "ddim", timeout=WAIT_MS)   # … and starts DDIM after it
    with qtbot.waitSignal(win.sampling.run_finished, timeout=WAIT_MS) as blocker:
        pass
    assert blocker.args[0] == "done" and win.sampling.frames[-1].is_final


def test_first_launch_offers_the_tour_without_blocking(qtbot, settings):
    from diffusion_studio.gui.main_window import MainWindow

    win = MainWindow(settings, device="cpu")
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    try:
        offer = win.tour_offer
        assert offer is not None and offer.isVisible() and QApplication.activeModalWidget() is None
        assert not win.learn_dock.isVisible()                   # the dock waits to be asked for …
        assert win.learn_dock.panel.equation_labels == []       # … and renders nothing until then
        qtbot.mouseClick(offer.take, Qt.MouseButton.LeftButton)
        assert win.learn_dock.isVisible() and offer.isHidden() and win.learn_dock.panel.index == 0
        assert len(win.learn_dock.panel.equation_labels) == len(win.learn_dock.panel.steps[0].equations)
    finally:
        win.close()
    again = MainWindow(settings, device="cpu")                  # the next launch does not ask again
    qtbot.addWidget(again)
    try:
        assert again.tour_offer is None and again.tour_action is not None
    finally:
        again.close()


def test_the_tour_file_is_where_the_app_reads_it():
    assert tour_path().name == "tour.json" and tour_path().is_file()


@pytest.fixture
def tiny_builtin(tmp_path, monkeypatch):
    """The tiny checkpoint installed as the only shipped model, so the Sampling tab's first look loads it."""
    root = tmp_path / "models"
    (root / "tiny").mkdir(parents=True)
    make_checkpoint(root / "tiny" / "checkpoint.json")
    monkeypatch.setattr(resources, "models_dir", lambda: root)
    return root


def test_show_me_on_a_fresh_start_runs_the_steps_sampler_not_the_first_look(tiny_builtin, window, qtbot):
    # Nothing is loaded yet: Show me opens the Sampling tab (whose first look loads the shipped model and starts a
    # quick DDIM run of its own); the tour's DDPM run must still be the one that runs.
    win = window
    assert win.sampling.loaded is None
    ids = [s.id for s in win.learn_dock.panel.steps]
    start_tour(win, ids.index("sampling"))
    win.learn_dock.panel.show_me()
    qtbot.waitUntil(lambda: win.sampling.job is not None and win.sampling.job.sampler == "ddpm"
                    and win.sampling.running, timeout=WAIT_MS)
    assert win.sampling.job.steps == 30 and win.sampling.job.variance == "beta_tilde"
    with qtbot.waitSignal(win.sampling.run_finished, timeout=WAIT_MS) as blocker:
        pass
    assert blocker.args[0] == "done" and win.sampling.tabs.run_curves.t == list(range(30, 0, -1))
