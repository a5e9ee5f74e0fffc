"""Checkpoints: safetensors + JSON, atomic layout, exact round trips, and every way a file can be refused."""
from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import struct

import pytest
import torch

from diffusion_studio.core.io.checkpoint import load_checkpoint, manifest_path, save_checkpoint
from diffusion_studio.core.errors import CheckpointError
from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.core.train.trainer import TensorImages, Trainer
from diffusion_studio.core.train.config import TrainConfig
from diffusion_studio.core.nets.unet import UNet, UNetConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MICRO = UNetConfig(image_size=8, in_channels=1, base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                   attn_resolutions=(4,), groups=8, num_heads=2, preset=None)


def random_model(seed: int, config: UNetConfig = MICRO) -> UNet:
    g = torch.Generator().manual_seed(seed)
    m = UNet(config)
    with torch.no_grad():
        for p in m.parameters():  # all of them: the fresh UNet's zeroed output layer would make outputs all 0
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return m.eval()


def meta(step: int = 7, config: UNetConfig = MICRO) -> dict:
    return {"step": step, "model": config.to_dict(), "schedule": NoiseSchedule.create("cosine", 50).to_dict(),
            "data": {"spec": "test", "class_names": ["a", "b"]}}


@pytest.fixture
def saved(tmp_path):
    model, ema = random_model(1), random_model(2)
    path = save_checkpoint(tmp_path / "ck", {"model": model.state_dict(), "ema": ema.state_dict()}, meta())
    return path, model, ema


def _out(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 1, 8, 8, generator=g)
    with torch.no_grad():
        return model(x, torch.tensor([3, 40]))


FUNCTION_ATOL = 1e-5


def assert_same_function(a, b):
    """Two networks compute the same outputs within float rounding (kernels may differ between memory layouts)."""
    torch.testing.assert_close(_out(a), _out(b), rtol=1e-4, atol=FUNCTION_ATOL)
    torch.testing.assert_close(_out(a, seed=1), _out(b, seed=1), rtol=1e-4, atol=FUNCTION_ATOL)


def _weights(path):
    return path.parent / str(json.loads(path.read_text()).get("weights"))


def assert_one_line_naming(err: CheckpointError, *names: str):
    msg = str(err)
    assert "\n" not in msg and "\r" not in msg, msg
    assert any(n in msg for n in names), (msg, names)


# ---- round trips ---------------------------------------------------------------------------------------------------
def test_save_load_build_model_gives_identical_outputs(saved):
    path, model, ema = saved
    assert path.name == "ck.json"
    ck = load_checkpoint(path)
    assert ck.step == 7 and ck.class_names == ["a", "b"]
    assert ck.model_config == MICRO
    assert ck.schedule == NoiseSchedule.create("cosine", 50)
    built = ck.build_model()
    assert not built.training
    assert torch.equal(_out(built), _out(ema))  # EMA weights by default
    assert not torch.equal(_out(built), _out(model))
    assert torch.equal(_out(ck.build_model(use_ema=False)), _out(model))
    for k, v in ema.state_dict().items():
        assert torch.equal(ck.tensors["ema"][k], v)
    # the name given to save_checkpoint ("ck", no suffix) loads too
    again = load_checkpoint(path.with_suffix(""))
    assert again.path == path and again.step == 7


def test_groups_filter(saved):
    path, _, _ = saved
    ck = load_checkpoint(path, groups=("ema",))
    assert set(ck.tensors) == {"ema"}


def test_atomic_layout_and_old_weights_removed(tmp_path):
    m = random_model(3)
    p1 = save_checkpoint(tmp_path / "run", {"model": m.state_dict()}, meta(step=1))
    w1 = _weights(p1)
    man = json.loads(p1.read_text())
    assert man["format"] == "diffusion-studio-checkpoint" and man["step"] == 1
    assert man["sha256"] == hashlib.sha256(w1.read_bytes()).hexdigest()
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted([".lock", "run.json", w1.name])  # .lock: runlock
    # a second checkpoint in the same folder must survive the first one's saves
    other = save_checkpoint(tmp_path / "run-b", {"model": m.state_dict()}, meta(step=5))
    p2 = save_checkpoint(tmp_path / "run", {"model": random_model(4).state_dict()}, meta(step=2))
    w2 = _weights(p2)
    assert p2 == p1 and w2 != w1 and not w1.exists() and w2.exists()
    names = sorted(f.name for f in tmp_path.iterdir())
    assert names == sorted([".lock", "run.json", w2.name, "run-b.json", _weights(other).name])  # no temp files left over
    assert load_checkpoint(p2).step == 2 and load_checkpoint(other).step == 5
    assert torch.equal(_out(load_checkpoint(p2).build_model()), _out(random_model(4)))


