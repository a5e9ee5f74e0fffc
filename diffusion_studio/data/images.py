"""Reading one image file safely: every odd format normalised, every failure a one-line DataError."""

from __future__ import annotations

import errno
import os
import re
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from .convert import from_uint8
from .errors import DataError

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")

# Transparent pixels are composited onto BLACK everywhere in the data layer (training, display, datasets):
# the bundled digits and MNIST are white ink on black, so a transparent PNG of a glyph or shape lands on the
# same background the models already know. Being consistent matters more than the colour itself.
BACKGROUND = 0

# Signatures of formats Pillow reads: a file that starts like one of these but cannot be identified is a
# damaged image ("truncated or corrupt"), not some other kind of file ("not an image").
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError, TypeError)


def _pixel_limit() -> int | None:
    # Read at call time: Pillow's default (~89 M pixels) unless the application deliberately changed it.
    return Image.MAX_IMAGE_PIXELS


def _bomb_error(path: Path, pixels: int | None, limit: int | None) -> DataError:
    size = f"{pixels:,} pixels" if pixels is not None else "too many pixels"
    lim = f"; the limit is {limit:,}" if limit else ""
    return DataError(path, f"image is too large ({size}{lim}) — refused as a possible decompression bomb")


def _bomb_from_message(path: Path, exc: BaseException) -> DataError:
    # Pillow raises before handing back the image, so the size is only in its message ("(N pixels)").
    match = re.search(r"\((\d+) pixels\)", str(exc))
    return _bomb_error(path, int(match.group(1)) if match else None, _pixel_limit())


def _os_error(path: Path, exc: OSError) -> DataError:
    if isinstance(exc, FileNotFoundError) or exc.errno == errno.ENOENT:
        return DataError(path, "file not found")
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
        return DataError(path, "permission denied")
    if isinstance(exc, IsADirectoryError):
        return DataError(path, "is a folder, not an image file")
    return DataError(path, f"cannot read file ({exc.strerror or exc})")


# Decoding work per image. A progressive JPEG is decoded scan by scan, each scan a pass over every block of the
# image, and Pillow/libjpeg set no limit: a 2 MB file with thousands of scans decodes for minutes. Real encoders
# write ≤ ~60 scans (libjpeg: 10 for colour); the work bound lets many scans of a small image through but not of a
# large one.
MAX_JPEG_SCANS = 256
MAX_JPEG_SCAN_MEGAPIXELS = 1000      # scans × megapixels
MAX_IMAGE_BYTES = 1 << 30


def _nonblocking(file, flags):
    return os.open(file, flags | getattr(os, "O_NONBLOCK", 0))


def _not_regular(mode: int) -> str:
    from ..core.io.safeio import not_regular_reason

    return not_regular_reason(mode)


def count_jpeg_scans(f) -> int:
    """Start-of-scan markers (FF DA) in a JPEG file object (its position is kept). In entropy-coded data an FF is
    always followed by 00 or a restart marker, so each FF DA is a scan (an embedded EXIF thumbnail adds its own)."""
    pos = f.tell()
    f.seek(0)
    count, tail = 0, b""
    try:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                return count
            block = tail + chunk
            count += block.count(b"\xff\xda")
            tail = b"\xff" if block.endswith(b"\xff") else b""  # may pair with a DA opening the next chunk
    finally:
        f.seek(pos)


def _check_jpeg_work(f, path: Path, pixels: int) -> None:
    scans = count_jpeg_scans(f)
    if scans > MAX_JPEG_SCANS or scans * pixels > MAX_JPEG_SCAN_MEGAPIXELS * 1_000_000:
        raise DataError(path, f"JPEG with {scans:,} scans of {pixels:,} pixels: more decoding work than any real "
                              f"JPEG needs (limits: {MAX_JPEG_SCANS} scans, {MAX_JPEG_SCAN_MEGAPIXELS:,} "
                              f"scan-megapixels); skipped")


