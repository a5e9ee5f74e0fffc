"""The bad-input zoo, built into a folder by the tests (nothing is shipped): one function per case, and make_zoo().

Each case writes one file (or link) and ``make_zoo(folder)`` returns what the app must do with it: load it, or
refuse it with a one-line reason containing a keyword. The robustness tests feed the same folder to the CLI and to the
GUI's Images and Training panels.

Permissions: as root (containers, CI), ``chmod 000`` does not stop a read, so ``deny_reads`` also makes the data
layer's ``open`` refuse the file — the same PermissionError a normal user gets.
"""
from __future__ import annotations

import builtins
import errno
import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Expect:
    """What the app must do with a zoo file: load it, or refuse it with a reason containing ``keyword``."""

    loads: bool
    keyword: str = ""


LOADS = Expect(True)


def random_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _encoded(a: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, fmt, **kw)
    return buf.getvalue()


# ---- refused ---------------------------------------------------------------------------------------------------------
def truncated_png(path: Path) -> Expect:
    data = _encoded(random_rgb(64, 64, 1), "PNG")
    path.write_bytes(data[: len(data) // 2])
    return Expect(False, "truncated or corrupt")


def truncated_jpeg(path: Path) -> Expect:
    data = _encoded(random_rgb(64, 64, 2), "JPEG", quality=90)
    path.write_bytes(data[: len(data) // 2])
    return Expect(False, "truncated or corrupt")


def text_renamed_png(path: Path) -> Expect:
    path.write_text("these are notes, not pixels\n" * 10)
    return Expect(False, "not an image")


def zero_bytes(path: Path) -> Expect:
    path.write_bytes(b"")
    return Expect(False, "empty file")


def png_header_claiming(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose header claims width × height pixels (a decompression bomb, as far as a header goes)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + \
        chunk(b"IEND", b"")


def decompression_bomb(path: Path) -> Expect:
    path.write_bytes(png_header_claiming(100_000, 100_000))  # 10 G pixels: refused before any pixel is decoded
    return Expect(False, "decompression bomb")


def unreadable(path: Path) -> Expect:
    """A good picture nobody may read (see deny_reads: chmod alone does not stop root)."""
    Image.fromarray(random_rgb(12, 12, 3)).save(path)
    os.chmod(path, 0)
    return Expect(False, "permission denied")


def dangling_link(path: Path) -> Expect:
    path.symlink_to(path.with_name("no-such-target.png"))
    return Expect(False, "broken symbolic link")


# ---- loaded ----------------------------------------------------------------------------------------------------------
def plain_png(path: Path) -> Expect:
    Image.fromarray(random_rgb(20, 20, 4)).save(path)
    return LOADS


def sixteen_bit_png(path: Path) -> Expect:
    ramp = (np.arange(32 * 32, dtype=np.uint32) * 64).reshape(32, 32).astype(np.uint16)
    Image.fromarray(ramp).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I"), im.mode  # really stored with 16 bits
    return LOADS


def cmyk_jpeg(path: Path) -> Expect:
    Image.fromarray(random_rgb(24, 24, 5)).convert("CMYK").save(path, quality=95)
    with Image.open(path) as im:
        assert im.mode == "CMYK"
    return LOADS


def palette_png_with_transparency(path: Path) -> Expect:
    img = Image.new("P", (16, 16), 0)
    img.putpalette([255, 255, 255, 200, 50, 50] + [0] * 762)
    for i in range(16):
        img.putpixel((i, i), 1)
    img.save(path, transparency=0)
    return LOADS


def animated_gif(path: Path) -> Expect:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as im:
        assert im.n_frames == 3
    return LOADS


def upright_quadrants(h: int = 32, w: int = 48) -> np.ndarray:
    """Four coloured quadrants: any rotation or mirror of it is plainly different."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = (255, 0, 0)
    a[: h // 2, w // 2:] = (0, 255, 0)
    a[h // 2:, : w // 2] = (0, 0, 255)
    a[h // 2:, w // 2:] = (255, 255, 0)
    return a


def exif_rotated_jpeg(path: Path) -> Expect:
    """Stored sideways with EXIF orientation 6, as a camera held on its side writes it; upright_quadrants() upright."""
    stored = Image.fromarray(upright_quadrants()).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, exif=exif.tobytes(), quality=95)
    return LOADS


def one_pixel(path: Path) -> Expect:
    Image.new("RGB", (1, 1), (10, 200, 30)).save(path)
    return LOADS


def very_wide(path: Path) -> Expect:
    Image.fromarray(random_rgb(10, 4000, 6)).save(path)
    return LOADS


# ---- the folder ------------------------------------------------------------------------------------------------------
CASES = {
    "truncated.png": truncated_png,
    "truncated.jpg": truncated_jpeg,
    "text-renamed.png": text_renamed_png,
    "zero-bytes.png": zero_bytes,
    "bomb.png": decompression_bomb,
    "unreadable.png": unreadable,
    "dangling.png": dangling_link,
    "plain.png": plain_png,
    "deep-16bit.png": sixteen_bit_png,
    "cmyk.jpg": cmyk_jpeg,
    "palette-alpha.png": palette_png_with_transparency,
    "animated.gif": animated_gif,
    "exif-rotated.jpg": exif_rotated_jpeg,
    "one-pixel.png": one_pixel,
    "wide-4000x10.png": very_wide,
}
LOOP = "loop"  # a link back to the folder itself: walking it must end


def make_zoo(folder: str | os.PathLike) -> dict[str, Expect]:
    """Build every case into ``folder`` (plus a symlink loop); name → what the app must do with it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {name: make(folder / name) for name, make in CASES.items()}
    (folder / LOOP).symlink_to(folder, target_is_directory=True)
    (folder / "notes.txt").write_text("not an image: skipped quietly, counted as a non-image file\n")
    return out


def good(expect: dict[str, Expect]) -> list[str]:
    return sorted(n for n, e in expect.items() if e.loads)


def bad(expect: dict[str, Expect]) -> dict[str, str]:
    return {n: e.keyword for n, e in expect.items() if not e.loads}


def broken_only(folder: str | os.PathLike) -> list[str]:
    """A folder of nothing but broken image files; their names."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    makers = {"truncated.png": truncated_png, "text-renamed.png": text_renamed_png, "zero-bytes.png": zero_bytes}
    for name, make in makers.items():
        make(folder / name)
    return sorted(makers)


def loop_folder(folder: str | os.PathLike, n: int = 3) -> int:
    """n good images, a subfolder, and links that loop back up (to the root and to the subfolder); returns n + 1."""
    folder = Path(folder)
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(random_rgb(16, 16, 10 + i)).save(folder / f"img{i}.png")
    Image.fromarray(random_rgb(16, 16, 99)).save(folder / "sub" / "deep.png")
    (folder / "sub" / "up").symlink_to(folder, target_is_directory=True)
    (folder / "self").symlink_to(folder / "sub", target_is_directory=True)
    return n + 1


def deny_reads(path: str | os.PathLike, monkeypatch) -> str:
    """Make ``path`` unreadable to the data layer: chmod 000, and (as root, where that is not enough) an ``open``
    that raises PermissionError for it. Returns "chmod" or "patched"."""
    path = os.fspath(path)
    os.chmod(path, 0)
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        return "chmod"
    from diffusion_studio.data import images as images_mod

    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and os.fspath(file) == path:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(images_mod, "open", refusing_open, raising=False)
    return "patched"
