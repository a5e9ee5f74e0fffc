"""Tests for data.images: exact loading, centre crop, odd formats, and the zoo of broken files."""

import io
import os
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from diffusion_studio.data import images as images_mod
from diffusion_studio.data.errors import DataError
from diffusion_studio.data.images import load_image, load_image_full, open_image, to_array
from zoo import deny_reads


def expect(tensor_u8_hwc):
    """What load_image must return for these uint8 pixels: exactly v / 127.5 - 1, channels first."""
    a = torch.from_numpy(np.ascontiguousarray(tensor_u8_hwc))
    if a.dim() == 2:
        a = a.unsqueeze(-1)
    return a.permute(2, 0, 1).float() / 127.5 - 1


def check_error(exc_info, filename, *words):
    err = exc_info.value
    text = str(err)
    assert "\n" not in text
    assert text.startswith(f"{filename}: "), text
    assert os.sep not in text.split(":")[0]  # the base name, not the full path
    for w in words:
        assert w in err.reason, text
    return err


def random_rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --- exact values, crop, resize -------------------------------------------------------------------------


def test_load_image_exact_when_size_matches(tmp_path):
    a = random_rgb(8, 8)
    Image.fromarray(a).save(tmp_path / "x.png")
    t = load_image(tmp_path / "x.png", 8)
    assert t.dtype == torch.float32 and t.shape == (3, 8, 8)
    assert torch.equal(t, expect(a))
    assert t.min() >= -1 and t.max() <= 1


def test_load_image_gray_exact(tmp_path):
    a = np.random.default_rng(3).integers(0, 256, (6, 6), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "g.png")
    assert torch.equal(load_image(tmp_path / "g.png", 6, channels=1), expect(a))


def test_centre_crop_removes_side_borders(tmp_path):
    a = np.zeros((10, 16, 3), np.uint8)
    a[:, :3] = (255, 0, 0)  # left border: red
    a[:, 13:] = (0, 0, 255)  # right border: blue
    a[:, 3:13] = (0, 200, 0)  # the centred 10×10 square: green
    Image.fromarray(a).save(tmp_path / "wide.png")
    t = load_image(tmp_path / "wide.png", 10)
    assert torch.equal(t, expect(np.broadcast_to(np.array([0, 200, 0], np.uint8), (10, 10, 3))))


def test_centre_crop_tall_image_and_resize(tmp_path):
    a = np.zeros((30, 10, 3), np.uint8)
    a[10:20] = 255  # only the middle third survives the crop
    Image.fromarray(a).save(tmp_path / "tall.png")
    arr = to_array(open_image(tmp_path / "tall.png"), 5, 3)
    assert arr.shape == (5, 5, 3) and arr.dtype == np.uint8
    assert arr.min() >= 250


def test_one_pixel_image_is_upscaled(tmp_path):
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "dot.png")
    t = load_image(tmp_path / "dot.png", 8)
    assert t.shape == (3, 8, 8)
    assert torch.equal(t, expect(np.broadcast_to(np.array([10, 20, 30], np.uint8), (8, 8, 3))))


def test_very_wide_image_loads_centre(tmp_path):
    a = np.full((10, 4000, 3), (255, 0, 0), np.uint8)
    a[:, 1995:2005] = (0, 255, 0)
    Image.fromarray(a).save(tmp_path / "strip.png")
    green = expect(np.broadcast_to(np.array([0, 255, 0], np.uint8), (10, 10, 3)))
    assert torch.equal(load_image(tmp_path / "strip.png", 10), green)
    small = load_image(tmp_path / "strip.png", 4)
    assert small.shape == (3, 4, 4) and (small[1] > 0.9).all() and (small[0] < -0.9).all()


def test_load_image_full_keeps_aspect_and_downscales(tmp_path):
    Image.fromarray(random_rgb(30, 60)).save(tmp_path / "p.png")
    assert load_image_full(tmp_path / "p.png").shape == (30, 60, 3)
    assert load_image_full(tmp_path / "p.png", max_side=20).shape == (10, 20, 3)
    assert load_image_full(tmp_path / "p.png", max_side=100).shape == (30, 60, 3)
    assert load_image_full(tmp_path / "p.png", channels=1).shape == (30, 60, 1)


def test_bad_size_and_channels_are_data_errors(tmp_path):
    Image.new("RGB", (2, 2)).save(tmp_path / "a.png")
    with pytest.raises(DataError, match="^size: "):
        load_image(tmp_path / "a.png", 0)
    with pytest.raises(DataError, match="^channels: "):
        load_image(tmp_path / "a.png", 4, channels=2)


# --- odd but valid formats ------------------------------------------------------------------------------


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    a = np.array([[0, 65535], [32768, 1000]], np.uint16)
    Image.fromarray(a).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as im:
        assert im.mode.startswith("I")  # really a 16-bit file
    img = open_image(tmp_path / "deep.png")
    assert img.mode == "L"
    np.testing.assert_array_equal(np.asarray(img), [[0, 255], [128, 4]])
    t = load_image(tmp_path / "deep.png", 2, channels=1)
    assert torch.equal(t, expect(np.array([[0, 255], [128, 4]], np.uint8)))


