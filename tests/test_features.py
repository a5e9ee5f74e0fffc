"""Feature networks (the trained FeatureNet and the FID Inception-v3), their files, the classifier score and the CLI."""
from __future__ import annotations

import io
import json
import os
import pickle
import shlex
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from diffusion_studio.core.errors import CheckpointError
from diffusion_studio.core.metrics.features import (
    FeatureNet, FeatureNetConfig, builtin_feature_path, classifier_score, goal_met, load_feature_extractor,
    load_feature_net, save_feature_net, train_feature_net,
)
from diffusion_studio.core.metrics.inception import FIDInceptionV3, load_inception

# torchvision's inception_v3 (aux logits, 1000 classes) has 27,161,264 parameters (its documented num_params).
# pytorch-fid's FID net drops the aux head (conv0 98,304 + bn 256, conv1 2,457,600 + bn 1,536, fc 769,000 =
# 3,326,696) and has 1008 classes (+8 × 2049 = 16,392): 27,161,264 − 3,326,696 + 16,392 = 23,850,960.
FID_INCEPTION_PARAMS = 23_850_960




# ---- FeatureNet -----------------------------------------------------------------------------------------------------
def test_shipped_digits_net_is_small_and_accurate():
    path = builtin_feature_path("digits")
    if not (path / "features.safetensors").is_file():
        pytest.skip("the shipped digits feature network is not in this checkout")
    assert (path / "features.safetensors").stat().st_size < 1_000_000
    manifest = json.loads((path / "features.json").read_text())
    assert manifest["metrics"]["heldout_accuracy"] > 0.97
    assert manifest["trained_on"]["spec"] == "builtin:digits"
    assert "/" not in json.dumps(manifest["trained_on"]).replace("builtin:", "")  # no machine paths in the file


@pytest.mark.parametrize("shape", [(3, 1, 8, 8), (2, 3, 32, 32), (2, 1, 64, 64)])
def test_any_size_and_channel_count(shape):
    net = FeatureNet(FeatureNetConfig(in_channels=1, input_size=16)).eval()
    with torch.no_grad():
        f = net.features(torch.rand(shape) * 2 - 1)
        logits = net.logits(torch.rand(shape) * 2 - 1)
    assert f.shape == (shape[0], 128) and logits.shape == (shape[0], 10)


def test_config_is_validated():
    with pytest.raises(ValueError, match="input_size"):
        FeatureNetConfig(input_size=4)
    with pytest.raises(ValueError, match="task"):
        FeatureNetConfig(task="jigsaw")


def test_classifier_score_on_real_digits_and_noise(digits, digits_net):
    _, x = digits
    real = classifier_score(digits_net, x)
    assert real["confident_fraction"] > 0.9 and real["classes_present"] == 10
    assert real["max_min_ratio"] < 1.5 and sum(real["counts_all"]) == len(x)
    assert goal_met(real)
    noise = classifier_score(digits_net, torch.rand(400, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    assert noise["confident_fraction"] < 0.3 or noise["classes_present"] < 5
    assert not goal_met(noise)


def test_save_load_round_trip_gives_identical_features(tmp_path, digits, digits_net):
    _, x = digits
    folder = save_feature_net(digits_net, tmp_path / "net", meta={"trained_on": {"spec": "builtin:digits"}})
    assert sorted(p.name for p in folder.iterdir()) == ["features.json", "features.safetensors"]
    with torch.no_grad():
        before = digits_net.features(x[:64])
        for where in (folder, folder / "features.json", folder / "features.safetensors"):
            back = load_feature_net(where)
            assert torch.equal(back.features(x[:64]), before)
            assert back.name == digits_net.name and back.class_names == digits_net.class_names
    (folder / "features.json").unlink()  # the manifest is also in the weights' header: that file alone is enough
    assert load_feature_net(folder).config == digits_net.config


def test_feature_net_loading_errors(tmp_path):
    with pytest.raises(CheckpointError, match="inception:PATH"):
        load_feature_net(tmp_path / "weights.pth")
    with pytest.raises(CheckpointError, match="no such"):
        load_feature_net(tmp_path / "absent")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "features.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="safetensors"):
        load_feature_net(tmp_path / "bad")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="not a Diffusion Studio feature network") as e:
        load_feature_net(tmp_path / "plain.safetensors")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="unknown built-in"):
        load_feature_extractor("builtin:cats")


