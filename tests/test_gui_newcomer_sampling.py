"""Issue 24, the Sampling tab as a newcomer met it: long prompts (bug 2), the Latent tab's sizes (5), the guidance sweep
strip's prompt (7), switching model (14), the tab titles (16), attention-map labels (17), the first run and the
status bar (18), T = 2 and the empty prompt (19), and the prompt box's gaps (Enter, ∅, colour scale, word pieces)."""
from __future__ import annotations

import logging
import re

import pytest
import torch
from PySide6.QtCore import QRect, Qt

from diffusion_studio import resources
from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.core.io.checkpoint import save_checkpoint
from diffusion_studio.core.nets.conditioning import with_text
from diffusion_studio.core.nets.unet import UNet, UNetConfig
from test_gui_latent import latent_checkpoint
from test_gui_sampling import make_checkpoint
from test_text_core import StubEncoder, tiny_text_config  # registers the stub encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")
WAIT_MS = 120_000
LONG = "a large dark background on the left side of the picture with a small blue circle"


def _randomised(cfg) -> UNet:
    torch.manual_seed(0)
    model = UNet(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _text_checkpoint(path, cfg, captions, encoder_name):
    words = sorted({w for c in captions for w in c.split()})
    meta = {"step": 1, "model": cfg.to_dict(), "schedule": NoiseSchedule.create("linear", 40).to_dict(),
            "data": {"spec": "test", "captions": captions, "caption_words": words, "text_encoder": encoder_name}}
    return save_checkpoint(path, {"ema": dict(_randomised(cfg).state_dict())}, meta)


@pytest.fixture(scope="module")
def stub_text(tmp_path_factory):
    """A tiny text model on the stub encoder (one token per word, whole words)."""
    return _text_checkpoint(tmp_path_factory.mktemp("stub") / "stub.json", tiny_text_config(8),
                            ["red square", "blue circle", "green triangle on a dark background"], StubEncoder.name)


@pytest.fixture(scope="module")
def minilm_text(tmp_path_factory):
    """A tiny text model on the real all-MiniLM-L6-v2 (word pieces, 384-d)."""
    from diffusion_studio.core.nets.text import DEFAULT_ENCODER

    cfg = UNetConfig(image_size=8, in_channels=3, base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                     attn_resolutions=(), groups=4, num_heads=2)
    return _text_checkpoint(tmp_path_factory.mktemp("minilm") / "minilm.json",
                            with_text(cfg, DEFAULT_ENCODER, 384, fractions=(1, 2)),
                            ["a red star", "a blue circle", "and a square"], DEFAULT_ENCODER)


@pytest.fixture(scope="module")
def pixel_ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("pixel") / "pixel.json")


@pytest.fixture(scope="module")
def latent_ckpt(tmp_path_factory):
    return latent_checkpoint(tmp_path_factory.mktemp("latent") / "latent.json")


@pytest.fixture
def no_builtins(tmp_path, monkeypatch):
    root = tmp_path / "models"
    root.mkdir()
    monkeypatch.setattr(resources, "models_dir", lambda: root)


@pytest.fixture
def panel(qtbot, settings, no_builtins):
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
    assert p.pool.shutdown(timeout_ms=20_000)


def _open(panel, qtbot, path):
    with qtbot.waitSignal(panel.model_loaded, timeout=WAIT_MS):
        panel.open_checkpoint(path)


def _run(panel, qtbot, start=None) -> str:
    with qtbot.waitSignal(panel.run_finished, timeout=WAIT_MS) as blocker:
        (start or panel.sample_button.click)()
    return blocker.args[0]


def _shown_words(view) -> list[str]:
    return [cap.text() for _img, cap in view.tiles if cap.isVisible()]


