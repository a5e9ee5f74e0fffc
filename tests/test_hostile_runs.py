"""Hostile runs (issue 15, classes 1 and 5-8): one writer per run folder, saves that never delete another manifest's
weights, export that will not end a run, SIGHUP saves, damaged logs set aside, degenerate samples refused, every
manifest field checked by name, and usage errors that exit 2."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from diffusion_studio.cli import main
from diffusion_studio.core.io import runlock
from diffusion_studio.core.io.checkpoint import load_checkpoint, save_checkpoint
from diffusion_studio.core.errors import CheckpointError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[1]
POSIX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="flock, signals and fork")
TRAIN = ["train", "--data", "builtin:digits", "--size", "8", "--model", "tiny", "--batch", "4", "-q",
         "--log-every", "1", "--T", "50"]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))


def cli(capsys, *args) -> tuple[int, str, list[str]]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def one_error_line(err: list[str], *needles: str) -> str:
    errors = [line for line in err if line.startswith("diffusion-studio: ")]
    assert len(errors) == 1, err
    assert "Traceback" not in "\n".join(err)
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished 2-step run (resumable checkpoint, metrics.jsonl, run.json)."""
    out = tmp_path_factory.mktemp("run") / "r"
    assert main([*TRAIN, "--steps", "2", "--out", str(out)]) == 0
    return out


