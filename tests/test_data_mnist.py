"""builtin:mnist: the 5,000 shipped MNIST digits, their fixed held-out split, captions, and the shipped classifier
that judges samples of them — checked against the data itself, not against numbers copied from it."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from diffusion_studio.cli.fid import load_images
from diffusion_studio.core.metrics.features import (classifier_score, default_features_for, load_feature_extractor)
from diffusion_studio.data import load_dataset
from diffusion_studio.data.builtin import BUILTIN_DATASETS
from diffusion_studio.data.captions import attach_captions
from diffusion_studio.data.errors import DataError
from diffusion_studio.data.mnist5k import data_path
from diffusion_studio.data.specs import held_out_split, natural_channels
from diffusion_studio.resources import resources_dir


def test_the_shipped_file_is_the_one_its_readme_names():
    readme = (resources_dir() / "data" / "README.md").read_text("utf-8")
    digest = hashlib.sha256(data_path().read_bytes()).hexdigest()
    assert digest in readme and "CC BY-SA 3.0" in readme


@pytest.mark.parametrize("split, n", [("train", 4500), ("test", 500), ("all", 5000)])
def test_splits_hold_28px_grey_digits_with_labels(split, n):
    ds = load_dataset("builtin:mnist", 28, split=split)
    assert len(ds) == n and tuple(ds.images.shape) == (n, 1, 28, 28) and ds.images.dtype == torch.uint8
    counts = torch.bincount(ds.labels, minlength=10)
    assert len(counts) == 10 and int(counts.min()) > 0
    if split == "test":
        assert counts.tolist() == [50] * 10  # a balanced held-out set
    # MNIST's look, from the pixels: white strokes on black, an empty border, a mean near MNIST's 0.13
    x = ds.images.float() / 255
    assert 0.09 < float(x.mean()) < 0.18
    assert float(x[..., :2, :].mean()) < 0.01 and float(x[..., :, -2:].mean()) < 0.01
    assert float(x.amax(dim=(1, 2, 3)).min()) > 0.9  # every digit has full-white ink


def test_the_held_out_digits_are_not_among_the_training_ones():
    train = load_dataset("builtin:mnist", 28, split="train").images.reshape(4500, -1).numpy()
    test = load_dataset("builtin:mnist", 28, split="test").images.reshape(500, -1).numpy()
    seen = {row.tobytes() for row in train}
    assert sum(row.tobytes() in seen for row in test) == 0


def test_mnist_is_a_grey_builtin_with_digit_captions_and_a_held_out_split():
    assert "mnist" in BUILTIN_DATASETS
    assert natural_channels("builtin:mnist") == 1 and natural_channels("builtin:shapes") == 3
    assert held_out_split("builtin:mnist") == {"split": "test"} and held_out_split("builtin:digits") == {}
    ds = load_dataset("builtin:mnist", 28, split="test")
    assert attach_captions(ds) == []
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    for i in range(40):  # the captions' forms: "the digit seven", "a handwritten 7", …
        label, caption = int(ds.labels[i]), ds.captions[i]
        assert names[label] in caption or str(label) in caption, (label, caption)
        assert not any(w in caption.split() for k, w in enumerate(names) if k != label)


def test_resized_and_coloured_on_request_and_a_bad_split_named():
    ds = load_dataset("builtin:mnist", 32, channels=3, split="test")
    assert tuple(ds.images.shape) == (500, 3, 32, 32)
    assert torch.equal(ds.images[:, 0], ds.images[:, 2])  # grey copied into each channel
    with pytest.raises(DataError, match="split"):
        load_dataset("builtin:mnist", 28, split="validation")


def test_fid_reads_the_split_it_is_asked_for():
    ds, subset = load_images("builtin:mnist", 28, split="test")
    assert len(ds) == 500 and len(subset) == 500
    ds, subset = load_images("builtin:mnist", 28, n_max=100, split="train")
    assert len(ds) == 4500 and len(subset) == 100


def test_the_shipped_mnist_classifier_reads_the_held_out_digits():
    assert default_features_for("builtin:mnist") == "builtin:mnist"
    net = load_feature_extractor("builtin:mnist")
    ds = load_dataset("builtin:mnist", 28, split="test")
    x = ds.images.float() / 127.5 - 1
    with torch.no_grad():
        pred = net.logits(x).argmax(1)
    accuracy = float((pred == ds.labels).float().mean())
    assert accuracy >= 0.96, accuracy  # 98.8 % when it was made; a broken net or a shifted input scale fails
    score = classifier_score(net, x)
    assert score["confident_fraction"] > 0.9 and score["max_min_ratio"] < 1.5
    # noise is not a digit to it
    noise = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (200, 1, 28, 28)).astype(np.float32))
    assert classifier_score(net, noise)["confident_fraction"] < 0.5