# ---- bug 2: long prompts ----------------------------------------------------------------------------------------------
def test_long_prompt_keeps_every_word_and_names_what_a_too_long_one_loses(panel, qtbot, minilm_text):
    """The user's prompt of 16 word pieces reaches the model whole (the Attention tab ends at "circle", not "small");
    the "never saw" list names each word once; a prompt past the encoder's own limit says which words it dropped."""
    from diffusion_studio.core.nets.text import get_encoder

    _open(panel, qtbot, minilm_text)
    panel.controls.n_spin.setValue(1)
    panel.controls.steps_spin.setValue(2)
    box = panel.prompt_box
    box.set_prompt(LONG)
    assert _run(panel, qtbot) == "done"
    att = panel.frames[-1].attention
    assert att.words == LONG.split()  # every word: none cut at 14 tokens
    panel.tabs.show_tab("Attention")
    panel.show_frame(len(panel.frames) - 1)
    qtbot.waitUntil(lambda: _shown_words(panel.attention_view)[-2:] == ["blue", "circle"], timeout=30_000)
    notes = box.notes_label.text()
    unseen = re.findall(r"'([a-z]+)'", notes)
    assert "never saw" in notes and unseen and len(unseen) == len(set(unseen))  # 'the' twice in the prompt, once here
    assert {"the", "large", "small"} <= set(unseen) and "blue" not in unseen
    assert "dropped" not in notes

    limit = get_encoder(panel.loaded.checkpoint.model_config.text_encoder).max_tokens
    assert limit >= 256  # the encoder's own limit (sentence-transformers' max_seq_length), not 16
    words = ["circle"] * (limit + 5) + ["giraffe"]
    box.set_prompt(" ".join(words))
    assert _run(panel, qtbot) == "done"
    dropped = len(words) - (limit - 2)  # [CLS] and [SEP] take two of the limit's tokens; each word is one token
    qtbot.waitUntil(lambda: "dropped" in box.notes_label.text(), timeout=30_000)
    text = box.notes_label.text()
    assert f"{limit} tokens at most" in text and f"the last {dropped} words" in text and "giraffe" in text
    assert len(panel.frames[-1].attention.words) == limit - 2


# ---- bug 5: the Latent tab ---------------------------------------------------------------------------------------------
def _sample_px(pane, per_side: int) -> float:
    """The on-screen height of one sample of the grid the pane shows (the scene is the widget's pixels)."""
    return pane.item.sceneBoundingRect().height() / per_side


@pytest.mark.parametrize("size", [(1280, 800), (1024, 700)])
def test_latent_tab_leaves_the_decoded_samples_their_size(window, qtbot, latent_ckpt, size):
    """The user's steps: the Sampling tab, "Built-in: shapes-latent" from the model list (or a tiny latent model when
    it is not installed), the Latent tab, ▶ Sample."""
    window.resize(*size)
    sp = window.sampling
    window.show_panel(sp)
    qtbot.waitUntil(lambda: not sp.running and not sp.chooser.is_loading, timeout=WAIT_MS)  # the first look, if any
    combo = sp.chooser.combo
    index = combo.findData("builtin:shapes-latent")
    with qtbot.waitSignal(sp.model_loaded, timeout=WAIT_MS):
        if index >= 0:
            combo.setCurrentIndex(index)
            combo.activated.emit(index)
        else:
            sp.open_checkpoint(latent_ckpt)
    assert sp.loaded.is_latent
    sp.controls.n_spin.setValue(16)
    sp.tabs.tabButton(sp.tabs.indexOf(sp.latent_view)).click()
    assert _run(sp, qtbot) == "done"
    assert sp.tabs.currentWidget() is sp.latent_view and sp.latent_view.isVisible()
    assert sp.latent_view.pane.current is not None
    qtbot.waitUntil(lambda: sp.x_pane.height() >= 0.8 * sp.eps_pane.height(), timeout=30_000)  # rows share the height
    assert _sample_px(sp.x_pane, 4) >= 30  # the issue saw ~12 px a sample


