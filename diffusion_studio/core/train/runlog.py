"""A run folder's side files, for the CLI and the app alike: metrics.jsonl (the loss log) and run.json (how each
session was started). The checkpoint is the truth: a damaged side file is set aside beside itself, never deleted,
and the run goes on. Memory stays bounded by a line, whatever size a file has."""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import stat
from pathlib import Path
from typing import Any, Callable

from ..errors import CheckpointError
from ..io.safeio import not_regular_reason, open_regular, read_regular, write_atomic

METRICS = "metrics.jsonl"
RUN_JSON = "run.json"
MAX_METRICS_BYTES = 1 << 30    # ~10 M logged lines; a bigger file is not a log this app wrote
MAX_RUN_JSON_BYTES = 16 << 20
MAX_LINE = 64 << 10            # one logged step is ~200 bytes

Warn = Callable[[str], None]


def _ignore(_: str) -> None:
    pass


def set_aside(path: Path, reason: str, warn: Warn = _ignore) -> Path:
    """Rename a damaged file beside itself (nothing is deleted) and say so in one line; returns the new path."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d%H%M%S")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while target.exists() or target.is_symlink():
        n += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    os.replace(path, target)
    warn(f"{path}: damaged ({reason}); set aside as {target.name}; the run goes on (the checkpoint is the truth)")
    return target


def set_aside_special(path: Path, warn: Warn = _ignore) -> None:
    """A fresh run opens ``path`` for writing: a FIFO or device there would block or swallow the log; set it aside."""
    try:
        st = os.stat(path)
    except OSError:
        return
    if not stat.S_ISREG(st.st_mode):
        set_aside(path, not_regular_reason(st.st_mode), warn)


def _step_of(record: Any) -> int | None:
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None


def clean_metrics(path: Path, step: int, warn: Warn = _ignore) -> None:
    """Keep the lines logged up to the checkpoint's ``step`` (a run stopped after its last save logged steps it will
    redo). Half a last line (a killed writer) is dropped quietly; any other damage sets the file aside and keeps its
    good lines. The file is read a line at a time."""
    if not os.path.lexists(path):
        return
    keep: list[bytes] = []
    problem = None
    changed = False
    try:
        with open_regular(path, MAX_METRICS_BYTES, CheckpointError, "loss log") as f:
            for n, raw in enumerate(iter(lambda: f.readline(MAX_LINE + 1), b""), start=1):
                if len(raw) > MAX_LINE:
                    problem = problem or f"line {n}: longer than {MAX_LINE:,} bytes"
                    changed = True
                    f.readline()  # skip the rest of that line
                    continue
                if not raw.strip():
                    continue
                whole = raw.endswith(b"\n")
                try:
                    record = json.loads(raw.decode("utf-8"))
                    found = _step_of(record)
                    if found is None:
                        raise ValueError("no whole-number step")
                except (ValueError, UnicodeDecodeError, RecursionError) as e:
                    changed = True
                    if not whole:
                        continue  # half a line from a killed process
                    problem = problem or f"line {n}: {str(e)[:80]}"
                    continue
                if found <= step:
                    keep.append(raw if whole else raw + b"\n")
                changed |= found > step or not whole
    except CheckpointError as e:
        set_aside(path, e.reason, warn)
        return
    if problem is not None:
        set_aside(path, problem, warn)
    if problem is not None or changed:
        write_atomic(path, b"".join(keep), durable=False)


class MetricsLog:
    """Appends the loss log: a JSON line every ``every`` steps (the mean loss since the last line, the step's lr,
    speed, grad norm and what else the caller adds), flushed at checkpoints and at the end. A fresh run (start 0)
    starts the file afresh; a continued one first drops lines past its checkpoint. The log is a convenience: a
    folder that cannot be written does not stop training."""

    def __init__(self, folder: Path, start_step: int, every: int = 1, warn: Warn = _ignore, main: bool = True):
        self.path = Path(folder) / METRICS
        self.every = max(1, int(every))
        self._window: list[float] = []
        self._file = None
        if not main:  # several processes: rank 0 logs
            return
        try:
            if start_step > 0:
                clean_metrics(self.path, start_step, warn)
            else:
                set_aside_special(self.path, warn)
            self._file = open(self.path, "a" if start_step > 0 else "w", encoding="utf-8")
        except OSError as e:
            warn(f"{self.path}: cannot be written ({e.strerror or e}); training goes on without a loss log")

    def add(self, ev, extra: dict[str, Any] | None = None, force: bool = False) -> dict[str, Any] | None:
        """Take one TrainEvent; returns the line written (None when this step only joined the window)."""
        self._window.append(ev.loss)
        if not (ev.step % self.every == 0 or ev.done or force):
            return None
        finite = [v for v in self._window if math.isfinite(v)]
        loss = sum(finite) / len(finite) if finite else None
        self._window.clear()
        line = {"step": ev.step, "loss": loss, "lr": ev.lr, "images_per_s": ev.images_per_s, "eta_s": ev.eta_s,
                "elapsed_s": ev.elapsed_s, "grad_norm": ev.grad_norm, **(extra or {})}
        if self._file is not None:
            try:
                self._file.write(json.dumps(line) + "\n")
                self._file.flush()
            except (OSError, ValueError):
                self.close()
        return line

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None


def read_loss_history(path: Path, up_to_step: int):
    """(steps, losses) numpy arrays logged at steps ≤ ``up_to_step``, in order; lines that are not a step's record
    are skipped, and a file larger than any run of this app writes is not read (empty history)."""
    import numpy as np  # here: the command line's --help must not pay for numpy

    steps: list[int] = []
    losses: list[float] = []
    try:
        with open_regular(path, MAX_METRICS_BYTES, CheckpointError, "loss log") as f:
            for raw in iter(lambda: f.readline(MAX_LINE + 1), b""):
                try:
                    record = json.loads(raw.decode("utf-8"))
                except (ValueError, UnicodeDecodeError, RecursionError):
                    continue
                step, loss = _step_of(record), record.get("loss") if isinstance(record, dict) else None
                if step is None or not 0 < step <= up_to_step or not isinstance(loss, (int, float)) or \
                        isinstance(loss, bool):
                    continue
                while steps and step <= steps[-1]:  # a log appended after a restart: the later lines win
                    steps.pop()
                    losses.pop()
                steps.append(step)
                losses.append(float(loss))
    except (CheckpointError, OSError):
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    return np.asarray(steps, dtype=np.int64), np.asarray(losses, dtype=np.float64)


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def run_history(path: Path, warn: Warn = _ignore) -> list[dict[str, Any]]:
    """The earlier sessions recorded in run.json (for a resumed run's history); a damaged file is set aside."""
    if not os.path.lexists(path):
        return []
    try:
        raw = read_regular(path, MAX_RUN_JSON_BYTES, CheckpointError, path.name)
        try:
            old = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise CheckpointError(path, f"not valid JSON: {str(e)[:80]}") from None
        if not isinstance(old, dict):
            raise CheckpointError(path, "not a JSON object")
        history = old.get("history", [])
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
            raise CheckpointError(path, "history must be a list of objects")
        if not _finite(old):
            raise CheckpointError(path, "holds a non-finite number")
        return history + [{k: v for k, v in old.items() if k != "history"}]
    except CheckpointError as e:
        set_aside(path, e.reason, warn)
        return []


def write_run_json(path: Path, entry: dict[str, Any], history: list[dict[str, Any]]) -> None:
    write_atomic(path, (json.dumps({**entry, "history": history}, indent=2) + "\n").encode("utf-8"), durable=False)
