"""Captions for images: what builtin:shapes drew, digit words, or a folder's metadata, sidecars or subfolders."""
# Folders: a Hugging Face imagefolder metadata.jsonl / metadata.csv (file_name + text), NAME.txt beside each image,
# otherwise the subfolder name.
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import DataError

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MAX_CAPTION_FILE = 64 << 20   # a metadata file larger than this is refused, whatever it holds
MAX_CAPTION_CHARS = 1000      # one caption; longer ones are cut (the encoder reads 16 tokens anyway)
MAX_SIDECAR = 16 << 10


def digit_caption(k: int, form: int) -> str:
    return (f"the digit {DIGIT_WORDS[k]}", f"{k}", DIGIT_WORDS[k], f"a handwritten {k}")[form]


def digit_captions(labels, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(20_000 + seed)
    forms = rng.integers(0, 4, len(labels))
    return [digit_caption(int(k), int(f)) for k, f in zip(labels, forms)]


# ---- folders ---------------------------------------------------------------------------------------------------------
def _read_bytes(path: Path, limit: int, root: Path) -> bytes:
    """The bytes of a caption file: a regular file inside ``root`` (a symbolic link may point elsewhere inside it,
    never out of it), at most ``limit`` bytes."""
    from ..core.io.safeio import read_regular

    try:
        real, top = os.path.realpath(path), os.path.realpath(root)
    except (OSError, ValueError) as e:
        raise DataError(path, f"cannot read ({e})") from None
    if os.path.commonpath([real, top]) != top:
        raise DataError(path, "a symbolic link that leads out of the data folder; not read")
    return read_regular(path, limit, error=DataError, what="caption file")


def _read_text(path: Path, limit: int, root: Path) -> str:
    """A sidecar's whole text, UTF-8."""
    raw = _read_bytes(path, limit, root)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(path, f"not UTF-8 text (byte {e.start})") from None


def _lines(raw: bytes, name: str, problems: list[str]) -> list[tuple[int, str]]:
    """(line number, text) of every line; a line that is not UTF-8 becomes "" (skipped as blank), with one problem line
    saying so."""
    out = []
    for n, line in enumerate(raw.removeprefix(b"\xef\xbb\xbf").splitlines(), start=1):
        try:
            out.append((n, line.decode("utf-8")))
        except UnicodeDecodeError as e:
            problems.append(f"{name} line {n}: not UTF-8 text (byte {e.start}); the line is skipped")
            out.append((n, ""))
    return out


def _caption(value, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: the caption is not text ({type(value).__name__})")
    text = " ".join(value.split())[:MAX_CAPTION_CHARS]
    if not text:
        raise ValueError(f"{where}: empty caption")
    return text


def _metadata_rows(path: Path, root: Path) -> tuple[list[tuple[str, str, str]], list[str]]:
    """[(where, file_name, text)] from metadata.jsonl or metadata.csv, and one line per unusable row."""
    problems: list[str] = []
    rows: list[tuple[str, str, str]] = []
    try:
        raw = _read_bytes(path, MAX_CAPTION_FILE, root)
    except DataError as e:
        return rows, [str(e)]
    lines = _lines(raw, path.name, problems)  # a bad byte costs its line, not the file
    if path.suffix == ".jsonl":
        for n, line in lines:
            if not line.strip():
                continue
            where = f"{path.name} line {n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"{where}: not JSON ({e.msg})")
                continue
            except RecursionError:
                problems.append(f"{where}: nested too deeply to be a caption row")
                continue
            if not isinstance(obj, dict) or "file_name" not in obj:
                problems.append(f"{where}: no \"file_name\"")
                continue
            col = "text" if "text" in obj else "caption" if "caption" in obj else None
            if col is None:
                problems.append(f"{where}: no \"text\" (or \"caption\") for {obj['file_name']!r}")
                continue
            try:
                rows.append((where, str(obj["file_name"]), _caption(obj[col], where)))
            except ValueError as e:
                problems.append(str(e))
        return rows, problems
    reader = csv.DictReader(io.StringIO("\n".join(line for _, line in lines)))
    fields = reader.fieldnames or []
    col = "text" if "text" in fields else "caption" if "caption" in fields else None
    if "file_name" not in fields or col is None:
        return rows, [f"{path.name}: needs the columns file_name and text (found: {', '.join(fields) or 'none'})"]
    try:
        for row in reader:
            where = f"{path.name} line {reader.line_num}"
            if row.get("file_name") in (None, ""):
                problems.append(f"{where}: no file_name")
                continue
            try:
                rows.append((where, row["file_name"], _caption(row.get(col), where)))
            except ValueError as e:
                problems.append(str(e))
    except csv.Error as e:
        problems.append(f"{path.name} line {reader.line_num}: {e}; the rest of the file is skipped")
    return rows, problems


def folder_captions(root: str | Path, sources: Sequence[str]) -> tuple[list[str], list[str]]:
    """A caption per image (``sources``: paths relative to ``root``) and one line per problem found.

    Precedence: a metadata.jsonl / metadata.csv row (in the image's folder or any folder above it, file_name relative
    to that metadata file), then NAME.txt beside the image, then the image's top subfolder name. An image with none
    of these gets "" (trained as the null caption) and a problem line.
    """
    root = Path(root)
    index = {s: i for i, s in enumerate(sources)}
    captions: list[str | None] = [None] * len(sources)
    problems: list[str] = []
    # Shallowest first, so a metadata file nearer the image overrides one above it.
    folders = sorted({Path(s).parent.as_posix() for s in sources} | {"."}, key=lambda d: (d != ".", d.count("/"), d))
    seen_meta = set()
    for folder in folders:
        for name in ("metadata.jsonl", "metadata.csv"):
            meta = root / folder / name
            if meta in seen_meta or not os.path.lexists(meta):
                continue
            seen_meta.add(meta)
            rows, bad = _metadata_rows(meta, root)
            problems += [f"{folder}/{p}" if folder != "." else p for p in bad]
            for where, file_name, text in rows:
                rel = (Path(folder) / file_name).as_posix() if folder != "." else Path(file_name).as_posix()
                if rel not in index:
                    problems.append(f"{where}: names {file_name!r}, which is not among the loaded images")
                    continue
                captions[index[rel]] = text
    for i, src in enumerate(sources):
        if captions[i] is not None:
            continue
        side = (root / src).with_suffix(".txt")
        if os.path.lexists(side):
            try:
                captions[i] = _caption(_read_text(side, MAX_SIDECAR, root), side.name)
            except (DataError, ValueError) as e:
                problems.append(str(e))
            if captions[i] is not None:
                continue
        if "/" in src:
            captions[i] = src.split("/", 1)[0].replace("_", " ").replace("-", " ")
        else:
            problems.append(f"{src}: no caption (no metadata row, no {Path(src).stem}.txt, not in a subfolder); "
                            f"trained as the empty caption")
            captions[i] = ""
    return [c or "" for c in captions], problems


def attach_captions(ds) -> list[str]:
    """Give a dataset its captions (``ds.captions``) if it has none yet; returns one line per problem.

    DataError when the data has nothing to caption it with.
    """
    if ds.captions:
        return []
    spec = (ds.spec or "").strip()
    if spec in ("builtin:digits", "builtin:mnist") or spec.lower().startswith("mnist:"):
        ds.captions = digit_captions(ds.labels.tolist())
        return []
    if ds.sources and ds.report is not None:  # a folder (load_folder records the files it loaded)
        captions, problems = folder_captions(Path(spec).expanduser(), ds.sources)
        if not any(captions):
            first = f"; the first: {problems[0]}" if problems else ""
            raise DataError(None, f"no usable caption for any of its {len(captions):,} images "
                                  f"({len(problems):,} caption problems{first})", name=ds.name or spec)
        ds.captions = captions
        return problems
    if ds.labels is not None and ds.class_names:
        ds.captions = [f"a {ds.class_names[int(k)]}" for k in ds.labels]
        return []
    raise DataError(None, "has no captions to condition on (use a folder with metadata.jsonl, metadata.csv, "
                          "NAME.txt files or class subfolders)", name=ds.name or spec or "data")