# ---- bug 7: the sweep strip ------------------------------------------------------------------------------------------
def test_sweep_strip_says_which_prompt_it_shows_and_empties_for_another(panel, qtbot, stub_text):
    _open(panel, qtbot, stub_text)
    box = panel.prompt_box
    panel.controls.steps_spin.setValue(3)
    box.set_prompt("red square")
    box.sweep_button.click()
    qtbot.waitUntil(lambda: panel.sweep_worker is None, timeout=WAIT_MS)
    assert all(not img.pixmap().isNull() for img in box.sweep_images)
    assert box.sweep_label.isVisible() and box.sweep_label.text() == "Sweep of “red square”"

    box.set_prompt("blue circle")  # the strip still holds red squares: it says so
    assert box.sweep_label.text() == "Sweep of an earlier prompt, “red square”"
    box.sweep_button.click()  # a sweep of the new prompt empties the strip at once, under the new prompt's name
    assert all(img.pixmap().isNull() for img in box.sweep_images)
    assert box.sweep_label.text() == "Sweep of “blue circle”"
    qtbot.waitUntil(lambda: panel.sweep_worker is None, timeout=WAIT_MS)
    assert all(not img.pixmap().isNull() for img in box.sweep_images)


# ---- bug 14: another model -------------------------------------------------------------------------------------------
def test_switching_model_clears_the_last_models_titles_curves_and_maps(panel, qtbot, latent_ckpt, stub_text,
                                                                       pixel_ckpt):
    _open(panel, qtbot, latent_ckpt)
    panel.controls.steps_spin.setValue(3)
    assert _run(panel, qtbot) == "done"
    assert panel.x_pane.label.text.startswith("decoded")
    assert len(panel.tabs.run_curves.t) == 3

    _open(panel, qtbot, pixel_ckpt)  # a pixel model: no "decoded z₀", no curves or frames of the other model
    assert [p.label.text for p in (panel.x_pane, panel.x0_pane, panel.eps_pane)] == ["x_t", "predicted x₀",
                                                                                   "predicted ε ÷ 3"]
    assert panel.frames == [] and panel.x_pane.current is None and panel.t_label.text() == "t = –"
    assert panel.tabs.run_curves.t == [] and all(len(c.getData()[0] if c.getData()[0] is not None else []) == 0
                                                 for c in panel.tabs.run_curves.curves.values())
    assert panel.progress.format() == "idle" and panel.state.reverse_t is None

    _open(panel, qtbot, stub_text)
    panel.prompt_box.set_prompt("red square")
    assert _run(panel, qtbot) == "done"
    panel.tabs.show_tab("Attention")
    panel.show_frame(len(panel.frames) - 1)
    assert _shown_words(panel.attention_view) == ["sample", "red", "square"]
    _open(panel, qtbot, pixel_ckpt)  # the text model's maps go with it
    tabs = panel.tabs
    assert not tabs.isTabVisible(tabs.indexOf(panel.attention_view)) and tabs.currentWidget() is tabs.run_curves
    assert _shown_words(panel.attention_view) == []


def test_switching_model_mid_run_drops_the_old_runs_frames(panel, qtbot, pixel_ckpt, stub_text):
    _open(panel, qtbot, pixel_ckpt)
    panel.controls.select_sampler("ddpm", "beta")
    panel.controls.steps_spin.setValue(panel.controls.steps_spin.maximum())
    panel.sample_button.click()
    qtbot.waitUntil(lambda: len(panel.frames) >= 2, timeout=WAIT_MS)
    panel.worker.pause()  # held mid-run (a fast machine would finish 50 steps before the next model loads)
    messages = []
    panel.state.message.connect(messages.append)
    with qtbot.waitSignal(panel.run_finished, timeout=WAIT_MS):
        _open(panel, qtbot, stub_text)
    qtbot.waitUntil(lambda: not panel.running, timeout=WAIT_MS)
    assert panel.frames == [] and panel.x_pane.current is None and panel.progress.format() == "idle"
    assert not any("stopped at step" in m for m in messages)


# ---- bugs 16 and 17: titles and labels whole ---------------------------------------------------------------------------
def _whole_in(widget, outer) -> bool:
    """``widget`` lies wholly inside ``outer`` on screen and is wide enough for its text."""
    top_left = widget.mapTo(outer, widget.rect().topLeft())
    inside = outer.rect().contains(QRect(top_left, widget.size()))
    return inside and widget.width() >= widget.fontMetrics().horizontalAdvance(widget.text())


