"""scripts/finetune_from_export.py (how builtin:shapes was trained further, issue 25): a fresh run that starts from an
exported checkpoint's weights, and a clear refusal when the arguments build another network."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from diffusion_studio.core.io.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[1]
BASE = ["--data", "builtin:digits", "--unconditional", "--model", "micro", "--size", "8", "--T", "50", "--batch", "8",
        "--preview-every", "0", "-q"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    from diffusion_studio import cli

    work = tmp_path_factory.mktemp("finetune")
    assert cli.main(["train", *BASE, "--steps", "1", "--out", str(work / "run")]) == 0
    assert cli.main(["export", str(work / "run"), "--out", str(work / "exported")]) == 0
    return work / "exported"


def _script():
    spec = importlib.util.spec_from_file_location("finetune_from_export", ROOT / "scripts" / "finetune_from_export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_run_starts_from_the_exported_weights(tmp_path, exported):
    script = _script()
    trainer = script.trainer_from_export(str(exported), [*BASE, "--steps", "2", "--out", str(tmp_path / "run")])
    want = load_checkpoint(exported).tensors["ema"]
    for net in (trainer.model, trainer.ema):
        got = net.state_dict()
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    list(trainer.run())  # and it trains on from there
    assert trainer.step == 2
    assert any(not torch.equal(trainer.model.state_dict()[k], want[k]) for k in want)


def test_another_network_is_refused_in_one_line(tmp_path, exported):
    script = _script()
    args = [a for a in BASE if a != "--unconditional"]  # labelled digits: class-conditional, not the export's
    with pytest.raises(ValueError, match="not the network these arguments build") as e:
        script.trainer_from_export(str(exported), [*args, "--steps", "2", "--out", str(tmp_path / "run")])
    assert "\n" not in str(e.value) and 'Missing key(s) in state_dict: "class_emb.weight"' in str(e.value)
