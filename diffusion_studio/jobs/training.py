"""The Training panel's run as a Qt-free generator: load the data, build or resume a Trainer, yield its events, and
keep a good checkpoint however the run ends (finished, stopped, window closed, diverged, out of memory)."""
from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..core.io.checkpoint import Checkpoint, load_checkpoint
from ..core.errors import CheckpointError
from ..core.runtime.device import resolve_device
from ..core.runtime.calibrate import resolve_precision
from ..core.diffusion.schedule import NoiseSchedule
from ..core.train.trainer import Trainer
from ..core.train.config import TrainConfig
from ..core.train.recipe import conditions_on_labels, natural_size
from ..core.nets.unet import UNet, count_parameters, preset_config
from ..core.train.runlog import MetricsLog
from ..core.runtime.memory import check_training_fits
from ..data.specs import natural_channels
from .session import RunNote, first_preview, fit_batch

RUNS_ENV = "DIFFUSION_STUDIO_RUNS"
MANIFEST = "checkpoint.json"

# The names the form shows for the fields core's messages name, so an error points at a widget the user can see.
FIELD_LABELS = {
    "image_size": "Image size", "steps": "Steps", "batch_size": "Batch size", "lr": "Learning rate",
    "ema_decay": "EMA decay", "device": "Device", "precision": "Precision", "data": "Dataset",
    "dataset": "Dataset", "in_channels": "Channels", "preview_every": "Preview every", "fid_every": "FID every",
}


# ---- what the GUI asks for and what comes back ------------------------------------------------------------------
@dataclass
class RunRequest:
    """Everything a run needs, built on the GUI thread and handed (never touched again there) to the worker."""

    dataset_spec: str
    image_size: int
    preset: str
    schedule: NoiseSchedule
    config: TrainConfig
    out: Path                                  # the manifest the run saves to (…/checkpoint.json)
    resume: Checkpoint | None = None           # continue this run instead of starting a fresh one
    model_device: str | torch.device = "cpu"   # where the finished model for the Sampling panel goes
    fid_every: int = 0                         # 0: no FID
    fid_extractor: str | None = None           # e.g. "builtin:digits"
    fid_samples: int = 256
    auto_batch: bool = False                   # the batch was not chosen by the user: cut it to a small dataset
    prediction: str = "eps"                    # what the model predicts (core/diffusion/objective.py)
    autoencoder: str | None = None             # train in this autoencoder's latent space (None: pixels)


@dataclass
class RunOutcome:
    """How a run ended (the panel's ``run_finished`` signal carries one)."""

    reason: str                 # "finished", "stopped" or "error"
    step: int | None            # the last step reached
    checkpoint: Path | None     # the checkpoint on disk for this run (None when nothing was saved)
    message: str = ""


@dataclass
class RunStarted:
    """Yielded once the data is loaded and the trainer exists."""

    dataset: str
    n_images: int
    channels: int
    image_size: int
    start_step: int
    total_steps: int | None
    parameters: int
    device: str
    precision: str
    out: Path
    resumed: bool
    space: str = "pixels"                      # or "latent 4×8×8 (builtin:shapes-ae)"
    text: bool = False                         # conditioned on captions
    preview_captions: list[str] = field(default_factory=list)  # a text run's preview grid, image by image
    prediction: str = "eps"                    # the run's objective: what the network predicts …
    loss_weighting: str = "uniform"            # … and how each t's loss counts
    snr_gamma: float = 5.0


@dataclass
class FIDPoint:
    """FID of fake samples from the EMA weights against the dataset, at one step."""

    step: int
    fid: float
    n: int
    note: str | None = None