def test_thirty_two_bit_int_image_is_scaled(tmp_path):
    img = Image.fromarray(np.array([[0, 65535]], np.int32), mode="I")
    out = images_mod._normalise_mode(img)
    np.testing.assert_array_equal(np.asarray(out), [[0, 255]])


def test_cmyk_jpeg_colours_approximately_right(tmp_path):
    a = np.zeros((16, 16, 3), np.uint8)
    a[:8, :8] = (220, 30, 30)
    a[:8, 8:] = (30, 200, 40)
    a[8:, :8] = (40, 60, 220)
    a[8:, 8:] = (240, 240, 240)
    Image.fromarray(a).convert("CMYK").save(tmp_path / "print.jpg", quality=95)
    with Image.open(tmp_path / "print.jpg") as im:
        assert im.mode == "CMYK"
    got = load_image_full(tmp_path / "print.jpg").astype(int)
    for (y, x) in [(3, 3), (3, 12), (12, 3), (12, 12)]:
        assert np.abs(got[y, x] - a[y, x]).max() <= 16, (y, x, got[y, x], a[y, x])


def test_palette_png_with_transparency_composites_on_black(tmp_path):
    img = Image.new("P", (4, 4), 0)
    img.putpalette([255, 255, 255, 200, 50, 50] + [0] * 762)
    img.putpixel((1, 1), 1)
    img.info["transparency"] = 0
    img.save(tmp_path / "pal.png", transparency=0)
    arr = to_array(open_image(tmp_path / "pal.png"), 4, 3)
    assert arr[1, 1].tolist() == [200, 50, 50]
    assert arr[0, 0].tolist() == [0, 0, 0]  # white but fully transparent → black background


def test_palette_png_without_transparency_is_rgb(tmp_path):
    Image.new("RGB", (3, 3), (12, 34, 56)).convert("P").save(tmp_path / "p.png")
    assert open_image(tmp_path / "p.png").mode == "RGB"


def test_la_and_one_bit_images(tmp_path):
    la = np.zeros((2, 2, 2), np.uint8)
    la[..., 0] = 200
    la[0, 0, 1] = 255  # only one pixel opaque
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    arr = to_array(open_image(tmp_path / "la.png"), 2, 1)
    assert arr[0, 0, 0] == 200 and arr[1, 1, 0] == 0
    bits = Image.new("1", (2, 2), 0)
    bits.putpixel((0, 0), 1)
    bits.save(tmp_path / "bits.png")
    img = open_image(tmp_path / "bits.png")
    assert img.mode == "L" and np.asarray(img).tolist() == [[255, 0], [0, 0]]


def test_animated_gif_takes_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    with Image.open(tmp_path / "anim.gif") as im:
        assert im.n_frames == 3
    px = load_image_full(tmp_path / "anim.gif")[4, 4].astype(int)
    assert px[0] > 240 and px[1] < 15 and px[2] < 15


def test_animated_webp_takes_first_frame(tmp_path):
    from PIL import features

    if not features.check("webp"):
        pytest.fail("this Pillow build cannot write WebP, which the app promises to read")
    frames = [Image.new("RGB", (8, 8), c) for c in ((0, 0, 255), (255, 0, 0))]
    frames[0].save(tmp_path / "anim.webp", save_all=True, append_images=frames[1:], lossless=True)
    px = load_image_full(tmp_path / "anim.webp")[4, 4].astype(int)
    assert px[2] > 240 and px[0] < 15


