"""Runs a batch of files through one of this project's readers in one process: outcome, message, time, hang.

``python hostile_reader_cases.py CASES.json SECONDS`` reads [{"name", "reader", "path"}, ...] and prints
{name: {"outcome": "ok" | "refused" | "crash", "message", "seconds", "hang"}} as one JSON line. A refusal is the
reader's own one-line error type (DataError for captions and points, CheckpointError for arrays); anything else is a
crash, reported with its traceback. tests/test_hostile_readers.py runs it under an address-space limit.
"""
from __future__ import annotations

import json
import signal
import sys
import time
import traceback
from pathlib import Path


class Hang(BaseException):
    """Raised by the alarm; a BaseException, so no reader's own `except Exception` can swallow it."""


def _alarm(signum, frame):
    raise Hang()


def _captions(path: str) -> tuple[str, str]:
    from diffusion_studio.data.captions import folder_captions

    root = Path(path)
    sources = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    captions, problems = folder_captions(root, sources)
    assert len(captions) == len(sources) and all(isinstance(c, str) for c in captions)
    assert all(isinstance(p, str) and "\n" not in p for p in problems), problems
    return "ok", f"{sum(bool(c) for c in captions)} captions, {len(problems)} problems"


def _points(path: str) -> tuple[str, str]:
    import numpy as np

    from diffusion_studio.data.points_csv import load_points_csv

    points, skipped = load_points_csv(path)
    xy = np.asarray(points.points)
    assert xy.ndim == 2 and xy.shape[1] == 2 and len(xy) >= 2 and np.isfinite(xy).all()
    assert all(isinstance(s, str) and "\n" not in s for s in skipped)
    return "ok", f"{len(xy)} points, {len(skipped)} rows skipped"


def _array(path: str) -> tuple[str, str]:
    import torch

    from diffusion_studio.core.io.arrays import read_float_npy

    x = read_float_npy(path, (4, 1, 8, 8), "x_T array")
    assert x.shape == (4, 1, 8, 8) and x.dtype == torch.float32 and bool(torch.isfinite(x).all())
    return "ok", "read"


READERS = {"captions": _captions, "points": _points, "array": _array}


def refusal_types():
    from diffusion_studio.core.errors import CheckpointError
    from diffusion_studio.data.errors import DataError

    return {"captions": (DataError,), "points": (DataError,), "array": (CheckpointError,)}


def run_cases(cases: list[dict], seconds: int) -> dict[str, dict]:
    signal.signal(signal.SIGALRM, _alarm)
    refusals = refusal_types()
    out = {}
    for case in cases:
        t0 = time.perf_counter()
        outcome, message, hang = "crash", "", False
        try:
            signal.alarm(seconds)
            try:
                outcome, message = READERS[case["reader"]](case["path"])
            finally:
                signal.alarm(0)
        except Hang:
            hang = True
        except refusals[case["reader"]] as e:
            outcome, message = "refused", str(e)
        except BaseException:  # noqa: BLE001 - the test reports it
            message = traceback.format_exc(limit=6)
        out[case["name"]] = {"outcome": outcome, "message": message, "hang": hang,
                             "seconds": round(time.perf_counter() - t0, 3)}
    return out


if __name__ == "__main__":
    print(json.dumps(run_cases(json.loads(Path(sys.argv[1]).read_text()), int(sys.argv[2]))))
