"""`train` on 2 CPU processes through torchrun and through --nproc: one checkpoint, rank 0's log, resumable on one."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
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
            sys.exit(1)
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
