"""A run folder's side files (metrics.jsonl, run.json): the checkpoint is the truth, so a damaged log is set aside."""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
from pathlib import Path
from typing import Any

from .common import say, write_text_atomic

MAX_METRICS_BYTES = 1 << 30   # ~10 M logged lines; a bigger file is not a log this app wrote
MAX_RUN_JSON_BYTES = 16 << 20


class _Damaged(Exception):
    pass


def set_aside(path: Path, reason: str) -> Path:
    """Rename a damaged file beside itself (nothing is deleted) and say so in one line; returns the new path."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d%H%M%S")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while target.exists() or target.is_symlink():
        n += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    os.replace(path, target)
    say(f"{path}: damaged ({reason}); set aside as {target.name}; the run goes on (the checkpoint is the truth)")
    return target


def _read(path: Path, limit: int) -> bytes | None:
    from ..core.errors import CheckpointError
    from ..core.io.safeio import read_regular

    if not os.path.lexists(path):
        return None
    try:
        return read_regular(path, limit, CheckpointError, path.name)
    except CheckpointError as e:
        raise _Damaged(e.reason) from None


def set_aside_special(path: Path) -> None:
    """A fresh run opens ``path`` for writing: a FIFO or device there would block or swallow the log; set it aside."""
    import stat

    try:
        st = os.stat(path)
    except OSError:
        return
    if not stat.S_ISREG(st.st_mode):
        from ..core.io.safeio import not_regular_reason

        set_aside(path, not_regular_reason(st.st_mode))


def _step_of(line: str) -> int:
    record = json.loads(line)
    step = record.get("step") if isinstance(record, dict) else None
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"no whole-number step in {line.strip()[:60]!r}")
    return step


def clean_metrics(path: Path, step: int) -> None:
    """Keep the metric lines up to the checkpoint's ``step`` (a run killed after its last save logged steps it will
    redo). Half a last line (a killed writer) is dropped quietly; any other damage sets the file aside and keeps its
    good lines."""
    try:
        raw = _read(path, MAX_METRICS_BYTES)
    except _Damaged as e:
        set_aside(path, str(e))
        return
    if raw is None:
        return
    keep: list[str] = []
    problem = None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        problem, text = f"not UTF-8 text at byte {e.start}", raw.decode("utf-8", "replace")
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            if _step_of(line) <= step:
                keep.append(line if line.endswith("\n") else line + "\n")
        except (ValueError, RecursionError) as e:
            if i == len(lines) - 1 and not line.endswith("\n"):
                continue  # half a line from a killed process
            problem = problem or f"line {i + 1}: {str(e)[:80]}"
    if problem is not None:
        set_aside(path, problem)
        write_text_atomic(path, "".join(keep))
    elif keep != lines:
        write_text_atomic(path, "".join(keep))


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def run_history(path: Path) -> list[dict[str, Any]]:
    """The earlier sessions recorded in run.json (for a resumed run's history); a damaged file is set aside."""
    try:
        raw = _read(path, MAX_RUN_JSON_BYTES)
        if raw is None:
            return []
        try:
            old = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise _Damaged(f"not valid JSON: {str(e)[:80]}") from None
        if not isinstance(old, dict):
            raise _Damaged("not a JSON object")
        history = old.get("history", [])
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
            raise _Damaged("history must be a list of objects")
        if not _finite(old):
            raise _Damaged("holds a non-finite number")
        return history + [{k: v for k, v in old.items() if k != "history"}]
    except _Damaged as e:
        set_aside(path, str(e))
        return []
