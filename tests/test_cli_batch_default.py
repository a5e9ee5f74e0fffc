"""A dataset smaller than the default batch trains with the dataset's size (said in one line); only a batch the user
asked for is refused."""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusion_studio import cli
from diffusion_studio.core.train.recipe import recipe_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def seven_images(folder: Path, n: int = 7) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def run_cli(cwd: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(list(args))
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()


TINY = ["--size", "8", "--model", "tiny", "--T", "20", "--steps", "2", "--log-every", "1", "--device", "cpu"]


def test_default_batch_becomes_the_dataset_size_with_one_line(tmp_path):
    data = seven_images(tmp_path / "seven")
    code, out, err = run_cli(tmp_path, "train", "--data", str(data), *TINY, "--out", "run")
    assert code == 0, err
    lines = [ln for ln in out.splitlines() if ln.startswith("batch")]
    default = recipe_for(8)["batch"]  # the recipe's batch for 8-px images
    assert len(lines) == 1 and "batch     7" in lines[0] and f"default batch {default}" in lines[0], out
    manifest = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert manifest["train"]["batch_size"] == 7 and manifest["step"] == 2


def test_an_explicit_batch_larger_than_the_data_is_still_refused(tmp_path):
    data = seven_images(tmp_path / "seven")
    code, out, err = run_cli(tmp_path, "train", "--data", str(data), *TINY, "--batch", "64", "--out", "run")
    assert code == 2 and "argument --batch: 64 is larger than the dataset (7 images" in err
    assert not (tmp_path / "run").exists()