def test_lone_safetensors_loads_via_embedded_metadata(saved, tmp_path):
    path, _, ema = saved
    lone_dir = tmp_path / "elsewhere"
    lone_dir.mkdir()
    lone = lone_dir / "model.safetensors"
    shutil.copy(_weights(path), lone)
    ck = load_checkpoint(lone)
    assert ck.path == lone and ck.step == 7 and ck.model_config == MICRO
    assert torch.equal(_out(ck.build_model()), _out(ema))


def test_trainer_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    data = TensorImages(torch.rand(8, 1, 8, 8) * 2 - 1)
    tr = Trainer(MICRO, NoiseSchedule.create("linear", 20), data,
                 TrainConfig(steps=2, batch_size=4, device="cpu", warmup_steps=0))
    list(tr.run())
    ck = load_checkpoint(tr.save(tmp_path / "t"))
    assert set(ck.tensors) == {"model", "ema", "optim", "rng"}
    assert ck.step == 2
    # The contract: the stored weights are bit-exact; the rebuilt network computes the same function. Its outputs may
    # differ from the trainer's in the last bits, since the trainer may keep its weights in another memory layout
    # (chosen by measuring the CPU) and so run other kernels; a wrong weight is far outside this tolerance.
    built = ck.build_model()
    for group, live in (("ema", tr.ema), ("model", tr.model)):
        for k, v in live.state_dict().items():
            assert torch.equal(ck.tensors[group][k], v), (group, k)
    assert_same_function(built, tr.ema)
    assert (_out(built) - _out(tr.model)).abs().max() > 10 * FUNCTION_ATOL  # the EMA, not the raw weights


