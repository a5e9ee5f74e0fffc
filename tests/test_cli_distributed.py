"""`train` on 2 CPU processes (torchrun, --nproc): one checkpoint, rank 0's log; stray torchrun variables: one line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from diffusion_studio.core.train import distributed

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["train", "--data", "builtin:digits", "--size", "8", "--model", "tiny", "--steps", "3", "--batch", "4",
         "--log-every", "1", "--threads", "1", "--precision", "fp32", "--checkpoint-every", "2"]


def _run(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _check_run_then_resume_on_one(run: Path, tmp_path: Path) -> None:
    assert sorted(p.name for p in run.glob("*.json")) == ["checkpoint.json", "run.json"]
    assert len(list(run.glob("*.safetensors"))) == 1  # saved once (rank 0), old weights replaced
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]  # one log, rank 0's
    manifest = json.loads((run / "checkpoint.json").read_text())
    assert manifest["step"] == 3 and manifest["train"]["batch_size"] == 4
    r = _run(["-m", "diffusion_studio", "train", "--out", str(run), "--resume", "--steps", "5", "--threads", "1"],
             tmp_path)
    assert r.returncode == 0, r.stderr
    assert "resuming at step 3" in r.stdout
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]


@pytest.mark.slow
def test_nproc_2_trains_checkpoints_once_and_resumes_on_one_process(tmp_path):
    r = _run(["-m", "diffusion_studio", *TRAIN, "--out", "run", "--nproc", "2"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("done      3 steps") == 1  # rank 0 reports; rank 1 is quiet
    assert "Traceback" not in r.stderr
    _check_run_then_resume_on_one(tmp_path / "run", tmp_path)


@pytest.mark.slow
def test_torchrun_runs_train_unchanged(tmp_path):
    port = distributed.free_port()
    r = _run(["-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
              "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
              "-m", "diffusion_studio", *TRAIN, "--out", "run"], tmp_path)
    assert r.returncode == 0, r.stderr
    _check_run_then_resume_on_one(tmp_path / "run", tmp_path)


@pytest.mark.slow
def test_a_dead_rank_is_a_one_line_error_not_a_hang(tmp_path):
    script = tmp_path / "die.py"
    script.write_text(textwrap.dedent("""
        import os, sys, torch
        from diffusion_studio.core.train import distributed
        from diffusion_studio.core.diffusion.schedule import NoiseSchedule
        from diffusion_studio.core.train.trainer import TensorImages, TrainConfig, Trainer
        from diffusion_studio.core.nets.unet import preset_config
        ctx = distributed.init("cpu", timeout_s=30)
        cfg = TrainConfig(steps=50, batch_size=4, device="cpu", precision="fp32", channels_last=False)
        data = TensorImages(torch.zeros(8, 1, 8, 8))
        trainer = Trainer(preset_config("tiny", 8, 1), NoiseSchedule.create("linear", T=20), data, cfg)
        try:
            for ev in trainer.run():
                if ctx.rank == 1 and ev.step == 2:
                    os._exit(7)  # dies without a word, as a killed process does
        except Exception as e:
            print("EXPLAINED:", distributed.explain(e) or repr(e))
            distributed.exit_now(1)  # as the CLI leaves a rank: no interpreter teardown under gloo's threads
    """))
    port = distributed.free_port()
    procs = [subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT,
                              env={**os.environ, "RANK": str(r), "WORLD_SIZE": "2", "LOCAL_RANK": str(r),
                                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
                                   "PYTHONPATH": str(ROOT)}) for r in range(2)]
    out0, _ = procs[0].communicate(timeout=120)  # well inside the test's limit: no hang
    procs[1].communicate(timeout=60)
    assert procs[1].returncode == 7
    assert procs[0].returncode == 1, out0
    line = next(ln for ln in out0.splitlines() if ln.startswith("EXPLAINED:"))
    assert "rank 0: lost contact with another process of the 2-process run" in line


def test_launcher_failures_become_one_line_naming_the_rank():
    from types import SimpleNamespace as F

    from diffusion_studio.cli.common import CliError
    from diffusion_studio.cli.train_dist import _report_failures, _without_nproc

    assert _report_failures({0: F(exitcode=130), 1: F(exitcode=130)}, 2) == 130  # Ctrl+C: rank 0 reported it
    assert _report_failures({0: F(exitcode=-15), 1: F(exitcode=2)}, 2) == 2  # rank 1 printed its usage error
    assert _report_failures({0: F(exitcode=-15), 1: F(exitcode=143)}, 2) == 143  # SIGTERM to rank 1: all stopped
    with pytest.raises(CliError, match=r"^rank 1 of 2 was killed by SIGKILL; the other processes were stopped"):
        _report_failures({0: F(exitcode=1), 1: F(exitcode=-9)}, 2)
    assert _without_nproc(["train", "--nproc", "2", "--out", "r", "--nproc=3"]) == ["train", "--out", "r"]


# ---- stray or wrong torchrun environments: one line at once, never a hang ------------------------------------------
DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
             "TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_RUN_ID")


def _stray(env: dict[str, str], extra: list[str] | None = None):
    """``train`` in a plain shell with ``env`` left over: (exit code, stderr lines, seconds); nothing written."""
    clean = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    port = str(distributed.free_port())  # nobody listens there
    env = {k: v.replace("{port}", port) for k, v in env.items()}
    full = {**clean, **env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "diffusion_studio", "train", "--data", "builtin:digits", "--steps", "2",
            "--out", "run", *(extra or [])]
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run(args, cwd=tmp, env=full, capture_output=True, text=True, timeout=60)
        assert not (Path(tmp) / "run").exists() or not any((Path(tmp) / "run").iterdir())
    return r.returncode, [ln for ln in r.stderr.splitlines() if ln.strip()], time.monotonic() - t0


PEER = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "{port}"}
STRAY = [  # (environment, extra arguments, exit code, what the one line must name)
    ({"RANK": "5", "WORLD_SIZE": "2", **PEER}, [], 2, "RANK=5"),
    ({"RANK": "0", "WORLD_SIZE": "2", **PEER}, [], 1, "MASTER_ADDR:MASTER_PORT (127.0.0.1:"),
    ({"RANK": "1", "WORLD_SIZE": "2", **PEER}, [], 1, "MASTER_ADDR:MASTER_PORT (127.0.0.1:"),
    ({"RANK": "0", "WORLD_SIZE": "2", "TORCHELASTIC_USE_AGENT_STORE": "True", **PEER}, [], 1, "MASTER_ADDR:"),
    ({"RANK": "0", "WORLD_SIZE": str(10**9), **PEER}, [], 2, "WORLD_SIZE=1000000000"),
    ({"RANK": "abc", "WORLD_SIZE": "2", **PEER}, [], 2, "RANK must be a whole number, got 'abc'"),
    ({"RANK": "0", "WORLD_SIZE": "x", **PEER}, [], 2, "WORLD_SIZE must be a whole number, got 'x'"),
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "abc", **PEER}, [], 2, "LOCAL_RANK must be a whole number"),
    ({"RANK": "0", "WORLD_SIZE": "4", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "2", **PEER}, [], 2, "LOCAL_RANK=2"),
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "3", **PEER}, [], 2, "LOCAL_WORLD_SIZE=3"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "99999", "MASTER_ADDR": "127.0.0.1"}, [], 2, "MASTER_PORT=99999"),
    ({"RANK": "0", "WORLD_SIZE": "2"}, [], 2, "MASTER_ADDR is not set"),
    ({"RANK": "0"}, [], 2, "RANK is set ('0') but WORLD_SIZE is not"),
    ({}, ["--nproc", "1000", "--batch", "1000"], 2, "argument --nproc: 1000 processes"),
    ({"RANK": "0", "WORLD_SIZE": "2", **PEER}, ["--nproc", "2"], 2, "argument --nproc"),
]


@pytest.mark.parametrize("env,extra,code,names", STRAY, ids=[s[3].split(" ")[0] + f"-{i}" for i, s in enumerate(STRAY)])
def test_a_stray_environment_is_one_line_naming_the_variable_within_seconds(env, extra, code, names):
    rc, lines, seconds = _stray(env, extra)
    assert rc == code, lines
    assert len(lines) == 1 and lines[0].startswith("diffusion-studio: "), lines
    assert names in lines[0] and "Traceback" not in lines[0], lines
    assert seconds < 10, f"{seconds:.1f} s: {lines}"
    if code == 1 and env.get("RANK") == "0" and "TORCHELASTIC_USE_AGENT_STORE" not in env:
        assert "never came" in lines[0] and "within 3 s" in lines[0]


def test_read_environment_accepts_what_torchrun_sets_and_names_what_it_does_not():
    ok = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "node0",
          "MASTER_PORT": "29500"}
    env = distributed.read_environment(ok)
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.master_port) == (3, 4, 1, "node0", 29500)
    assert distributed.read_environment({}) is None
    assert distributed.read_environment({"RANK": "0", "WORLD_SIZE": "1"}).world_size == 1  # one process: no peer
    for name, value in [("RANK", "+1"), ("RANK", "1_0"), ("RANK", "٣"), ("RANK", "-1"), ("WORLD_SIZE", "0"),
                        ("WORLD_SIZE", "4097"), ("MASTER_PORT", "0"), ("MASTER_ADDR", "a b"), ("LOCAL_RANK", "2")]:
        with pytest.raises(ValueError, match=f"^environment variable {name}"):
            distributed.read_environment({**ok, name: value})