@pytest.mark.parametrize("size", [(1024, 700), (1280, 800)])
def test_every_sampling_tab_title_shows_whole(window, qtbot, no_builtins, stub_text, latent_ckpt, size):
    window.resize(*size)
    sp = window.sampling
    window.show_panel(sp)
    for ckpt, own in ((stub_text, "Attention"), (latent_ckpt, "Latent")):
        _open(sp, qtbot, ckpt)
        tabs = sp.tabs
        titles = [tabs.tabText(i) for i in range(tabs.count()) if tabs.isTabVisible(i)]
        assert own in titles and "Run curves" in titles
        for i in range(tabs.count()):
            if tabs.isTabVisible(i):
                button = tabs.tabButton(i)
                qtbot.waitUntil(lambda b=button: b.isVisible() and _whole_in(b, tabs), timeout=30_000)
                assert button.text() == tabs.tabText(i)  # never "At…"
        tabs.tabButton(tabs.indexOf(tabs.tab(own))).click()
        assert tabs.currentWidget() is tabs.tab(own)


@pytest.mark.parametrize("width", [330, 900])
def test_attention_word_labels_are_not_clipped(panel, qtbot, stub_text, width):
    _open(panel, qtbot, stub_text)
    panel.controls.steps_spin.setValue(2)
    panel.controls.n_spin.setValue(2)
    panel.prompt_box.set_prompt("triangle on a dark background")
    assert _run(panel, qtbot) == "done"
    panel.tabs.show_tab("Attention")
    panel.resize(width + 600, 700)
    view = panel.attention_view
    qtbot.waitUntil(lambda: view.isVisible(), timeout=30_000)
    panel.show_frame(len(panel.frames) - 1)
    assert _shown_words(view) == ["sample", "triangle", "on", "a", "dark", "background"]
    viewport = view.scroll.viewport()

    def whole_across(cap) -> bool:  # inside the viewport from left to right (rows below scroll), text whole
        x = cap.mapTo(viewport, cap.rect().topLeft()).x()
        return x >= 0 and x + cap.width() <= viewport.width() and \
            cap.fontMetrics().horizontalAdvance(cap.text()) <= cap.contentsRect().width()

    qtbot.waitUntil(lambda: all(whole_across(cap) for _img, cap in view.tiles if cap.isVisible()), timeout=30_000)
    assert view.scroll.horizontalScrollBar().maximum() == 0  # nothing hides to the right either


# ---- gaps: colour scale, word pieces ---------------------------------------------------------------------------------
def test_attention_maps_have_a_colour_scale_and_word_pieces_are_explained(panel, qtbot, minilm_text):
    _open(panel, qtbot, minilm_text)
    panel.controls.steps_spin.setValue(2)
    panel.controls.n_spin.setValue(1)
    panel.prompt_box.set_prompt("a giraffe")
    assert _run(panel, qtbot) == "done"
    panel.tabs.show_tab("Attention")
    panel.show_frame(len(panel.frames) - 1)
    view = panel.attention_view
    att = panel.frames[-1].attention
    assert att.words == ["a", "gi", "##raf", "##fe"]
    assert view.scale.isVisible() and not view.scale.bar.pixmap().isNull()
    assert (view.scale.low.text(), view.scale.high.text()) == ("0", "max") and "weight" in view.scale.toolTip()
    caps = {cap.text(): cap for _img, cap in view.tiles if cap.isVisible()}
    tip = caps["##raf"].toolTip()
    assert "word piece" in tip and "giraffe" in tip and "“gi” + “##raf” + “##fe”" in tip
    peak = float(att.peaks[0, 2])
    assert 0 < peak <= 1 and f"White is {peak:.2f}" in tip
    assert "word piece" not in caps["a"].toolTip()