def _quadrants(h=32, w=48):
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = (255, 0, 0)
    a[: h // 2, w // 2 :] = (0, 255, 0)
    a[h // 2 :, : w // 2] = (0, 0, 255)
    a[h // 2 :, w // 2 :] = (255, 255, 0)
    return a


@pytest.mark.parametrize("orientation, stored_as", [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270)])
def test_exif_rotated_jpeg_comes_out_upright(tmp_path, orientation, stored_as):
    upright = _quadrants()
    stored = Image.fromarray(upright).transpose(stored_as)  # what a camera held sideways writes
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(tmp_path / "cam.jpg", exif=exif.tobytes(), quality=95)
    with Image.open(tmp_path / "cam.jpg") as im:
        assert im.size == (32, 48)  # stored sideways
    got = load_image_full(tmp_path / "cam.jpg")
    assert got.shape == upright.shape
    assert np.abs(got.astype(int) - upright.astype(int)).mean() < 10


def test_file_is_closed_after_open_image(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "c.png")
    img = open_image(tmp_path / "c.png")
    os.remove(tmp_path / "c.png")
    assert img.getpixel((0, 0)) == (0, 0, 0)  # fully loaded, independent of the file


# --- the zoo of broken files -----------------------------------------------------------------------------


def _png_bytes(a):
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def _jpeg_bytes(a):
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_truncated_png(tmp_path):
    data = _png_bytes(random_rgb(64, 64))
    (tmp_path / "broken.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as e:
        load_image(tmp_path / "broken.png", 8)
    check_error(e, "broken.png", "truncated or corrupt")


def test_png_cut_inside_its_header(tmp_path):
    (tmp_path / "stub.png").write_bytes(_png_bytes(random_rgb(8, 8))[:20])
    with pytest.raises(DataError) as e:
        open_image(tmp_path / "stub.png")
    check_error(e, "stub.png", "truncated or corrupt")


def test_truncated_jpeg_really_raises(tmp_path):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # otherwise Pillow would silently pad with grey
    data = _jpeg_bytes(random_rgb(64, 64))
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as e:
        load_image(tmp_path / "half.jpg", 8)
    check_error(e, "half.jpg", "truncated or corrupt")


def test_text_file_renamed_png(tmp_path):
    (tmp_path / "notes.png").write_text("these are not pixels\n" * 10)
    with pytest.raises(DataError) as e:
        load_image(tmp_path / "notes.png", 8)
    check_error(e, "notes.png", "not an image Pillow can read")


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError) as e:
        load_image(tmp_path / "empty.jpg", 8)
    check_error(e, "empty.jpg", "empty file (0 bytes)")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError) as e:
        load_image(tmp_path / "ghost.png", 8)
    assert check_error(e, "ghost.png", "file not found").path == str(tmp_path / "ghost.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(DataError) as e:
        open_image(tmp_path / "dir.png")
    check_error(e, "dir.png", "folder")


def test_broken_symlink(tmp_path):
    (tmp_path / "link.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(DataError) as e:
        open_image(tmp_path / "link.png")
    check_error(e, "link.png", "broken symbolic link")


def test_permission_denied(tmp_path, monkeypatch):
    Image.new("RGB", (4, 4)).save(tmp_path / "secret.png")
    how = deny_reads(tmp_path / "secret.png", monkeypatch)
    try:
        with pytest.raises(DataError) as e:
            load_image(tmp_path / "secret.png", 4)
        check_error(e, "secret.png", "permission denied")
    finally:
        os.chmod(tmp_path / "secret.png", 0o644)
    assert how in ("chmod", "patched")


def _png_claiming(width, height):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bomb_header_is_refused(tmp_path):
    (tmp_path / "bomb.png").write_bytes(_png_claiming(100_000, 100_000))  # 10 G pixels, 100 bytes on disk
    with pytest.raises(DataError) as e:
        open_image(tmp_path / "bomb.png")
    err = check_error(e, "bomb.png", "too large", "10,000,000,000 pixels", "decompression bomb")
    assert f"{Image.MAX_IMAGE_PIXELS:,}" in err.reason


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_over_limit_but_below_pillows_error_is_refused_without_decoding(tmp_path, monkeypatch):
    Image.fromarray(random_rgb(40, 40)).save(tmp_path / "big.png")  # 1,600 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow only warns between 1× and 2× the limit
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(1) or real_load(self))
    with pytest.raises(DataError) as e:
        load_image(tmp_path / "big.png", 8)
    check_error(e, "big.png", "1,600 pixels", "the limit is 1,000")
    assert decoded == []


def test_bomb_warning_escalated_to_error_is_still_a_data_error(tmp_path, monkeypatch):
    Image.fromarray(random_rgb(40, 40)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError) as e:
            open_image(tmp_path / "big.png")
    check_error(e, "big.png", "1,600 pixels", "decompression bomb")


def test_data_error_is_a_value_error_and_pickles():
    import pickle

    err = DataError("/some/where/x.png", "bad\nthing   here")
    assert isinstance(err, ValueError)
    assert str(err) == "x.png: bad thing here"
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) and back.path == err.path
    assert str(DataError(None, "why")) == "why"
    assert str(DataError(None, "why", name="field")) == "field: why"


def test_jpeg_draft_decoding_matches_full_decode(tmp_path):
    yy, xx = np.mgrid[0:600, 0:800]
    a = np.stack([xx * 255 // 799, yy * 255 // 599, np.full_like(xx, 90)], -1).astype(np.uint8)
    a[200:400, 300:500] = (220, 20, 20)
    Image.fromarray(a).save(tmp_path / "photo.jpg", quality=92)
    drafted = open_image(tmp_path / "photo.jpg", draft_size=32)
    assert drafted.size == (100, 75)  # decoded at 1/8 scale: both sides still ≥ 32
    full = to_array(open_image(tmp_path / "photo.jpg"), 32, 3).astype(int)
    fast = to_array(drafted, 32, 3).astype(int)
    assert np.abs(full - fast).mean() < 3
    assert open_image(tmp_path / "photo.jpg", draft_size=700).size == (800, 600)  # never below the request
