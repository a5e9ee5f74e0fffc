"""CLI for text models (issue 11): train --text on a captioned folder, sample --prompt/--negative-prompt/--guidance,
and the one-line refusals (a prompt for an unconditional model, a missing encoder, an empty prompt)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from diffusion_studio import cli
from diffusion_studio.core.nets import text
from test_text_core import StubEncoder  # registers the stub encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A 3-step text run on a captioned folder, through `train --text` (stub encoder in place of MiniLM)."""
    root = tmp_path_factory.mktemp("cli_text")
    pics = root / "pics"
    pics.mkdir()
    for i in range(8):
        Image.new("RGB", (8, 8), (220, 20, 20) if i % 2 else (20, 20, 220)).save(pics / f"{i}.png")
        (pics / f"{i}.txt").write_text("red square" if i % 2 else "blue circle")
    mp = pytest.MonkeyPatch()
    mp.setattr(text, "DEFAULT_ENCODER", StubEncoder.name)
    try:
        code = cli.main(["train", "--data", str(pics), "--size", "8", "--model", "tiny", "--text", "--p-uncond",
                         "0.2", "--steps", "3", "--batch", "4", "--T", "20", "--precision", "fp32", "--device", "cpu",
                         "--out", str(root / "run"), "--quiet"])
    finally:
        mp.undo()
    assert code == 0
    return root / "run"


def test_train_text_records_the_encoder_and_captions(text_run):
    meta = json.loads((text_run / "checkpoint.json").read_text())
    assert meta["model"]["text_encoder"] == StubEncoder.name and meta["model"]["context_dim"] == StubEncoder.dim
    assert meta["train"]["text"] is True and meta["train"]["p_uncond"] == 0.2
    assert meta["data"]["captions"] == ["blue circle", "red square"]


def test_sample_with_prompt_negative_prompt_and_guidance(text_run, tmp_path, capsys):
    out = tmp_path / "s"
    assert cli.main(["sample", "--model", str(text_run), "--prompt", "red square", "--negative-prompt", "blue",
                     "--guidance", "5", "--n", "3", "--steps", "4", "--out", str(out), "--quiet"]) == 0
    files = sorted(out.glob("sample_*.png"))
    assert len(files) == 3 and np.asarray(Image.open(files[0])).shape == (8, 8, 3)
    assert cli.main(["sample", "--model", str(text_run), "--prompt", "red dragon", "--n", "1", "--steps", "2",
                     "--out", str(tmp_path / "d"), "--quiet"]) == 0
    assert "'dragon'" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--prompt", "   "], "argument --prompt: empty"),
    (["--negative-prompt", "x"], "argument --negative-prompt: needs --prompt"),
    (["--prompt", "a", "--label", "1"], "argument --prompt: not with --label"),
])
def test_bad_prompt_arguments_are_usage_errors(text_run, tmp_path, capsys, argv, message):
    assert cli.main(["sample", "--model", str(text_run), "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_a_prompt_for_an_unconditional_model_or_a_missing_encoder_is_one_line(text_run, tmp_path, capsys):
    assert cli.main(["sample", "--model", "builtin:digits", "--prompt", "a seven", "--out", str(tmp_path / "u")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "this model is unconditional; it was not trained on captions" in err[0]

    manifest = text_run / "checkpoint.json"
    meta = json.loads(manifest.read_text())
    meta["model"]["text_encoder"] = "an-encoder-nobody-installed"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(meta))
    (tmp_path / meta["weights"]).write_bytes((text_run / meta["weights"]).read_bytes())
    assert cli.main(["sample", "--model", str(other), "--prompt", "red", "--out", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "an-encoder-nobody-installed" in err[0] and "not have" in err[0]


def test_cross_attention_resolutions_are_chosen_recorded_and_kept_on_resume(text_run, tmp_path, capsys, monkeypatch):
    from diffusion_studio.core.io.checkpoint import load_checkpoint
    from diffusion_studio.core.nets.unet import CrossAttnBlock

    assert json.loads((text_run / "checkpoint.json").read_text())["model"]["cross_attn_resolutions"] == [4, 2]
    pics, run = text_run.parent / "pics", tmp_path / "run"
    base = ["train", "--data", str(pics), "--size", "8", "--model", "tiny", "--text", "--steps", "2", "--batch", "4",
            "--T", "20", "--precision", "fp32", "--device", "cpu", "--quiet"]
    monkeypatch.setattr(text, "DEFAULT_ENCODER", StubEncoder.name)
    assert cli.main([*base, "--cross-attn", "2,8,4", "--out", str(run)]) == 0
    model = load_checkpoint(run).build_model("cpu")
    # A tiny UNet at 8 px has one block per level down, two up, plus the bottleneck's: 3 + 6 + 1 at 8, 4, 2 px.
    assert model.config.cross_attn_resolutions == (8, 4, 2)
    assert sum(isinstance(m, CrossAttnBlock) for m in model.modules()) == 10
    capsys.readouterr()
    for argv, message in [
        ([*base, "--cross-attn", "8,3", "--out", str(tmp_path / "x")], "can sit at 8 px, 4 px, 2 px"),
        ([a for a in base if a != "--text"] + ["--cross-attn", "8", "--out", str(tmp_path / "y")], "needs --text"),
        (["train", "--out", str(run), "--resume", "--steps", "3", "--cross-attn", "4,2"], "trained with 8,4,2"),
    ]:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "argument --cross-attn: " in err[0] and message in err[0], err