def test_unlabelled_data_trains_the_rotation_task(digits):
    _, x = digits
    net, metrics = train_feature_net(x[:400], None, epochs=3, seed=1, input_size=12, width=8, feature_dim=16)
    assert metrics["task"] == "rotation" and not net.is_classifier and net.config.num_classes == 4
    assert metrics["heldout_accuracy"] > 0.4  # chance is 0.25: digits have an orientation
    with pytest.raises(ValueError, match="rotation"):
        classifier_score(net, x[:10])


def test_training_is_seeded(digits):
    ds, x = digits
    a, ma = train_feature_net(x[:200], ds.labels[:200], epochs=1, seed=3, input_size=8, width=4, feature_dim=8)
    b, mb = train_feature_net(x[:200], ds.labels[:200], epochs=1, seed=3, input_size=8, width=4, feature_dim=8)
    assert a.name == b.name and ma["final_loss"] == mb["final_loss"]


# ---- FID Inception-v3 -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def inception():
    return FIDInceptionV3().eval()


def test_inception_architecture_matches_pytorch_fid(inception):
    assert sum(p.numel() for p in inception.parameters()) == FID_INCEPTION_PARAMS
    keys = inception.state_dict().keys()
    for key in ("Conv2d_1a_3x3.conv.weight", "Conv2d_4a_3x3.bn.running_var", "Mixed_5b.branch5x5_2.conv.weight",
                "Mixed_6e.branch7x7dbl_5.bn.bias", "Mixed_7c.branch3x3dbl_3b.conv.weight", "fc.weight"):
        assert key in keys
    assert not any(k.startswith("AuxLogits") for k in keys)
    assert inception.fc.weight.shape == (1008, 2048)