@dataclass
class RunHandle:
    """Shared by the GUI thread and the worker thread. The GUI only sets ``cancel``/``closing``; everything else is
    written by the worker and read by the GUI after the worker's ``finished``.

    Access to the trainer goes through ``stepping()`` (the training thread, around each step) and ``saving()``
    (anyone who saves): a save waiting for the trainer goes before the next step, so it never starves.
    """

    cancel: threading.Event = field(default_factory=threading.Event)
    closing: bool = False                      # the window is closing: skip building the model for sampling
    trainer: Trainer | None = None
    start_step: int = 0
    saved_path: Path | None = None             # the last checkpoint this run wrote
    saved_step: int | None = None
    save_note: str | None = None               # why the final save was skipped or failed
    checkpoint: Checkpoint | None = None       # the saved checkpoint (EMA weights only) and its model, for sampling
    model: UNet | None = None
    created_dir: Path | None = None            # a fresh run folder, removed again if nothing was saved into it
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _busy: bool = False
    _savers: int = 0

    def stepping(self):
        return self._holding(saver=False)

    def saving(self):
        return self._holding(saver=True)

    @contextlib.contextmanager
    def _holding(self, saver: bool):
        """Hold the trainer: a step waits for any waiting saver too, a save only for the step in progress."""
        with self._cond:
            self._savers += saver
            try:
                self._cond.wait_for(lambda: not self._busy and (saver or self._savers == 0))
            finally:
                self._savers -= saver
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()


# ---- checks on the GUI thread (cheap: no data, no network) ------------------------------------------------------
def default_image_size(spec: str | None) -> int:
    return natural_size(spec)


def name_field(message: str) -> str:
    """'lr: must be …' → 'Learning rate (lr): must be …', so the message names the widget to fix."""
    key, sep, rest = message.partition(":")
    label = FIELD_LABELS.get(key.strip())
    return f"{label} ({key.strip()}):{rest}" if sep and label else message


def labels_to_condition_on(req: RunRequest, data, space) -> int | None:
    """The number of classes a new run conditions on — when the form asks for labels (its default) and the data has
    them (core/train/recipe.conditions_on_labels) — else None."""
    labels = getattr(data, "labels", None)
    if not req.config.class_conditional or labels is None:
        return None
    n = getattr(data, "num_classes", None)
    return n if conditions_on_labels(n, req.config.text, space.is_latent) else None


def check_request(req: RunRequest) -> None:
    """Raise ValueError (one line naming the field) for anything wrong that can be seen before loading the data."""
    try:
        if not req.dataset_spec or not str(req.dataset_spec).strip():
            raise ValueError("dataset: choose a dataset (a built-in, a folder, or the Images panel's selection)")
        req.config.validate()
        device = resolve_device(req.config.device)
        resolve_precision(req.config.precision, device)
        if req.resume is None:
            config = preset_config(req.preset, int(req.image_size), natural_channels(req.dataset_spec))
            config.validate()
            if getattr(req, "autoencoder", None) is None:  # a latent run's network is smaller: checked as it starts
                check_training_fits(config, req.config.batch_size, device)
        if req.config.preview_every < 0:
            raise ValueError(f"preview_every: must be 0 (off) or positive, got {req.config.preview_every}")
        if req.fid_every < 0:
            raise ValueError(f"fid_every: must be 0 (off) or positive, got {req.fid_every}")
        if req.resume is not None and req.config.steps is not None and req.config.steps <= req.resume.step:
            raise ValueError(f"steps: the checkpoint is already at step {req.resume.step}; "
                             f"set more steps than that to continue")
    except ValueError as e:
        raise ValueError(name_field(str(e).splitlines()[0])) from None


