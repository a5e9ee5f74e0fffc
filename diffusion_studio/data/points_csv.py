"""2-D points in CSV files: x, y and an optional label per row, one line per bad row, written atomically."""
# Reading is bounded by the file's real size; a file written here reads back exactly.
from __future__ import annotations

import csv
import io
import json
import math
import os
from array import array
from typing import Any, Sequence

import numpy as np

from .points import MAX_BYTES, MAX_CLASSES, MAX_POINTS, MAX_PROBLEMS, PointsError, PointSet, FLOAT32_MAX, printable, quoted


def _number(s: str) -> float | None:
    s = s.strip()
    if not s or "_" in s:  # float() accepts "1_000"; a CSV should not
        return None
    try:
        return float(s)
    except ValueError:
        return None


def _int_label(s: str) -> int | None:
    s = s.strip()
    if s[:1] in "+-":
        body = s[1:]
    else:
        body = s
    return int(s) if body.isdigit() and body.isascii() else None


def _sniff_delimiter(line: str) -> str | None:
    for d in (",", ";", "\t"):
        if d in line:
            return d
    return None  # whitespace-separated


def load_points_csv(path: str | os.PathLike, max_bytes: int = MAX_BYTES,
                    max_rows: int = MAX_POINTS) -> tuple[PointSet, list[str]]:
    """Points from a CSV of x, y[, label]; returns the set and one line per skipped row ("FILE: row N: reason").

    A header row is optional (detected when its first two fields are not numbers; columns named x, y, label are
    found in any order). Labels are non-negative integers (kept as class indices) or names (class indices in sorted
    order of the names, or in the order of a "# class_names: [JSON list]" comment, which save_points_csv writes).
    Blank lines and lines starting with # are skipped. The whole file is refused (PointsError, one line) when it is
    not a regular UTF-8 text file of at most max_bytes, has more than max_rows rows, or yields fewer than 2 points.
    """
    from ..core.io.safeio import read_regular

    shown = printable(os.fspath(path))
    raw = read_regular(path, max_bytes, lambda _p, reason: PointsError(shown, reason), "points file")
    if b"\x00" in raw:
        raise PointsError(shown, "not a text file (it contains NUL bytes)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PointsError(shown, f"not a UTF-8 text file (undecodable byte at offset {e.start:,})") from None
    del raw

    n_bad = 0

    found: list[tuple[int, str]] = []  # (row, reason), sorted by row at the end: labels are checked after parsing

    def bad(row: int, reason: str) -> None:
        nonlocal n_bad
        n_bad += 1
        found.append((row, printable(reason)))
        if len(found) > 2 * MAX_PROBLEMS:  # keep memory bounded: only the first MAX_PROBLEMS rows are reported
            found.sort()
            del found[MAX_PROBLEMS:]

    xs, ys = array("d"), array("d")
    raw_labels: list[str] = []
    label_rows: list[int] = []
    declared_names: list[str] | None = None
    delimiter: str | None = None
    cols: tuple[int, int, int | None] | None = None  # indices of x, y, label
    width: int | None = None
    n_rows = 0

    for row_no, line in enumerate(io.StringIO(text), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            body = stripped[1:].strip()
            if body.startswith("class_names:") and declared_names is None and cols is None:
                try:
                    names = json.loads(body[len("class_names:"):])
                except ValueError:
                    names = None
                if (isinstance(names, list) and all(isinstance(v, str) for v in names)
                        and len(set(names)) == len(names) and 0 < len(names) <= MAX_CLASSES):
                    declared_names = names
                else:
                    bad(row_no, "the class_names comment is not a JSON list of distinct names")
            continue
        if delimiter is None and cols is None:
            delimiter = _sniff_delimiter(stripped)
        if delimiter is None:
            fields = stripped.split()
        else:
            try:
                fields = next(csv.reader([stripped], delimiter=delimiter))
            except csv.Error as e:
                bad(row_no, f"unreadable CSV ({e})")
                continue
        fields = [f.strip() for f in fields]
        n_rows += 1
        if n_rows > max_rows + 1:  # + 1: a header row
            raise PointsError(shown, f"more than {max_rows:,} rows (the limit)")
        if cols is None:
            if len(fields) >= 2 and _number(fields[0]) is None and _number(fields[1]) is None:
                lower = [f.lower() for f in fields]
                if "x" in lower and "y" in lower:
                    cols = (lower.index("x"), lower.index("y"), lower.index("label") if "label" in lower else None)
                elif len(fields) in (2, 3):
                    cols = (0, 1, 2 if len(fields) == 3 else None)
                else:
                    raise PointsError(shown, f"row {row_no}: header {quoted(stripped)} names neither x and y nor "
                                             f"2 or 3 columns")
                width = len(fields)
                continue
            if len(fields) not in (2, 3):
                bad(row_no, f"{len(fields)} columns; expected x, y and an optional label")
                continue
            cols, width = (0, 1, 2 if len(fields) == 3 else None), len(fields)
        if len(fields) != width:
            bad(row_no, f"{len(fields)} columns, expected {width}")
            continue
        ix, iy, il = cols
        values = []
        for name, i in (("x", ix), ("y", iy)):
            v = _number(fields[i])
            if v is None:
                values = f"{name} is not a number: {quoted(fields[i])}"
                break
            if not math.isfinite(v):
                values = f"{name} is not finite: {quoted(fields[i])}"
                break
            if abs(v) > FLOAT32_MAX:
                values = f"{name} = {fields[i]} is beyond float32's range"
                break
            values.append(v)
        if isinstance(values, str):
            bad(row_no, values)
            continue
        if il is not None:
            lab = fields[il]
            if not lab:
                bad(row_no, "empty label")
                continue
            raw_labels.append(lab)
            label_rows.append(row_no)
        xs.append(values[0])
        ys.append(values[1])

    labels, class_names = None, None
    if cols is not None and cols[2] is not None:
        keep, labels, class_names = _resolve_labels(raw_labels, label_rows, declared_names, bad, shown)
        if keep is not None:
            xs = array("d", (xs[i] for i in keep))
            ys = array("d", (ys[i] for i in keep))
    found.sort()
    problems = [f"{shown}: row {row}: {reason}" for row, reason in found[:MAX_PROBLEMS]]
    if n_bad > len(problems):
        problems.append(f"{shown}: … and {n_bad - len(problems):,} more bad rows")
    n = len(xs)
    if n < 2:
        why = "no points" if n == 0 else "only 1 point"
        if n_bad:
            why += f" ({n_bad:,} bad rows; the first: row {found[0][0]}: {found[0][1]})"
        elif n == 0:
            why += " (the file is empty)" if not text.strip() else " (no data rows)"
        raise PointsError(shown, why + ("; need at least 2" if n == 1 else ""))
    pts = np.empty((n, 2), dtype=np.float32)
    pts[:, 0] = np.frombuffer(xs, dtype=np.float64)
    pts[:, 1] = np.frombuffer(ys, dtype=np.float64)
    return PointSet(pts, labels, class_names, shown), problems


def _resolve_labels(raw: list[str], rows: list[int], declared: list[str] | None, bad, shown: str):
    """Class indices for raw label strings; returns (indices of rows kept or None for all, labels, class names)."""
    if declared is not None:
        index = {name: i for i, name in enumerate(declared)}
        out, keep = [], []
        for k, (s, row) in enumerate(zip(raw, rows)):
            if s in index:
                out.append(index[s])
            elif (v := _int_label(s)) is not None and 0 <= v < len(declared):
                out.append(v)
            else:
                bad(row, f"label {quoted(s)} is not one of the {len(declared)} declared classes")
                continue
            keep.append(k)
        return (None if len(keep) == len(raw) else keep), np.asarray(out, dtype=np.int64), tuple(declared)
    ints = [_int_label(s) for s in raw]
    if all(v is not None for v in ints):
        out, keep = [], []
        for k, (v, row) in enumerate(zip(ints, rows)):
            if not 0 <= v < MAX_CLASSES:
                bad(row, f"integer label {v} is outside 0..{MAX_CLASSES - 1}")
                continue
            out.append(v)
            keep.append(k)
        return (None if len(keep) == len(raw) else keep), np.asarray(out, dtype=np.int64), None
    names = sorted(set(raw))
    if len(names) > MAX_CLASSES:
        raise PointsError(shown, f"more than {MAX_CLASSES:,} distinct labels")
    index = {name: i for i, name in enumerate(names)}
    return None, np.asarray([index[s] for s in raw], dtype=np.int64), tuple(names)


def _format_column(values: np.ndarray) -> list[str]:
    """Decimal strings that read back to exactly these values, as short as a few tries allow."""
    if values.dtype == np.float32:
        out: list[str | None] = [None] * len(values)
        todo = np.arange(len(values))
        for digits in (6, 7, 8, 9):
            cand = [f"{v:.{digits}g}" for v in values[todo].tolist()]
            ok = np.array(cand, dtype=np.float64).astype(np.float32) == values[todo] if cand else np.zeros(0, bool)
            for i, s in zip(todo[ok].tolist(), (c for c, k in zip(cand, ok) if k)):
                out[i] = s
            todo = todo[~ok]
            if not len(todo):
                break
        for i in todo.tolist():
            out[i] = repr(float(values[i]))  # the float32 value exactly, as a double
        return out  # type: ignore[return-value]
    return [repr(v) for v in values.astype(np.float64).tolist()]


def save_points_csv(path: str | os.PathLike, points: Any, labels: Any = None,
                    class_names: Sequence[str] | None = None) -> None:
    """Write x, y[, label] atomically (temp file + os.replace); labels are written as names when names are given."""
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 2 or not np.issubdtype(pts.dtype, np.floating):
        raise ValueError(f"points must be a float array of shape (N, 2), got {pts.dtype} {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("points must be finite")
    lab = None
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape != (len(pts),) or not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(f"labels must be integers of shape ({len(pts)},), got {lab.dtype} {lab.shape}")
        if len(lab) and lab.min() < 0:
            raise ValueError("labels must be non-negative")
        if class_names is not None:
            class_names = [str(c) for c in class_names]
            if len(set(class_names)) != len(class_names):
                raise ValueError("class_names must be distinct")
            if len(lab) and lab.max() >= len(class_names):
                raise ValueError(f"label {int(lab.max())} has no class name ({len(class_names)} given)")
            if any(not c.strip() or c != c.strip() or not c.isprintable() for c in class_names):
                raise ValueError("class names must be printable, non-empty and without surrounding spaces")
    xs, ys = _format_column(pts[:, 0]), _format_column(pts[:, 1])
    buf = io.StringIO()
    if lab is not None and class_names is not None:
        buf.write(f"# class_names: {json.dumps(list(class_names), ensure_ascii=False)}\n")
    writer = csv.writer(buf, lineterminator="\n")
    if lab is None:
        writer.writerow(["x", "y"])
        writer.writerows(zip(xs, ys))
    else:
        writer.writerow(["x", "y", "label"])
        names = [class_names[i] for i in lab.tolist()] if class_names is not None else lab.tolist()
        writer.writerows(zip(xs, ys, names))
    from ..core.io.safeio import write_atomic

    write_atomic(os.fspath(path), buf.getvalue().encode("utf-8"))