def _starts_like_image(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def _sixteen_bit_to_l(img: Image.Image) -> Image.Image:
    # Pillow's own convert("L") clips 16-bit values at 255 (a 16-bit photo turns white); scale instead.
    a = np.asarray(img)
    if img.mode.startswith("I;16"):
        a = a.astype(np.uint32)
        out = (a * 255 + 32767) // 65535
    else:  # "I" (32-bit): Pillow's container for 16-bit PNG/TIFF data; anything wider is rescaled to fit
        a = a.astype(np.int64)
        lo, hi = int(a.min()), int(a.max())
        if lo >= 0 and hi <= 65535:
            out = (a * 255 + 32767) // 65535
        else:
            span = max(hi - lo, 1)
            out = ((a - lo) * 255 + span // 2) // span
    return Image.fromarray(out.astype(np.uint8), mode="L")


def _float_to_l(img: Image.Image) -> Image.Image:
    a = np.asarray(img, dtype=np.float64)
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(a.min()), float(a.max())
    if lo >= 0.0 and hi <= 1.0:  # the usual convention for float images
        out = a * 255.0
    else:
        out = (a - lo) * (255.0 / max(hi - lo, 1e-12))
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), mode="L")


def _normalise_mode(img: Image.Image) -> Image.Image:
    """Return an image in L, RGB or RGBA (alpha kept; compositing is to_array's job)."""
    mode = img.mode
    if mode in ("L", "RGB", "RGBA"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in img.info
        return img.convert("RGBA" if has_alpha else "RGB")
    if mode in ("LA", "La", "RGBa"):
        return img.convert("RGBA")
    if mode.startswith("I;16") or mode == "I":
        return _sixteen_bit_to_l(img)
    if mode == "F":
        return _float_to_l(img)
    # CMYK, YCbCr, LAB, HSV, RGBX: Pillow's conversions are right for these.
    return img.convert("RGB")


def open_image(path: str | os.PathLike, draft_size: int | None = None) -> Image.Image:
    """Open an image file fully: first frame, EXIF orientation applied, mode L/RGB/RGBA, file closed.

    draft_size lets JPEGs decode at 1/2, 1/4 or 1/8 scale while both sides stay ≥ draft_size: several times
    faster when only a small square is wanted (to_array), and no worse after the final LANCZOS resize.
    Raises DataError for anything that is not a readable image (missing, unreadable, empty, not an image,
    truncated, or over Pillow's decompression-bomb pixel limit, which is checked before any pixel is decoded).
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        reason = "broken symbolic link" if path.is_symlink() else "file not found"
        raise DataError(path, reason) from None
    except OSError as exc:
        raise _os_error(path, exc) from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(path, "is a folder, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise DataError(path, _not_regular(st.st_mode))
    if st.st_size == 0:
        raise DataError(path, "empty file (0 bytes)")

    try:
        # Non-blocking open, then fstat of what was opened: a FIFO swapped in after the stat above cannot hang us.
        f = open(path, "rb", opener=_nonblocking)
    except OSError as exc:
        raise _os_error(path, exc) from None
    with f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise DataError(path, _not_regular(st.st_mode))
        if st.st_size > MAX_IMAGE_BYTES:
            raise DataError(path, f"{st.st_size:,} bytes is too large for an image file (the limit is "
                                  f"{MAX_IMAGE_BYTES:,})")
        try:
            img = Image.open(f)
        except Image.DecompressionBombError as exc:
            raise _bomb_from_message(path, exc) from None
        except Image.DecompressionBombWarning as exc:  # only when warnings are escalated to errors
            raise _bomb_from_message(path, exc) from None
        except UnidentifiedImageError:
            if _starts_like_image(path):
                raise DataError(path, "truncated or corrupt image data (the header cannot be read)") from None
            raise DataError(path, "not an image Pillow can read") from None
        except _DECODE_ERRORS as exc:
            raise DataError(path, f"truncated or corrupt image data ({exc})") from None

        with img:
            # Pillow only warns between 1× and 2× its limit; refuse the whole range, before decoding anything.
            limit = _pixel_limit()
            pixels = img.size[0] * img.size[1]
            if limit is not None and pixels > limit:
                raise _bomb_error(path, pixels, limit)
            if img.format == "JPEG":
                _check_jpeg_work(f, path, pixels)
            try:
                if draft_size is not None and img.format == "JPEG":
                    img.draft(None, (draft_size, draft_size))
                # Animated GIF/WebP open on their first frame; load() decodes just that one.
                img.load()
            except _DECODE_ERRORS as exc:
                raise DataError(path, f"truncated or corrupt image data ({exc})") from None
            try:
                # exif_transpose copies even when there is nothing to do; skip it for the usual upright file.
                rotated = img.getexif().get(ExifTags.Base.Orientation, 1) not in (None, 1)
                upright = ImageOps.exif_transpose(img) if rotated else img
            except Exception:  # noqa: BLE001 - a mangled EXIF block should not cost the user the picture
                upright = img
            try:
                out = _normalise_mode(upright)
            except _DECODE_ERRORS as exc:
                raise DataError(path, f"unsupported image mode {img.mode!r} ({exc})") from None
            # A copy is the only way to be sure nothing still points at the (about to close) file.
            return out.copy() if out is img else out


def _composite(img: Image.Image) -> Image.Image:
    if img.mode != "RGBA":
        return img
    a = np.asarray(img).astype(np.uint16)
    alpha = a[..., 3:4]
    rgb = (a[..., :3] * alpha + BACKGROUND * (255 - alpha) + 127) // 255
    return Image.fromarray(rgb.astype(np.uint8), mode="RGB")


def _check_channels(channels: int) -> None:
    if channels not in (1, 3):
        raise DataError(None, f"must be 1 or 3, not {channels!r}", name="channels")


def _check_size(size: int, field: str = "size") -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise DataError(None, f"must be a positive whole number of pixels, not {size!r}", name=field)


def check_archive_args(path, size: int, channels: int, split: str, splits, limit: int | None) -> "Path":
    """The checks every local dataset folder loader (MNIST, CIFAR-10) makes first; returns the folder."""
    from pathlib import Path

    _check_size(size)
    _check_channels(channels)
    if split not in splits:
        raise DataError(None, f"must be one of {', '.join(splits)}, not {split!r}", name="split")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataError(None, f"must be a whole number ≥ 1, not {limit!r}", name="limit")
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(folder, "folder not found" if not folder.exists() else "not a folder")
    return folder


def _resize(img: Image.Image, w: int, h: int) -> Image.Image:
    if img.size == (w, h):
        return img
    shrinking = w * h < img.size[0] * img.size[1]
    # reducing_gap makes huge downscales fast (a box pre-reduction) at no visible cost.
    if shrinking:
        return img.resize((w, h), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return img.resize((w, h), Image.Resampling.BICUBIC)


def _to_mode(img: Image.Image, channels: int) -> Image.Image:
    img = _composite(img)
    want = "L" if channels == 1 else "RGB"
    return img if img.mode == want else img.convert(want)


def _as_hwc(img: Image.Image) -> np.ndarray:
    a = np.array(img, dtype=np.uint8)  # a writable copy: np.asarray of a PIL image is read-only
    if a.ndim == 2:
        a = a[:, :, None]
    return np.ascontiguousarray(a)


def to_array(img: Image.Image, size: int, channels: int) -> np.ndarray:
    """Centre-crop to the largest square, resize to size×size; uint8 array (size, size, channels)."""
    _check_size(size)
    _check_channels(channels)
    img = _to_mode(_normalise_mode(img), channels)
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    if (w, h) != (side, side):
        img = img.crop((left, top, left + side, top + side))
    return _as_hwc(_resize(img, size, size))


def load_image(path: str | os.PathLike, size: int, channels: int = 3) -> torch.Tensor:
    """One image file as a float32 tensor (channels, size, size) in [-1, 1]."""
    _check_size(size)
    _check_channels(channels)
    return from_uint8(to_array(open_image(path, draft_size=size), size, channels))


def load_image_full(path: str | os.PathLike, max_side: int | None = None, channels: int = 3) -> np.ndarray:
    """An image for display: uint8 (H, W, channels), aspect kept, shrunk so the longest side ≤ max_side."""
    _check_channels(channels)
    if max_side is not None:
        _check_size(max_side, "max_side")
    img = _to_mode(open_image(path), channels)
    w, h = img.size
    if max_side is not None and max(w, h) > max_side:
        scale = max_side / max(w, h)
        img = _resize(img, max(1, round(w * scale)), max(1, round(h * scale)))
    return _as_hwc(img)