# ---- run folders --------------------------------------------------------------------------------------------------
def runs_dir(setting: str | None = None) -> Path:
    """Where new runs go: $DIFFUSION_STUDIO_RUNS, else the setting training/runs_dir, else ~/DiffusionStudio/runs."""
    env = os.environ.get(RUNS_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    if setting and str(setting).strip():
        return Path(str(setting)).expanduser()
    return Path.home() / "DiffusionStudio" / "runs"


# ---- the generator ------------------------------------------------------------------------------------------------
def weights_finite(trainer: Trainer) -> bool:
    return all(bool(torch.isfinite(p).all()) for m in (trainer.model, trainer.ema) for p in m.parameters())


def leave_a_core_to_the_gui() -> Callable[[], None]:
    """Called in the training thread: one torch thread fewer than the cores, and the GIL back to the GUI within 1 ms.
    Returns what puts both back when the run ends (sampling, started later, gets the cores back).

    On a 2-core CPU a 2-thread OpenMP team that has to share the cores with the GUI thread trained no faster than one
    thread (its threads wait for each other whenever the GUI takes a core) and held the window up: slider → pixels
    p99 and timer lateness both fell with one thread and a 1 ms switch interval (bench/bench_gui.py, bench_scrub.py).
    A thread count already set lower (tests, the user) is kept.
    """
    switch = sys.getswitchinterval()
    sys.setswitchinterval(min(switch, 0.001))
    cores, before = os.cpu_count() or 1, torch.get_num_threads()
    lowered = cores > 1 and before >= cores
    if lowered:
        torch.set_num_threads(cores - 1)

    def restore() -> None:
        sys.setswitchinterval(switch)
        if lowered:
            torch.set_num_threads(before)

    return restore


def caption_notes(req: RunRequest, data) -> list[str]:
    """Caption a text run's data (a continued run: whatever the run was made with, whatever the form shows now);
    one note per caption problem, at most a few."""
    text = req.resume.meta.get("train", {}).get("text") if req.resume is not None else req.config.text
    if not text:
        return []
    from .runs import caption

    problems = caption(data)
    if len(problems) > 5:
        problems = problems[:5] + [f"… and {len(problems) - 5} more caption problems"]
    return [f"caption problem: {p}" for p in problems]


def training_run(req: RunRequest, handle: RunHandle) -> Iterator[Any]:
    """Yield RunStarted, then one TrainEvent per step (and FIDPoints when asked). Runs in the worker thread.

    However it ends, the ``finally`` saves the trainer to ``req.out`` unless no step was taken or the weights are not
    finite (a good checkpoint already on disk is then kept), and, unless the window is closing, loads that checkpoint
    back as the model for sampling.
    """
    from ..core.io import runlock
    from ..data import load_dataset
    from . import runs

    trainer = None
    metrics = None
    locked = None
    give_back = leave_a_core_to_the_gui()
    try:
        if Path(req.out).parent.is_dir():  # one writer per run folder: a CLI `train` there is refused, and vice versa
            runlock.acquire(Path(req.out).parent, "train")
            locked = Path(req.out).parent
        channels = req.resume.model_config.in_channels if req.resume is not None else None
        size = req.resume.model_config.image_size if req.resume is not None else req.image_size
        space = runs.run_space(req.autoencoder, req.resume)  # pixels, or an autoencoder's latents
        size, channels = runs.image_shape(space, size, channels)
        data = load_dataset(req.dataset_spec, size, channels, cancel=handle.cancel.is_set)
        for note in caption_notes(req, data):  # a text run: its captions
            yield RunNote(note)
        image_data, data = data, runs.encode(space, data, req.config.flip)  # a latent run: encoded once
        note = fit_batch(req.config, len(data), explicit=not req.auto_batch or req.resume is not None)
        if note:
            yield RunNote(note)
        if req.resume is not None:
            c = req.config
            trainer = runs.resume_trainer(space, req.resume, data, out=req.out, steps=c.steps, minutes=c.minutes,
                                          batch_size=c.batch_size, lr=c.lr, loss_weighting=c.loss_weighting,
                                          ema_decay=c.ema_decay, device=c.device, precision=c.precision,
                                          preview_every=c.preview_every, checkpoint_every=c.checkpoint_every)
        else:
            num_classes = labels_to_condition_on(req, image_data, space)  # the form's box says what it will do
            req.config.class_conditional = num_classes is not None
            model_config = preset_config(req.preset, *runs.unet_shape(space, size, image_data.channels), num_classes)
            model_config.prediction = req.prediction
            if req.config.text:
                model_config = runs.text_model_config(model_config)
            trainer = runs.make_trainer(space, model_config, req.schedule, data, req.config, out=req.out)
        handle.trainer = trainer
        handle.start_step = trainer.step
        yield RunStarted(dataset=getattr(data, "name", "") or req.dataset_spec, n_images=len(data),
                         channels=data.channels, image_size=size, start_step=trainer.step,
                         total_steps=trainer.config.steps, parameters=count_parameters(trainer.model),
                         device=str(trainer.device), precision=trainer.precision, out=req.out,
                         resumed=req.resume is not None, space=runs.describe_space(space),
                         text=bool(trainer.config.text), preview_captions=runs.preview_captions(trainer),
                         prediction=trainer.model.config.prediction, loss_weighting=trainer.config.loss_weighting,
                         snr_gamma=float(trainer.config.snr_gamma))
        metrics = MetricsLog(Path(req.out).parent, trainer.step, every=1)
        yield from first_preview(trainer, handle)
        extractor = _fid_extractor(req, trainer) if req.fid_every and not space.is_latent else None
        events = trainer.run()
        while True:
            with handle.stepping():
                ev = next(events, None)
            if ev is None:
                return
            metrics.add(ev)
            if ev.checkpoint is not None:
                handle.saved_path, handle.saved_step = Path(ev.checkpoint), ev.step
            yield ev
            if extractor is not None and (ev.step % req.fid_every == 0 or ev.done):
                yield from _fid_point(req, handle, trainer, data, extractor, ev.step)
    finally:
        if metrics is not None:
            metrics.close()
        if trainer is not None:
            _final_save(req, handle, trainer)
            if not handle.closing and handle.saved_path is not None:
                _load_for_sampling(req, handle)
        if locked is not None:
            runlock.release(locked)
        if handle.saved_path is None and handle.created_dir is not None:
            with contextlib.suppress(OSError):
                (handle.created_dir / runlock.LOCK_NAME).unlink(missing_ok=True)
                handle.created_dir.rmdir()  # only succeeds when empty
        give_back()


def _final_save(req: RunRequest, handle: RunHandle, trainer: Trainer) -> None:
    with handle.saving():
        if trainer.step == handle.start_step:
            handle.save_note = "no step finished, so nothing was saved"
            return
        if not weights_finite(trainer):
            handle.save_note = ("the weights hold NaN/Inf, so they were not saved; " +
                                (f"the last good checkpoint (step {handle.saved_step}) is kept"
                                 if handle.saved_path is not None else "nothing was saved"))
            return
        try:
            handle.saved_path = trainer.save(req.out)
            handle.saved_step = trainer.step
        except Exception as e:  # noqa: BLE001 - reported to the user, never raised out of a finally
            handle.save_note = f"the checkpoint could not be saved: {str(e).splitlines()[0] if str(e) else e!r}"


def _load_for_sampling(req: RunRequest, handle: RunHandle) -> None:
    try:
        ckpt = load_checkpoint(handle.saved_path, groups=("ema", "autoencoder"))  # a latent model's decoder too
        handle.model = ckpt.build_model(req.model_device)
        handle.checkpoint = ckpt
    except Exception as e:  # noqa: BLE001
        handle.save_note = f"the saved checkpoint could not be loaded for sampling: {str(e).splitlines()[0]}"


def save_job(handle: RunHandle, path: str | Path) -> Iterator[Path]:
    """A one-item generator for a GeneratorWorker: save the run's trainer to ``path`` between two steps."""
    if handle.trainer is None:
        raise ValueError("save: the run has not started training yet")
    with handle.saving():
        if not weights_finite(handle.trainer):
            raise ValueError("save: the weights hold NaN/Inf values; not saving them")
        saved = handle.trainer.save(path)
    yield saved


def load_job(path: str | Path) -> Iterator[Checkpoint]:
    """A one-item generator for a GeneratorWorker: a training checkpoint to continue (read and verified off the GUI
    thread: a big one with optimizer state is hundreds of MB to hash)."""
    from .session import checkpoint_file_problem

    problem = checkpoint_file_problem(path)  # the file chosen is named, not a NAME.json the loader would look for
    if problem:
        raise ValueError(problem)
    ckpt = load_checkpoint(path)
    if "optim" not in ckpt.tensors or "rng" not in ckpt.tensors:
        raise CheckpointError(ckpt.path, "holds no training state (an exported model): it can be sampled from in "
                                         "the Sampling panel but not continued")
    yield ckpt


# ---- FID (optional; needs core.fid and a feature network for the dataset) -----------------------------------------
def fid_extractor_for(spec: str | None) -> str | None:
    """The feature network FID can use for a dataset spec (the shipped digits or MNIST net, when present), or None."""
    s = str(spec or "").strip().lower()
    if s not in ("builtin:digits", "builtin:mnist"):
        return None
    from ..core.metrics import features

    name = s.split(":", 1)[1]
    if name not in features.BUILTIN_FEATURES:
        return None
    return s if (features.builtin_feature_path(name) / features.WEIGHTS_NAME).is_file() else None


def _fid_extractor(req: RunRequest, trainer: Trainer):
    if not req.fid_extractor:
        return None
    from ..core.metrics.features import load_feature_extractor

    return load_feature_extractor(req.fid_extractor, trainer.device)


def _fid_point(req: RunRequest, handle: RunHandle, trainer: Trainer, data, extractor, step: int) -> Iterator[Any]:
    """Sample in chunks (yielding None between them, so a stop is seen within one chunk), then one FIDPoint."""
    from ..core.metrics.fid import fid_against

    chunks = []
    per_chunk = max(1, min(16, req.fid_samples))  # a stop or close is seen within one chunk
    for start in range(0, req.fid_samples, per_chunk):
        n = min(per_chunk, req.fid_samples - start)
        with handle.stepping():
            chunks.append(trainer.preview(n=n, seed=trainer.config.preview_seed + 1 + start))
        yield None
    fake = torch.cat(chunks)
    score = fid_against(data, fake, extractor, device=trainer.device, n_max=2000)
    warns = getattr(score, "warnings", ())
    yield FIDPoint(step=step, fid=float(score), n=len(fake), note=warns[0] if warns else None)


# ---- display helpers (pure numbers; the plots only draw them) -------------------------------------------------------
class LossHistory:
    """Raw losses per step and their debiased exponential moving average (TensorBoard's smoothing)."""

    def __init__(self, weight: float = 0.9):
        if not 0 <= weight < 1:
            raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
        self.weight = weight
        self._steps = np.zeros(1024, dtype=np.int64)
        self._raw = np.zeros(1024, dtype=np.float64)
        self._smooth = np.zeros(1024, dtype=np.float64)
        self._n = 0
        self._acc = 0.0
        self._k = 0  # finite values accumulated

    def __len__(self) -> int:
        return self._n

    def append(self, step: int, loss: float) -> None:
        if self._n == len(self._raw):
            for name in ("_steps", "_raw", "_smooth"):
                old = getattr(self, name)
                setattr(self, name, np.concatenate([old, np.zeros_like(old)]))
        if math.isfinite(loss):
            self._acc = self.weight * self._acc + (1 - self.weight) * loss
            self._k += 1
        smooth = self._acc / (1 - self.weight ** self._k) if self._k else float("nan")
        self._steps[self._n], self._raw[self._n], self._smooth[self._n] = step, loss, smooth
        self._n += 1

    @property
    def steps(self) -> np.ndarray:
        return self._steps[: self._n]

    @property
    def raw(self) -> np.ndarray:
        return self._raw[: self._n]

    @property
    def smooth(self) -> np.ndarray:
        return self._smooth[: self._n]


def bucket_edges(T: int, buckets: int) -> list[int]:
    """Paper-t edges E_0..E_nb of the trainer's loss buckets: bucket b holds E_b < t ≤ E_(b+1).

    The trainer puts schedule index i (paper t = i + 1) in bucket floor(i·nb / T), so bucket b starts at index
    ceil(b·T / nb), i.e. just after paper t = ceil(b·T / nb).
    """
    return [-(-b * T // buckets) for b in range(buckets + 1)]


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    s = int(round(max(0.0, seconds)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def progress_text(step: int, total: int | None, images_per_s: float | None, eta_s: float | None) -> str:
    rate = f"{images_per_s:,.0f} img/s" if images_per_s else "— img/s"
    of = f" / {total:,}" if total else ""
    return f"step {step:,}{of} · {rate} · ETA {format_duration(eta_s)}"
