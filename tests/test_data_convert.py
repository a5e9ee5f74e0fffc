"""Tests for data.convert: uint8 ↔ [-1, 1] round trips, make_grid layout, atomic PNG/GIF writing."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion_studio.data.convert import (
    from_uint8, make_grid, resize_batch, save_gif, save_grid, save_png, to_channels, to_uint8,
)


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 3), (4, 6, 8, 3)])
def test_round_trip_uint8_is_exact(shape):
    a = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    a.flat[0], a.flat[1] = 0, 255
    back = to_uint8(from_uint8(a))
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, a)
    assert back.flags["C_CONTIGUOUS"]


def test_from_uint8_values_and_layout():
    a = np.array([[[0, 255, 51]]], dtype=np.uint8)  # (1, 1, 3)
    t = from_uint8(a)
    assert t.dtype == torch.float32 and t.shape == (3, 1, 1)
    torch.testing.assert_close(t.flatten(), torch.tensor([0.0, 255.0, 51.0]) / 127.5 - 1, rtol=0, atol=0)
    assert from_uint8(np.zeros((4, 5), np.uint8)).shape == (1, 4, 5)


def test_from_uint8_rejects_other_dtypes():
    with pytest.raises(TypeError):
        from_uint8(np.zeros((2, 2), np.float32))


def test_to_uint8_shapes_rounding_and_clamping():
    x = torch.tensor([[[-1.5, -1.0], [0.0, 2.0]]])  # (1, 2, 2): one channel drops its axis
    out = to_uint8(x)
    assert out.shape == (2, 2)
    np.testing.assert_array_equal(out, [[0, 0], [128, 255]])  # 127.5 rounds to even → 128
    assert to_uint8(torch.zeros(3, 4, 5)).shape == (4, 5, 3)
    assert to_uint8(torch.zeros(2, 3, 4, 5)).shape == (2, 4, 5, 3)
    assert to_uint8(torch.zeros(2, 1, 4, 5)).shape == (2, 4, 5)


def test_to_uint8_nan_is_mid_grey_and_grad_is_ignored():
    x = torch.full((1, 2, 2), float("nan"), requires_grad=True)
    assert (to_uint8(x * 1) == 128).all()


def test_make_grid_layout_known_pixels():
    n, h, w = 5, 3, 4
    x = torch.stack([torch.full((1, h, w), k / 10.0) for k in range(n)])  # image k is filled with k/10
    g = make_grid(x, nrow=3, padding=2, pad_value=-1.0)
    assert g.shape == (1, 2 * (h + 2) + 2, 3 * (w + 2) + 2)
    for k in range(n):
        r, c = divmod(k, 3)
        top, left = 2 + r * (h + 2), 2 + c * (w + 2)
        assert torch.all(g[0, top : top + h, left : left + w] == k / 10.0)
    assert torch.all(g[0, :2, :] == -1) and torch.all(g[0, :, :2] == -1)
    last_cell = g[0, 2 + (h + 2) : 2 + (h + 2) + h, 2 + 2 * (w + 2) : 2 + 2 * (w + 2) + w]
    assert torch.all(last_cell == -1)  # sixth slot is empty padding


def test_make_grid_default_nrow_is_ceil_sqrt_and_no_padding():
    x = torch.zeros(10, 3, 2, 2)
    assert make_grid(x).shape == (3, 3 * 4 + 2, 4 * 4 + 2)  # ceil(sqrt(10)) = 4 per row, 3 rows
    assert make_grid(x, nrow=10, padding=0).shape == (3, 2, 20)
    assert make_grid(torch.zeros(3, 2, 2), padding=0).shape == (3, 2, 2)  # a single image is allowed
    with pytest.raises(ValueError):
        make_grid(torch.zeros(0, 3, 2, 2))


def test_save_png_tensor_and_array(tmp_path):
    a = np.random.default_rng(1).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    p1 = save_png(from_uint8(a), tmp_path / "t.png")
    p2 = save_png(a, tmp_path / "sub" / "a.png")  # parent folders are created
    for p in (p1, p2):
        with Image.open(p) as im:
            np.testing.assert_array_equal(np.asarray(im), a)
    gray = save_png(torch.zeros(1, 3, 3), tmp_path / "g.png")
    with Image.open(gray) as im:
        assert im.mode == "L" and im.size == (3, 3)
    assert sorted(f.name for f in tmp_path.rglob("*")) == ["a.png", "g.png", "sub", "t.png"]  # no temp files left


def test_save_png_respects_umask_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        p = save_png(np.zeros((2, 2), np.uint8), tmp_path / "perm.png")
    finally:
        os.umask(old)
    assert (p.stat().st_mode & 0o777) == 0o644


def test_save_png_failure_leaves_no_temp_and_keeps_old_file(tmp_path):
    target = tmp_path / "keep.png"
    target.write_bytes(b"old")
    with pytest.raises(ValueError):
        save_png(np.zeros((2, 2, 5), np.uint8), target)
    assert target.read_bytes() == b"old"
    assert [f.name for f in tmp_path.iterdir()] == ["keep.png"]


def test_save_grid_writes_tiled_png(tmp_path):
    x = torch.ones(4, 3, 5, 5)
    p = save_grid(x, tmp_path / "grid.png", nrow=2)
    with Image.open(p) as im:
        assert im.size == (2 * 7 + 2, 2 * 7 + 2)
        a = np.asarray(im)
    assert a[0, 0].tolist() == [0, 0, 0] and a[2, 2].tolist() == [255, 255, 255]


def test_save_gif_frame_count_scale_and_timing(tmp_path):
    frames = [torch.full((3, 16, 16), -1.0 + 2 * k / 7) for k in range(8)]
    frames[3] = to_uint8(frames[3])  # arrays and tensors can be mixed
    p = save_gif(frames, tmp_path / "anim.gif", fps=20, scale=4)
    with Image.open(p) as im:
        assert im.n_frames == 8
        assert im.size == (64, 64)
        assert im.info.get("duration") == 50
        assert im.info.get("loop") == 0
        im.seek(7)
        assert np.asarray(im.convert("RGB"))[10, 10].tolist() == [255, 255, 255]


def test_save_gif_grayscale_and_errors(tmp_path):
    frames = [np.full((4, 4), v, np.uint8) for v in (0, 100, 200)]
    with Image.open(save_gif(frames, tmp_path / "g.gif", scale=2)) as im:
        assert im.n_frames == 3 and im.size == (8, 8)
    with pytest.raises(ValueError):
        save_gif([], tmp_path / "none.gif")
    with pytest.raises(ValueError):
        save_gif([np.zeros((4, 4), np.uint8), np.zeros((5, 5), np.uint8)], tmp_path / "bad.gif")
    assert not (tmp_path / "bad.gif").exists()


def test_resize_batch_and_to_channels():
    x = torch.full((3, 1, 8, 8), 200, dtype=torch.uint8)
    assert torch.all(resize_batch(x, 32) == 200)  # a flat image stays flat, up or down
    assert torch.all(resize_batch(x, 3) == 200)
    assert resize_batch(x, 8) is x
    rgb = to_channels(x, 3)
    assert rgb.shape == (3, 3, 8, 8) and torch.all(rgb == 200)
    red = torch.zeros(1, 3, 1, 1, dtype=torch.uint8)
    red[0, 0] = 255
    assert int(to_channels(red, 1)) == round(0.299 * 255)  # same luma weights as Pillow's convert("L")
    assert int(np.asarray(Image.new("RGB", (1, 1), (255, 0, 0)).convert("L"))[0, 0]) == round(0.299 * 255)