# ---- refusals ------------------------------------------------------------------------------------------------------
class _Payload:
    """Unpickling this calls open(path, "w"): a file appearing is proof that a pickle was executed."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".bin", ".pkl"])
def test_pickle_suffixes_are_refused_by_name(tmp_path, saved, suffix):
    path, _, _ = saved
    p = tmp_path / f"model{suffix}"
    shutil.copy(_weights(path), p)  # even with valid safetensors bytes inside
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(p)
    assert "pickle" in str(e.value)
    assert_one_line_naming(e.value, p.name)


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_pickle_bytes_are_never_unpickled(tmp_path, saved, protocol):
    marker = tmp_path / "pwned"
    # the payload works: unpickling it in a scratch place does create the file
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(probe), protocol=protocol)).close()
    assert probe.exists()
    blob = pickle.dumps(_Payload(marker), protocol=protocol)

    lone = tmp_path / "evil.safetensors"
    lone.write_bytes(blob)
    manifest = tmp_path / "evil.json"
    manifest.write_bytes(blob)
    # a genuine manifest pointing at pickled "weights"
    path, _, _ = saved
    w = _weights(path)
    w.write_bytes(blob)
    for p in (lone, manifest, path):
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(p)
        assert_one_line_naming(e.value, p.name, w.name)
    assert not marker.exists()


def test_torch_save_zip_is_refused(tmp_path):
    p = tmp_path / "m.safetensors"
    torch.save({"w": torch.zeros(2)}, p)
    with pytest.raises(CheckpointError, match="pickle") as e:
        load_checkpoint(p)
    assert_one_line_naming(e.value, "m.safetensors")


def test_truncated_weights(saved):
    path, _, _ = saved
    w = _weights(path)
    blob = w.read_bytes()
    w.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert_one_line_naming(e.value, w.name)


@pytest.mark.parametrize("cut", [4, 9, 100, -1])
def test_truncated_lone_safetensors(saved, tmp_path, cut):
    path, _, _ = saved
    blob = _weights(path).read_bytes()
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes(blob[:cut])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(lone)
    assert_one_line_naming(e.value, "lone.safetensors")


def test_corrupted_byte_is_caught_by_sha256(saved):
    path, _, _ = saved
    w = _weights(path)
    blob = bytearray(w.read_bytes())
    blob[-3] ^= 0x40  # inside the last tensor's data: still a well-formed safetensors file
    w.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert "SHA-256" in str(e.value)
    assert_one_line_naming(e.value, w.name)


def _edit_manifest(path, fn):
    man = json.loads(path.read_text())
    fn(man)
    path.write_text(json.dumps(man))


def test_wrong_tensor_shapes(saved):
    path, _, _ = saved
    _edit_manifest(path, lambda m: m["model"].update(base_channels=32))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert "shape" in str(e.value) or "match" in str(e.value)
    assert_one_line_naming(e.value, path.name, _weights(path).name)


def test_missing_tensors(saved):
    path, _, _ = saved
    _edit_manifest(path, lambda m: m["model"].update(num_res_blocks=2))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert "missing" in str(e.value)
    assert_one_line_naming(e.value, path.name, _weights(path).name)


def test_unknown_preset(saved):
    path, _, _ = saved
    _edit_manifest(path, lambda m: m["model"].update(preset="gigantic"))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert "model.preset" in str(e.value)
    assert_one_line_naming(e.value, path.name, _weights(path).name)


@pytest.mark.parametrize("text", ["{not json", "", "\xff\xfe garbage", "[1, 2, 3]", '{"format": "something-else"}'])
def test_invalid_json(tmp_path, text):
    p = tmp_path / "bad.json"
    p.write_bytes(text.encode("latin-1"))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(p)
    assert_one_line_naming(e.value, "bad.json")


@pytest.mark.parametrize("edit", [
    lambda m: m.pop("model"),
    lambda m: m.pop("schedule"),
    lambda m: m.update(schedule={"kind": "nope", "T": 10}),
    lambda m: m["model"].update(groups=7),
    lambda m: m["model"].update(unknown_field=1),
    lambda m: m.update(format_version=99),
    lambda m: m.update(format_version="one"),
    lambda m: m.update(weights="../elsewhere.safetensors"),
    lambda m: m.pop("weights"),
    lambda m: m.update(weights="missing.safetensors"),
    lambda m: m.update(sha256="0" * 64),
])
def test_bad_manifests(saved, edit):
    path, _, _ = saved
    _edit_manifest(path, edit)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert_one_line_naming(e.value, path.name, _weights(path).name, "missing.safetensors")


def test_nan_weights_refused(tmp_path):
    m = random_model(5)
    sd = m.state_dict()
    sd["inp.weight"][0, 0, 0, 0] = float("nan")
    path = save_checkpoint(tmp_path / "nan", {"ema": sd}, meta())
    with pytest.raises(CheckpointError, match="NaN") as e:
        load_checkpoint(path)
    assert_one_line_naming(e.value, _weights(path).name)


def test_missing_files(tmp_path):
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "nothing.json")
    assert_one_line_naming(e.value, "nothing.json")


def test_safetensors_without_our_metadata(tmp_path):
    from safetensors.torch import save_file
    p = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(p))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(p)
    assert_one_line_naming(e.value, "foreign.safetensors")


def test_header_length_lie(tmp_path, saved):
    """A header length far past the end of the file: refused as a CheckpointError, not an exception from deep inside."""
    path, _, _ = saved
    blob = _weights(path).read_bytes()
    p = tmp_path / "lie.safetensors"
    p.write_bytes(struct.pack("<Q", 10**12) + blob[8:])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(p)
    assert_one_line_naming(e.value, "lie.safetensors")


@pytest.mark.parametrize("embedded", ["[1, 2]", "not json", '"a string"', '{"format": "diffusion-studio-checkpoint"}'])
def test_lone_safetensors_with_bad_embedded_manifest(tmp_path, embedded):
    from safetensors.torch import save_file
    p = tmp_path / "odd.safetensors"
    save_file({f"ema.{k}": v for k, v in random_model(6).state_dict().items()}, str(p),
              metadata={"diffusion-studio-checkpoint": embedded})
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(p)
    assert_one_line_naming(e.value, "odd.safetensors")


def test_folder_checkpoint(tmp_path):
    folder = tmp_path / "ckdir"
    folder.mkdir()
    ema = random_model(7)
    path = save_checkpoint(folder, {"ema": ema.state_dict()}, meta(step=3))
    assert path == manifest_path(folder) == folder / "checkpoint.json"
    ck = load_checkpoint(folder)
    assert ck.path == path and ck.step == 3
    assert torch.equal(_out(ck.build_model()), _out(ema))


def test_a_save_that_dies_before_the_manifest_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    import diffusion_studio.core.io.checkpoint as ckmod

    old = random_model(8)
    path = save_checkpoint(tmp_path / "run", {"ema": old.state_dict()}, meta(step=1))
    real_replace = ckmod.os.replace

    def dying_replace(src, dst):
        if str(dst).endswith("run.json"):
            raise OSError("disk full (simulated)")
        return real_replace(src, dst)

    monkeypatch.setattr(ckmod.os, "replace", dying_replace)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "run", {"ema": random_model(9).state_dict()}, meta(step=2))
    monkeypatch.setattr(ckmod.os, "replace", real_replace)
    ck = load_checkpoint(path)  # the manifest still names the complete old weights
    assert ck.step == 1 and torch.equal(_out(ck.build_model()), _out(old))
    assert not list(tmp_path.glob(".*.tmp"))  # the half-written manifest was cleaned up
    # the next good save removes the orphaned weights of the failed one
    save_checkpoint(tmp_path / "run", {"ema": old.state_dict()}, meta(step=3))
    assert len(list(tmp_path.glob("run-*.safetensors"))) == 1