def copy_run(run: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(run, to, ignore=shutil.ignore_patterns(".lock"))
    return to


# ---- 1. one writer per run folder -----------------------------------------------------------------------------------
def test_in_one_process_the_lock_is_reentrant_and_released(tmp_path):
    with runlock.run_lock(tmp_path, "train"):
        with runlock.run_lock(tmp_path, "save"):
            assert runlock.holds(tmp_path) and runlock.exclusive(tmp_path)
        assert runlock.holds(tmp_path)
    assert not runlock.holds(tmp_path)


def _tiny_state(seed: int) -> dict[str, torch.Tensor]:
    from diffusion_studio.core.nets.unet import UNet, preset_config

    torch.manual_seed(seed)
    return UNet(preset_config("tiny", 8, 1)).state_dict()


def _meta(step: int) -> dict:
    from diffusion_studio.core.diffusion.schedule import NoiseSchedule
    from diffusion_studio.core.nets.unet import preset_config

    return {"step": step, "model": preset_config("tiny", 8, 1).to_dict(),
            "schedule": NoiseSchedule.create("linear", 20).to_dict()}


def test_a_save_never_deletes_weights_another_manifest_names(tmp_path):
    other = save_checkpoint(tmp_path / "checkpoint-b.json", {"ema": _tiny_state(1)}, _meta(1))
    # A second manifest naming a weights file in checkpoint.json's own naming scheme (a copy, a backup, a GUI save)
    borrowed = json.loads(other.read_text())
    os.link(tmp_path / borrowed["weights"], tmp_path / "checkpoint-0000001-19990101000000000000.safetensors")
    borrowed["weights"] = "checkpoint-0000001-19990101000000000000.safetensors"
    (tmp_path / "backup.json").write_text(json.dumps(borrowed))
    for step in (2, 3, 4):
        save_checkpoint(tmp_path / "checkpoint.json", {"ema": _tiny_state(step)}, _meta(step))
    assert load_checkpoint(tmp_path / "backup.json").step == 1
    assert load_checkpoint(other).step == 1 and load_checkpoint(tmp_path / "checkpoint.json").step == 4
    assert len(list(tmp_path.glob("checkpoint-0*.safetensors"))) == 2  # the named one and the latest


# Two writer processes forked from one that imported torch once; each saves again and again to the same manifest,
# retrying while the other holds the folder. The parent SIGKILLs one at random moments and restarts it; after every
# kill the folder must load.
RACE = r"""
import os, random, signal, sys, time
import torch
torch.set_num_threads(1)
from diffusion_studio.core.io.checkpoint import save_checkpoint
from diffusion_studio.core.io.runlock import RunLocked
from diffusion_studio.core.diffusion.schedule import NoiseSchedule
from diffusion_studio.core.nets.unet import UNet, preset_config

target = sys.argv[1]
cfg = preset_config("tiny", 8, 1)
base = UNet(cfg).state_dict()
sched = NoiseSchedule.create("linear", 20).to_dict()

def writer(who):
    v = 0
    while True:
        v += 1
        try:
            save_checkpoint(target, {"ema": base, "tag": {"who": torch.tensor([who, v])}},
                            {"step": v, "model": cfg.to_dict(), "schedule": sched})
        except RunLocked:
            time.sleep(0.002)

def spawn(who):
    pid = os.fork()
    if pid == 0:
        writer(who)
    return pid

kids = {0: spawn(0), 1: spawn(1)}
print("ready", flush=True)
for line in sys.stdin:
    who, delay = line.split()
    time.sleep(float(delay))
    os.kill(kids[int(who)], signal.SIGKILL)
    os.waitpid(kids[int(who)], 0)
    print("killed", flush=True)
    sys.stdin.readline()  # the test has checked the folder
    kids[int(who)] = spawn(int(who))
    print("restarted", flush=True)
for pid in kids.values():
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
"""


@POSIX
@pytest.mark.timeout(180)
def test_two_writers_racing_with_kills_never_leave_the_folder_unloadable(tmp_path):
    manifest = tmp_path / "run" / "checkpoint.json"
    manifest.parent.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", RACE, str(manifest)], env=_env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    rng = random.Random(15)
    writers_seen = set()
    try:
        assert proc.stdout.readline().strip() == "ready"
        for _ in range(12):
            proc.stdin.write(f"{rng.randrange(2)} {rng.uniform(0.05, 0.4):.3f}\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "killed"
            deadline = time.monotonic() + 60
            while not manifest.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            ckpt = load_checkpoint(manifest)  # raises if the kill left it unloadable
            writers_seen.add(int(ckpt.tensors["tag"]["who"][0]))
            proc.stdin.write("checked\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "restarted"
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert writers_seen, "no save was ever completed"
    # Leftovers stay bounded: killed saves leave at most their own temporary or unnamed files, swept by later saves.
    assert len(list(manifest.parent.glob("checkpoint-*.safetensors"))) <= 3


def test_export_will_not_write_over_a_resumable_run(run, tmp_path, capsys):
    target = copy_run(run, tmp_path / "target")
    code, out, err = cli(capsys, "export", run, "--out", target)
    assert code == 2
    one_error_line(err, "checkpoint.json", "resumable", "--overwrite")
    assert "optim" in load_checkpoint(target).tensors  # untouched
    code, out, err = cli(capsys, "export", run, "--out", target, "--overwrite")
    assert code == 0 and "optim" not in load_checkpoint(target).tensors
    code, out, err = cli(capsys, "export", run, "--out", target)  # a weights-only export may be replaced freely
    assert code == 0


# ---- 5. numbers valid one by one but not together -------------------------------------------------------------------
@pytest.mark.parametrize("flags, needle", [
    (["--beta-start", "0.9", "--beta-end", "0.99"], "works: T ≤ 22 with these β"),
    (["--T", "100000"], "works: T ≤ 6,827"),
    (["--T", "30000000"], "T must be at most 100,000"),
])
def test_a_schedule_that_destroys_the_signal_is_a_usage_error(tmp_path, capsys, flags, needle):
    code, out, err = cli(capsys, *[a for a in TRAIN if a not in ("--T", "50")], "--steps", "2",
                         "--out", tmp_path / "r", *flags)
    assert code == 2
    one_error_line(err, "invalid schedule", needle)
    assert not (tmp_path / "r").exists()


def test_sampling_refuses_to_report_success_for_flat_or_nan_images(run, tmp_path, capsys):
    ckpt = load_checkpoint(run)
    huge = {k: torch.full_like(v, 3e38) if v.is_floating_point() else v for k, v in ckpt.tensors["ema"].items()}
    meta = {k: ckpt.meta[k] for k in ("step", "model", "schedule")}
    save_checkpoint(tmp_path / "bad" / "checkpoint.json", {"ema": huge}, meta)
    code, out, err = cli(capsys, "sample", "--model", tmp_path / "bad", "--n", "2", "--steps", "3",
                         "--out", tmp_path / "samples")
    assert code == 1
    one_error_line(err, "checkpoint.json", "damaged or diverged")
    assert not list((tmp_path / "samples").glob("*.png"))


# ---- 6. damaged state files -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["bad byte", "1e999", "wrong type in run.json", "FIFO metrics"])
def test_a_damaged_log_is_set_aside_and_the_run_resumes(run, tmp_path, capsys, damage):
    r = copy_run(run, tmp_path / "r")
    metrics = r / "metrics.jsonl"
    good = metrics.read_text().splitlines()
    if damage == "bad byte":
        cut = len(good[0]) + 6  # inside the second line: the first stays good
        metrics.write_bytes(metrics.read_bytes()[:cut] + b"\xff" + metrics.read_bytes()[cut:])
    elif damage == "1e999":
        metrics.write_text("\n".join([*good[:1], '{"step": 1e999, "loss": 1}', *good[1:]]) + "\n")
    elif damage == "wrong type in run.json":
        (r / "run.json").write_text(json.dumps({"command": "x", "history": 5}))
    else:
        metrics.unlink()
        os.mkfifo(metrics)
    code, out, err = cli(capsys, "train", "--out", r, "--resume", "--steps", "3", "-q")
    assert code == 0, err
    aside = sorted(p.name for p in r.iterdir() if ".damaged-" in p.name)
    assert len(aside) == 1
    named = "run.json" if "run.json" in damage else "metrics.jsonl"
    assert aside[0].startswith(named)
    assert any(line.startswith(f"diffusion-studio: {r / named}: damaged") and aside[0] in line for line in err), err
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps[-1] == 3 and load_checkpoint(r).step == 3
    if damage != "FIFO metrics":
        assert steps[0] == 1  # the good lines are kept


def test_a_fifo_where_a_fresh_run_logs_is_set_aside(tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    os.mkfifo(out / "metrics.jsonl")
    code, _, err = cli(capsys, *TRAIN, "--steps", "1", "--out", out)
    assert code == 0, err
    assert any("metrics.jsonl: damaged (not a regular file (FIFO))" in line for line in err), err
    assert json.loads((out / "metrics.jsonl").read_text())["step"] == 1


# ---- 1 and 7: a running `train` owns its folder; SIGHUP saves --------------------------------------------------------
@POSIX
@pytest.mark.timeout(180)
def test_a_running_train_owns_its_folder_and_sighup_saves(tmp_path, capsys):
    """While a CLI `train` runs, a second `train` and a save from this process (as the GUI's Save would) are refused,
    naming the running process; SIGHUP (the terminal closed) then saves like SIGTERM, and the lock goes with it."""
    out = tmp_path / "r"
    # (SIGHUP restored in the child: under nohup it inherits SIG_IGN, which `train` rightly leaves ignored)
    proc = subprocess.Popen([sys.executable, "-m", "diffusion_studio", *TRAIN, "--steps", "100000",
                             "--checkpoint-every", "0", "--out", str(out)], env=_env(), stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    try:
        for line in proc.stderr:
            if line.startswith("step "):
                break
        code, _, err = cli(capsys, *TRAIN, "--steps", "5", "--out", out, "--overwrite")
        assert code == 1
        one_error_line(err, str(out), f"in use by process {proc.pid} (train: ")
        with pytest.raises(runlock.RunLocked, match=f"process {proc.pid}"):
            save_checkpoint(out / "checkpoint.json", {"ema": _tiny_state(0)}, _meta(1))
        assert not (out / "checkpoint.json").exists()  # the refused --overwrite cleared nothing
        proc.send_signal(signal.SIGHUP)
        rest = proc.stderr.read()
        assert proc.wait(timeout=120) == 128 + signal.SIGHUP, rest
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "checkpoint saved" in rest and load_checkpoint(out).step >= 1
    with runlock.run_lock(out, "train"):  # released with the process
        pass


# ---- 8. every manifest field by name; usage errors exit 2 -----------------------------------------------------------
BAD_FIELDS = [
    ("train", "batch_size", "64", "train.batch_size"),
    ("train", "lr", "fast", "train.lr"),
    ("train", "log_every", 0, "train.log_every"),
    ("train", "steps", 1e999, "train.steps"),
    ("model", "num_res_blocks", 0.5, "model.num_res_blocks"),
    ("model", "channel_mults", [[1]], "model.channel_mults[0]"),
    ("schedule", "T", "1000", "schedule.T"),
    (None, "step", -1, "step"),
    (None, "format_version", "1", "format_version"),
    (None, "elapsed_s", 1e999, "elapsed_s"),
    (None, "buckets", "x", "buckets"),
    (None, "data", {"spec": "x", "n": "ten"}, "data.n"),
    (None, "optimizer", {"param_groups": [{"lr": "x"}]}, "optimizer.param_groups[0].lr"),
    (None, "notes", [[[[[[[[[[[[1]]]]]]]]]]]], "nested more than"),
]


def _edit(manifest: Path, section, key, value) -> None:
    meta = json.loads(manifest.read_text())
    (meta if section is None else meta[section])[key] = value
    manifest.write_text(json.dumps(meta).replace("Infinity", "1e999"))


@pytest.mark.parametrize("section, key, value, field", BAD_FIELDS, ids=[f[3] for f in BAD_FIELDS])
def test_a_bad_manifest_field_is_named_and_info_prints_nothing(run, tmp_path, capsys, section, key, value, field):
    r = copy_run(run, tmp_path / "r")
    _edit(r / "checkpoint.json", section, key, value)
    code, out, err = cli(capsys, "info", r)
    assert code == 1 and out == ""
    one_error_line(err, "checkpoint.json: ", field)


def test_a_bad_batch_size_in_the_manifest_is_not_blamed_on_a_flag(run, tmp_path, capsys):
    r = copy_run(run, tmp_path / "r")
    _edit(r / "checkpoint.json", "train", "batch_size", 0)
    code, out, err = cli(capsys, "train", "--out", r, "--resume", "--steps", "3", "-q")
    assert code == 1
    line = one_error_line(err, "checkpoint.json: train.batch_size")
    assert "--batch" not in line


@pytest.mark.parametrize("args, needle", [
    (["train", "--data", "builtin:digits", "--out", "{tmp}/r", "--threads", "65536"], "argument --threads"),
    (["sample", "--model", "builtin:digits", "--out", "{tmp}/s", "--threads", "0"], "argument --threads"),
    (["fid", "builtin:digits", "{tmp}", "--size", "0"], "argument --size"),
    (["fid", "builtin:digits", "{tmp}", "--batch", "-3"], "argument --batch"),
    (["fid", "builtin:digits", "{tmp}", "--n-max", "1"], "argument --n-max"),
    (["fid", "builtin:digits", "{tmp}", "--threshold", "2"], "argument --threshold"),
    (["fid", "builtin:digits"], "FAKE"),
    (["train", "--data", "{tmp}/data", "--out", "{tmp}/data/run"], "inside the data folder"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, capsys, args, needle):
    (tmp_path / "data").mkdir()
    from PIL import Image
    Image.new("RGB", (8, 8)).save(tmp_path / "data" / "a.png")
    code, out, err = cli(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert code == 2
    one_error_line(err, needle)
    assert not (tmp_path / "data" / "run").exists()


def test_resume_refuses_a_run_folder_inside_its_data(tmp_path, capsys):
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        Image.new("RGB", (8, 8), (i * 60, 0, 0)).save(data / f"{i}.png")
    elsewhere = tmp_path / "r"
    assert main([*[a for a in TRAIN if a != "builtin:digits" and a != "--data"], "--data", str(data), "--steps", "1",
                 "--out", str(elsewhere)]) == 0
    capsys.readouterr()
    inside = data / "run"
    elsewhere.rename(inside)
    code, out, err = cli(capsys, "train", "--out", inside, "--resume", "--steps", "2")
    assert code == 2
    one_error_line(err, "inside the data folder")


def test_checkpoint_error_for_a_run_lock_is_one_line(tmp_path):
    err = runlock.RunLocked(tmp_path, "cannot save: in use")
    assert isinstance(err, CheckpointError) and "\n" not in str(err)
