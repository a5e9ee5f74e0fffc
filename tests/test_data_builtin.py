"""Tests for data.builtin: scikit-learn digits and photos (no download), generated shapes."""


import numpy as np
import pytest
import torch

from diffusion_studio.data.builtin import BUILTIN_DATASETS, digits, photos, sample_photos
from diffusion_studio.data.shapes import SHAPE_CLASSES, shapes
from diffusion_studio.data.specs import load_dataset


def test_digits_count_labels_and_proportions():
    ds = digits(8)
    assert len(ds) == 1797 and ds.channels == 1 and ds.size == 8
    assert ds.class_names == [str(d) for d in range(10)] and ds.num_classes == 10
    counts = torch.bincount(ds.labels, minlength=10)
    assert counts.sum() == 1797
    assert counts.min() >= 170 and counts.max() <= 190  # roughly 180 of each digit
    assert ds.spec == "builtin:digits"


def test_digits_pixels_match_scikit_learn():
    from sklearn.datasets import load_digits

    ref = load_digits()
    ds = digits(8)
    expected = np.rint(ref.images * 255 / 16)
    np.testing.assert_array_equal(ds.images[:, 0].numpy(), expected)
    np.testing.assert_array_equal(ds.labels.numpy(), ref.target)
    assert ds.images.max() == 255 and ds.images.min() == 0  # 16 → white ink, 0 → black


@pytest.mark.parametrize("size", [4, 16, 28])
def test_digits_resized_and_in_range(size):
    ds = digits(size)
    assert ds.images.shape == (1797, 1, size, size)
    x = ds.batch(torch.arange(64))
    assert x.shape == (64, 1, size, size) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert x.min() == -1  # the black background survives resizing


def test_digits_three_channels():
    ds = load_dataset("builtin:digits", 8, channels=3)
    assert ds.channels == 3
    assert torch.equal(ds.images[:, 0], ds.images[:, 2])


def test_shapes_deterministic_rgb_all_classes():
    # How fast it draws is a benchmark's business (bench/), not a test's: a timed assertion fails on a busy CPU.
    a = shapes(32, seed=0)
    b = shapes(32, seed=0)
    c = shapes(32, seed=1)
    assert len(a) == 2000 and a.images.shape == (2000, 3, 32, 32) and a.channels == 3
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    assert a.class_names == list(SHAPE_CLASSES)
    assert torch.bincount(a.labels).tolist() == [400] * len(SHAPE_CLASSES)
    colourful = (a.images.float().std(dim=1) > 20).float().mean()
    assert colourful > 0.05  # really RGB, not gray in three channels
    spread = a.images.float().amax(dim=(1, 2, 3)) - a.images.float().amin(dim=(1, 2, 3))
    assert spread.min() >= 60  # every shape stands out from its background


def test_shapes_are_antialiased_and_other_sizes():
    a = shapes(16, n=50)
    values_per_image = [len(torch.unique(img[0])) for img in a.images]
    assert np.median(values_per_image) > 3  # edge pixels blend ink and background
    assert shapes(80, n=5).images.shape == (5, 3, 80, 80)
    assert shapes(12, channels=1, n=5).channels == 1


def test_photos_include_sklearn_and_generated():
    items = sample_photos()
    names = [n for n, _ in items]
    assert len(items) >= 4
    assert names[:2] == ["china", "flower"]
    for name, arr in items:
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3, name
        assert arr.std() > 10, name  # a picture, not a blank
    assert items[0][1].shape == (427, 640, 3)
    items[0][1][:] = 0  # callers get copies; the cache is not damaged
    assert sample_photos()[0][1].std() > 10


def test_photos_dataset():
    ds = photos(32)
    assert len(ds) == len(sample_photos()) and ds.images.shape[1:] == (3, 32, 32)
    assert ds.class_names[:2] == ["china", "flower"]
    assert load_dataset("builtin:photos", 16).size == 16


def test_builtin_names_and_descriptions():
    assert set(BUILTIN_DATASETS) == {"digits", "mnist", "shapes", "photos"}
    assert all(isinstance(v, str) and v and "\n" not in v for v in BUILTIN_DATASETS.values())
