"""`sample --grid` writes a grid a person can read: the model's grid enlarged by a whole nearest-neighbour factor."""
from __future__ import annotations

import numpy as np
from PIL import Image

from diffusion_studio import cli
from diffusion_studio.data.enlarge import enlarge, integer_scale


def test_sample_grid_of_a_16px_model_is_enlarged_to_at_least_256px(tmp_path, capsys):
    code = cli.main(["sample", "--model", "builtin:digits", "--n", "16", "--sampler", "ddim", "--steps", "2",
                     "--seed", "1", "--grid", str(tmp_path / "g.png"), "--out", str(tmp_path / "s")])
    assert code == 0, capsys.readouterr().err
    grid = np.asarray(Image.open(tmp_path / "g.png"))
    samples = [np.asarray(Image.open(tmp_path / "s" / f"sample_{i:05d}.png")) for i in range(16)]
    assert samples[0].shape == (16, 16)
    small = 4 * 16 + 5 * 2                       # 4×4 tiles of 16 px with 2 px padding around and between
    k = grid.shape[0] // small
    assert grid.shape == (k * small, k * small) and k * small >= 256 and (k - 1) * small < 256  # smallest factor
    # every pixel became a k × k block, and the block centres are the samples the CLI also wrote one by one
    base = grid[::k, ::k]
    np.testing.assert_array_equal(enlarge(base, k), grid)
    for i, s in enumerate(samples):
        r, c = divmod(i, 4)
        y, x = 2 + r * 18, 2 + c * 18
        np.testing.assert_array_equal(base[y:y + 16, x:x + 16], s)
    assert base[0].max() == 0 and base[:, 0].max() == 0  # the padding is black, not smeared samples


def test_integer_scale_is_the_smallest_whole_factor_reaching_the_target():
    assert integer_scale((74, 74)) == 4        # 74 → 296 (3 would give 222 < 256)
    assert integer_scale((16, 40)) == 7        # the longer side counts: 40 → 280
    assert integer_scale((300, 300)) == 1
    img = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.testing.assert_array_equal(enlarge(img, 2), [[0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2],
                                                    [3, 3, 4, 4, 5, 5], [3, 3, 4, 4, 5, 5]])
