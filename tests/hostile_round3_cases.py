"""Runs a batch of command lines through diffusion_studio.cli.main in one process: exit code, stderr, time, hang.

``python hostile_round3_cases.py CASES.json SECONDS`` reads [{"name": ..., "argv": [...]}, ...], runs each with
stdout and stderr captured and an alarm of SECONDS (a case still running then is recorded as a hang), and prints
{name: {"rc", "stderr", "seconds", "hang", "crash"}} as one JSON line. tests/test_hostile_round3.py runs it in a
subprocess under an address-space limit, so a case that allocates what a file claims dies there, not the machine.
"""
from __future__ import annotations

import contextlib
import io
import json
import signal
import sys
import time
import traceback
from pathlib import Path


class Hang(BaseException):
    """Raised by the alarm; a BaseException, so the CLI's own `except Exception` cannot swallow it."""


def _alarm(signum, frame):
    raise Hang()


def run_cases(cases: list[dict], seconds: int) -> dict[str, dict]:
    from diffusion_studio.cli import main

    signal.signal(signal.SIGALRM, _alarm)
    out = {}
    for case in cases:
        err, std = io.StringIO(), io.StringIO()
        rc, hang, crash = None, False, ""
        t0 = time.perf_counter()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
                signal.alarm(seconds)
                try:
                    rc = main(list(case["argv"]))
                finally:
                    signal.alarm(0)
        except Hang:
            hang = True
        except BaseException:  # noqa: BLE001 - main let something through: the test reports it
            crash = traceback.format_exc(limit=5)
        out[case["name"]] = {"rc": rc, "stderr": err.getvalue(), "seconds": round(time.perf_counter() - t0, 3),
                             "hang": hang, "crash": crash}
    return out


if __name__ == "__main__":
    print(json.dumps(run_cases(json.loads(Path(sys.argv[1]).read_text()), int(sys.argv[2]))))