# ---- bug 18: the first run and the status bar ------------------------------------------------------------------------
def test_first_look_runs_the_steps_field_and_a_tour_run_clears_the_stop_message(window, qtbot):
    from diffusion_studio.gui.tour.panel import TourActions

    sp = window.sampling
    if not sp.chooser.builtins:
        pytest.skip("the shipped digits model is not installed")
    sp.controls.steps_spin.setValue(30)
    with qtbot.waitSignal(sp.run_finished, timeout=WAIT_MS):
        window.show_panel(sp)  # the tab's first look
    assert sp.job.steps == sp.controls.steps_spin.value() == 30 and "30 steps" in sp.made_by
    assert sp.progress.maximum() == 30 and sp.frames[-1].n_steps == 30

    sp.controls.select_sampler("ddpm", "beta")  # a long run, which the tour's "Show me" replaces
    sp.controls.steps_spin.setValue(sp.controls.steps_spin.maximum())
    sp.start()
    qtbot.waitUntil(lambda: sp.progress.value() >= 1, timeout=WAIT_MS)
    messages = []
    window.state.message.connect(messages.append)
    TourActions(window).do_sample({"sampler": "ddim", "steps": 20, "n": 4})
    qtbot.waitUntil(lambda: sp.running and sp.job.steps == 20, timeout=WAIT_MS)
    status = window.statusBar().currentMessage()
    assert "stopped" not in status and "20 steps" in status  # the new run's own message, not the old run's end
    assert any("stopped at step" in m for m in messages)  # (the old run did say it stopped, before)
    qtbot.waitUntil(lambda: not sp.running, timeout=WAIT_MS)


def test_first_look_of_a_slow_form_says_it_ran_a_quick_one(window, qtbot):
    sp = window.sampling
    if not sp.chooser.builtins:
        pytest.skip("the shipped digits model is not installed")
    sp.controls.steps_spin.setValue(200)
    with qtbot.waitSignal(sp.run_finished, timeout=WAIT_MS):
        window.show_panel(sp)  # the tab's first look: 200 DDIM steps would keep a newcomer waiting
    assert sp.job.steps == 20 and "20 steps" in sp.made_by and sp.controls.steps_spin.value() == 200
    assert "First look" in sp.hint_label.text() and "200 steps" in sp.hint_label.text()


# ---- bug 19 and the prompt box's gaps ---------------------------------------------------------------------------------
def test_empty_prompt_samples_unconditionally_on_enter_without_an_error(panel, qtbot, stub_text, caplog):
    _open(panel, qtbot, stub_text)
    panel.controls.steps_spin.setValue(3)
    box = panel.prompt_box
    box.set_prompt("")
    assert box.notes_label.isVisible() and "unconditionally" in box.notes_label.text()
    caplog.set_level(logging.INFO)
    with qtbot.waitSignal(panel.run_finished, timeout=WAIT_MS) as blocker:
        qtbot.keyClick(box.prompt_combo.lineEdit(), Qt.Key.Key_Return)  # Enter samples
    assert blocker.args == ["done"]
    assert panel.job.prompt is None and panel.job.negative_prompt is None
    assert "no prompt: unconditional" in panel.made_by
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    panel.tabs.show_tab("Attention")
    assert "unconditionally" in panel.attention_view.note.text() and _shown_words(panel.attention_view) == []

    box.set_prompt("red square")
    with qtbot.waitSignal(panel.run_finished, timeout=WAIT_MS):
        qtbot.keyClick(box.prompt_combo.lineEdit(), Qt.Key.Key_Return)
    assert panel.job.prompt == "red square" and "“red square”" in panel.made_by
    assert not box.notes_label.isVisible()


def test_forward_filmstrip_at_T_2_shows_each_t_once(window, qtbot):
    window.show_panel(window.forward)
    window.state.set_schedule(NoiseSchedule.create("linear", 2))
    fw = window.forward
    qtbot.waitUntil(lambda: fw.film_pane.label.text.endswith("t = 0, 1, 2"), timeout=WAIT_MS)
    film = fw.filmstrip
    h = film.shape[0]
    assert film.shape[1] == 3 * h + 2 * max(2, h // 32)  # three frames and two gaps


def test_a_prompt_the_encoder_cannot_read_is_one_line_not_a_logged_error(panel, qtbot, minilm_text, caplog):
    _open(panel, qtbot, minilm_text)
    panel.controls.steps_spin.setValue(2)
    panel.prompt_box.set_prompt("\U0001f600")
    caplog.set_level(logging.INFO)
    assert _run(panel, qtbot) == "error"
    assert panel.error_label.isVisible()
    assert panel.error_label.text() == "Cannot sample this prompt: the encoder can represent none of '\U0001f600'"
    assert panel.frames == [] and not [r for r in caplog.records if r.levelno >= logging.ERROR]
