"""Hostile cases run in one subprocess under an address-space limit and a per-case time limit: what the fuzzers of
test_hostile_readers.py and test_hostile_round3.py share (each has its own runner script and limits)."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_cases(runner: Path, cases: list[dict], folder: Path, limit_bytes: int, case_seconds: int,
              slack_seconds: int) -> dict[str, dict]:
    """Every case's command line in one subprocess of ``runner`` under ``limit_bytes`` of address space and
    ``case_seconds`` a case; the results the runner prints as its last line (JSON)."""
    spec = folder / "cases.json"
    spec.write_text(json.dumps(cases))
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    proc = subprocess.run([sys.executable, str(runner), str(spec), str(case_seconds)], env=env, capture_output=True,
                          text=True, timeout=slack_seconds + case_seconds * len(cases), preexec_fn=limit)
    assert proc.returncode == 0, f"the case runner died (memory or a crash):\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.splitlines()[-1])