def test_inception_forward_gives_pool3_features(inception):
    with torch.no_grad():
        f = inception.features(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert f.shape == (2, 2048) and torch.isfinite(f).all()


@pytest.fixture(scope="module")
def inception_files(tmp_path_factory, inception):
    d = tmp_path_factory.mktemp("inception")
    state = inception.state_dict()
    torch.save(state, d / "pt_inception-2015-12-05-test.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(d / "inception.safetensors"))
    return d, state


@pytest.mark.parametrize("name", ["pt_inception-2015-12-05-test.pth", "inception.safetensors"])
def test_inception_weights_round_trip(inception_files, name):
    d, state = inception_files
    net = load_feature_extractor(f"inception:{d / name}")
    assert isinstance(net, FIDInceptionV3) and not net.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_inception_loads_files_without_batch_counters(tmp_path, inception_files):
    _, state = inception_files
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # pre-1.0 PyTorch files
    torch.save(old, tmp_path / "old.pth")
    assert isinstance(load_inception(tmp_path / "old.pth"), FIDInceptionV3)


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def test_malicious_pth_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "pt_inception-evil.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1), "x": _Payload(marker)}, evil)
    raw = tmp_path / "raw-pickle.pth"
    raw.write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    for path in (evil, raw):
        with pytest.raises(CheckpointError, match="weights_only") as e:
            load_inception(path)
        assert path.name in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()


def test_inception_key_mismatch_is_one_line_naming_the_file(tmp_path, inception_files):
    _, state = inception_files
    broken = dict(state)
    broken.pop("Mixed_6b.branch1x1.conv.weight")
    broken["extra.weight"] = torch.zeros(1)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="missing Mixed_6b.branch1x1.conv.weight") as e:
        load_inception(tmp_path / "broken.pth")
    assert str(e.value).startswith("broken.pth:") and "\n" not in str(e.value)
    bad_shape = {k: v.contiguous() for k, v in state.items()}
    bad_shape["fc.weight"] = torch.zeros(1000, 2048)
    save_file(bad_shape, str(tmp_path / "shape.safetensors"))
    with pytest.raises(CheckpointError, match="fc.weight"):
        load_inception(tmp_path / "shape.safetensors")
    with pytest.raises(CheckpointError, match="no such"):
        load_inception(tmp_path / "absent.pth")


# ---- the command ----------------------------------------------------------------------------------------------------
def _run(argv):
    from diffusion_studio.cli.fid import _add_arguments, run_fid
    import argparse
    parser = argparse.ArgumentParser()
    _add_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    code = run_fid(parser.parse_args(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_cli_fid_on_a_folder_of_pngs(tmp_path, digits, digits_net):
    if not (builtin_feature_path("digits") / "features.safetensors").is_file():
        pytest.skip("the shipped digits feature network is not in this checkout")
    from diffusion_studio.data import save_png
    _, x = digits
    for i in range(0, 250):
        save_png(x[i], tmp_path / "fake" / f"{i:04d}.png")
    code, out, _ = _run(["builtin:digits", str(tmp_path / "fake"), "--n-max", "600"])
    assert code == 0 and "FID:" in out and "classifier score" in out and "goal" in out
    code, out, _ = _run(["builtin:digits", str(tmp_path / "fake"), "--json", "--n-max", "600", "--save-stats",
                         str(tmp_path / "real.npz")])
    result = json.loads(out)
    assert result["fid"] < 5 and result["n_fake"] == 250 and result["classifier_score"]["classes_present"] == 10
    code, out, _ = _run([str(tmp_path / "real.npz"), str(tmp_path / "fake"), "--features", "builtin:digits",
                         "--json"])
    assert json.loads(out)["fid"] == pytest.approx(result["fid"], rel=1e-6)


def test_cli_errors_are_value_errors(tmp_path):
    from diffusion_studio.data import save_png
    save_png(torch.zeros(1, 8, 8), tmp_path / "a" / "0.png")
    from diffusion_studio.cli.common import UsageError  # a missing or wrong option is a usage error (exit 2)
    with pytest.raises(UsageError, match="--features"):
        _run([str(tmp_path / "a"), str(tmp_path / "a")])
    with pytest.raises(UsageError, match="FAKE"):
        _run(["builtin:digits"])
    with pytest.raises(ValueError):  # DataError is a ValueError
        _run(["builtin:digits", str(tmp_path / "absent"), "--features", "builtin:digits"])


def test_cli_train_features(tmp_path):
    code, out, _ = _run(["builtin:digits", "--train-features", str(tmp_path / "net"), "--size", "8", "--epochs", "1",
                         "--n-max", "300", "--json"])
    result = json.loads(out)
    assert code == 0 and result["training"]["task"] == "classify" and result["training"]["n_train"] == 255
    assert load_feature_net(tmp_path / "net").config.input_size == 8


@pytest.mark.slow  # Inception at 299×299 and two 2048×2048 eigen-decompositions: ~5 s on an idle 2-core CPU
def test_cli_with_inception_weights_from_a_local_file(tmp_path, inception_files):
    from diffusion_studio.data import save_png
    d, _ = inception_files
    g = torch.Generator().manual_seed(0)
    for i in range(2):
        save_png(torch.rand(3, 16, 16, generator=g) * 2 - 1, tmp_path / "a" / f"{i}.png")
        save_png(torch.rand(3, 16, 16, generator=g) * 2 - 1, tmp_path / "b" / f"{i}.png")
    code, out, _ = _run([str(tmp_path / "a"), str(tmp_path / "b"), "--features",
                         f"inception:{d / 'inception.safetensors'}", "--size", "16", "--json"])
    result = json.loads(out)
    assert code == 0 and result["dim"] == 2048 and result["fid"] >= 0 and "classifier_score" not in result
    assert "rank-deficient" in result["warnings"][0]  # 2 images for 2048-d features: said, not crashed
