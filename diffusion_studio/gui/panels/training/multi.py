"""Training on all of a machine's GPUs from the Training tab: the same `train --nproc N` launch the CLI runs, with
rank 0's metrics.jsonl read back as the panel's TrainEvents. Offered only when torch sees more than one GPU."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from PySide6.QtWidgets import QCheckBox

from ....core.io.checkpoint import load_checkpoint
from ....core.train.trainer import TrainEvent

POLL_S = 0.2


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def offer_text(count: int) -> str | None:
    """The Training tab's offer, or None on a machine with fewer than two GPUs (nothing changes there)."""
    return f"Use all {count} GPUs" if count > 1 else None


def multi_gpu_checkbox(parent=None) -> QCheckBox | None:
    text = offer_text(gpu_count())
    if text is None:
        return None
    box = QCheckBox(text, parent)
    box.setObjectName("multiGpuCheck")
    box.setToolTip("Data-parallel training with one process per GPU (torch.distributed, NCCL): the batch is the "
                   "global batch, split over the GPUs. Runs the same launch as 'diffusion-studio train --nproc N'")
    return box


def chosen_nproc(box: QCheckBox | None) -> int:
    """How many processes the form asks for: every GPU when the offer is ticked, else 1."""
    if box is None or not box.isChecked():
        return 1
    return max(1, gpu_count())


def train_command(req, nproc: int, python: str = sys.executable) -> list[str]:
    """The `train` command line for a RunRequest (the form's settings), run as ``nproc`` processes."""
    c = req.config
    out = Path(req.out).parent
    cmd = [python, "-m", "diffusion_studio", "train", "--out", str(out), "--nproc", str(nproc), "--quiet",
           "--batch", str(c.batch_size), "--lr", repr(c.lr), "--ema-decay", repr(c.ema_decay),
           "--device", c.device, "--precision", c.precision, "--log-every", "1",
           "--checkpoint-every", str(c.checkpoint_every), "--preview-every", "0"]
    cmd += ["--steps", str(c.steps)] if c.steps is not None else ["--minutes", repr(c.minutes)]
    if req.resume is not None:
        return cmd + ["--resume"]
    cmd += ["--warmup", str(c.warmup_steps), "--lr-schedule", c.lr_schedule]
    for attr, flag in (("loss_weighting", "--loss-weighting"), ("snr_gamma", "--snr-gamma")):
        if getattr(c, attr, None) is not None:
            cmd += [flag, str(getattr(c, attr))]
    if getattr(req, "prediction", None):
        cmd += ["--prediction", req.prediction]
    s = req.schedule
    if s.kind not in ("linear", "quadratic", "sigmoid", "cosine"):
        raise ValueError(f"Schedule: a {s.kind} schedule cannot be passed to the multi-GPU launch; pick a named one")
    cmd += ["--data", req.dataset_spec, "--size", str(req.image_size), "--model", req.preset, "--schedule", s.kind,
            "--T", str(s.T)]
    for key, flag in (("beta_start", "--beta-start"), ("beta_end", "--beta-end")):
        if key in s.params and s.kind != "cosine":
            cmd += [flag, repr(s.params[key])]
    return cmd


def multi_gpu_run(req, handle, nproc: int, command: list[str] | None = None) -> Iterator[Any]:
    """Run the launch, yield a TrainEvent per step from rank 0's metrics.jsonl; Stop sends it SIGINT (it saves).
    Afterwards ``handle`` says where the checkpoint is, and holds its model for sampling (as training_run does)."""
    out = Path(req.out).parent
    out.mkdir(parents=True, exist_ok=True)
    metrics = out / "metrics.jsonl"
    start_step = req.resume.step if req.resume is not None else 0
    handle.start_step = start_step
    last_step, pos, buf = start_step, 0, b""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command or train_command(req, nproc), stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)  # its own process group: SIGINT reaches every rank
        interrupted = False
        try:
            while True:
                running = proc.poll() is None
                if handle.cancel.is_set() and not interrupted and running:
                    os.killpg(proc.pid, signal.SIGINT)
                    interrupted = True
                try:
                    with open(metrics, "rb") as f:
                        if os.fstat(f.fileno()).st_size < pos:
                            pos, buf = 0, b""  # rewritten (a resumed run drops lines past its checkpoint)
                        f.seek(pos)
                        chunk = f.read()
                        pos += len(chunk)
                except FileNotFoundError:
                    chunk = b""
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    ev = _event(line, req.config.steps)
                    if ev is not None and ev.step > last_step:
                        last_step = ev.step
                        yield ev
                if not running:
                    break
                time.sleep(POLL_S)
        finally:
            if proc.poll() is None:  # the window closed mid-run: stop it the same way, and wait for its save
                os.killpg(proc.pid, signal.SIGINT)
                proc.wait()
            err.seek(0)
            tail = [ln for ln in err.read().decode("utf-8", "replace").splitlines() if ln.strip()]
            _collect(req, handle)
    if proc.returncode not in (0, 128 + signal.SIGINT):
        raise RuntimeError(tail[-1] if tail else f"the multi-GPU launch ended with exit code {proc.returncode}")


def _event(line: bytes, total: int | None) -> TrainEvent | None:
    try:
        d = json.loads(line)
        step = int(d["step"])
        return TrainEvent(step=step, total_steps=total, loss=float(d["loss"]), lr=float(d["lr"]),
                          images_per_s=float(d["images_per_s"]), eta_s=d.get("eta_s"),
                          elapsed_s=float(d["elapsed_s"]), grad_norm=float(d["grad_norm"]),
                          done=total is not None and step >= total)
    except (ValueError, KeyError, TypeError):
        return None  # half a line, or not ours


def _collect(req, handle) -> None:
    path = Path(req.out)
    if not path.exists():
        handle.save_note = "nothing was saved"
        return
    try:
        ckpt = load_checkpoint(path, groups=("ema",))
    except Exception as e:  # noqa: BLE001 - reported, never raised out of a finally
        handle.save_note = f"the saved checkpoint could not be read: {str(e).splitlines()[0]}"
        return
    handle.saved_path, handle.saved_step = path, ckpt.step
    if not handle.closing:
        handle.checkpoint, handle.model = ckpt, ckpt.build_model(req.model_device)
