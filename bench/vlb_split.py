"""Write builtin:digits (at --size, default 16; 8 is the native size) as two PNG folders, train/ and heldout/, so a model's bits/dim can be measured on
digits it never saw (the shipped builtin:digits model was trained on all 1,797).

    python bench/vlb_split.py OUT [--size 16] [--heldout 297] [--seed 0]

OUT/train/<digit>/NNNN.png and OUT/heldout/<digit>/NNNN.png; a seeded random split. Loading either folder at
--size 16 --channels 1 (at the same --size) gives back exactly the uint8 pixels of builtin:digits.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusion_studio.data import load_dataset  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--heldout", type=int, default=297)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=16)
    args = p.parse_args()
    ds = load_dataset("builtin:digits", args.size)
    n = len(ds)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed)).tolist()
    held = set(order[: args.heldout])
    out = Path(args.out)
    for i in range(n):
        part = "heldout" if i in held else "train"
        label = int(ds.labels[i])
        folder = out / part / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(ds.images[i, 0].numpy())).save(folder / f"{i:04d}.png")
    print(f"wrote {n - len(held)} training and {len(held)} held-out digits to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
