"""Tests for data.dataset: ImageDataset batches (reproducible flips), validation, and load_dataset's specs."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion_studio.data.dataset import ImageDataset
from diffusion_studio.data.specs import BUILTIN_DATASETS, load_dataset
from diffusion_studio.data.errors import DataError


def ramp_dataset(n=32, size=6, channels=3):
    # Each image is a left→right ramp (so a flip is visible) offset by its index (so images differ).
    base = torch.arange(size, dtype=torch.uint8) * 20
    offset = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1)
    imgs = (base.view(1, 1, 1, size) + offset).expand(n, channels, size, size)
    return ImageDataset(imgs.contiguous(), torch.arange(n) % 4, name="ramps", spec="test:ramps")


def test_properties_and_get():
    ds = ramp_dataset()
    assert len(ds) == 32 and ds.size == 6 and ds.channels == 3 and ds.num_classes == 4
    x = ds.get(2)
    assert x.shape == (3, 6, 6) and x.dtype == torch.float32
    assert torch.equal(x, ds.images[2].float() / 127.5 - 1)
    assert torch.equal(ds[2], x)


def test_batch_values_and_labels():
    ds = ramp_dataset()
    idx = torch.tensor([3, 0, 7])
    b = ds.batch(idx)
    assert b.shape == (3, 3, 6, 6) and b.dtype == torch.float32
    assert torch.equal(b, ds.images[idx].float() / 127.5 - 1)
    assert ds.labels_batch(idx).tolist() == [3, 0, 3]
    assert ds.batch([1, 2]).shape[0] == 2  # lists work too
    with pytest.raises(IndexError):
        ds.batch([32])


def test_flip_is_reproducible_and_really_flips():
    ds = ramp_dataset()
    idx = torch.arange(32)
    a = ds.batch(idx, generator=torch.Generator().manual_seed(7), flip=True)
    b = ds.batch(idx, generator=torch.Generator().manual_seed(7), flip=True)
    c = ds.batch(idx, generator=torch.Generator().manual_seed(8), flip=True)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    plain = ds.batch(idx)
    flipped = [bool(torch.equal(a[i], plain[i].flip(-1))) for i in range(32)]
    kept = [bool(torch.equal(a[i], plain[i])) for i in range(32)]
    assert all(f != k for f, k in zip(flipped, kept))  # every image is either mirrored or untouched
    assert 4 <= sum(flipped) <= 28
    assert torch.equal(ds.batch(idx, flip=False), plain)


def test_batch_to_device_cpu():
    ds = ramp_dataset()
    assert ds.batch([0], device="cpu").device.type == "cpu"
    assert ds.labels_batch([0], device="cpu").device.type == "cpu"


def test_check_batch_size():
    ds = ramp_dataset(n=10)
    ds.check_batch_size(10)
    with pytest.raises(DataError) as e:
        ds.check_batch_size(11)
    assert str(e.value) == "ramps: batch size 11 is larger than the dataset (10 images)"
    assert e.value.path is None
    with pytest.raises(DataError):
        ds.check_batch_size(0)


def test_to_dict_is_json_and_rebuilds(tmp_path):
    ds = load_dataset("builtin:digits", 8)
    d = ds.to_dict()
    assert d == {"spec": "builtin:digits", "size": 8, "channels": 1, "n": 1797, "name": "digits"}
    d = json.loads(json.dumps(d))
    again = load_dataset(d["spec"], d["size"], d["channels"])
    assert torch.equal(again.images, ds.images)


def test_constructor_validation():
    with pytest.raises(ValueError):
        ImageDataset(torch.zeros(2, 3, 4, 4))  # float, not uint8
    with pytest.raises(ValueError):
        ImageDataset(torch.zeros(2, 2, 4, 4, dtype=torch.uint8))  # 2 channels
    with pytest.raises(ValueError):
        ImageDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([1]))
    unlabelled = ImageDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))
    assert unlabelled.num_classes == 0 and unlabelled.labels_batch([0]) is None


def test_load_dataset_folder_and_single_image(tmp_path):
    for i in range(3):
        Image.new("RGB", (5, 5), (i * 50, 0, 0)).save(tmp_path / f"{i}.png")
    seen = []
    ds = load_dataset(str(tmp_path), 5, progress=seen.append)
    assert len(ds) == 3 and ds.channels == 3 and ds.spec == str(tmp_path)
    assert [p.done for p in seen] == [1, 2, 3]
    one = load_dataset(tmp_path / "1.png", 4, channels=1)
    assert len(one) == 1 and one.images.shape == (1, 1, 4, 4) and one.sources == ["1.png"]
    gray = np.asarray(Image.new("RGB", (1, 1), (50, 0, 0)).convert("L"))[0, 0]
    assert torch.all(one.images == int(gray))


def test_load_dataset_errors_name_the_spec(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("builtin:cats", 8)
    text = str(e.value)
    assert text.startswith("builtin:cats: unknown built-in dataset 'cats'")
    for name in BUILTIN_DATASETS:
        assert f"builtin:{name}" in text
    with pytest.raises(DataError, match=r"^ftp:thing: unknown data source 'ftp:'"):
        load_dataset("ftp:thing", 8)
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(str(tmp_path / "missing"), 8)
    with pytest.raises(DataError, match="^size: "):
        load_dataset("builtin:digits", -3)
    with pytest.raises(DataError, match="^channels: "):
        load_dataset("builtin:digits", 8, channels=4)
    with pytest.raises(DataError, match="no data source"):
        load_dataset("  ", 8)
    with pytest.raises(DataError, match="give a folder after 'mnist:'"):
        load_dataset("mnist:", 8)


def test_builtin_spec_is_case_insensitive_name():
    assert load_dataset("builtin:Digits", 4).spec == "builtin:digits"


def test_spec_is_recorded_as_typed(tmp_path, monkeypatch):
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "imgs" / "a.png")
    monkeypatch.chdir(tmp_path)
    ds = load_dataset(" imgs ", 4)
    assert ds.spec == "imgs" and ds.name == "imgs"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_dataset("~/imgs", 4).spec == "~/imgs"  # no expanded home folder stored
    assert load_dataset("~/imgs/a.png", 4).spec == "~/imgs/a.png"
