"""Algorithm 1 as a generator: each ``next`` takes one optimisation step and yields a TrainEvent."""
from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

import torch
import torch.nn.functional as F

from ..diffusion import objective
from ..diffusion.eps import model_fn
from ..diffusion.samplers import ddim_sample
from ..diffusion.schedule import NoiseSchedule
from ..errors import TrainingDiverged, TrainingOutOfMemory
from ..io.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from ..nets.text import caption_table
from ..nets.networks import ModelConfig, build_network
from ..runtime import calibrate
from ..runtime.calibrate import resolve_precision
from ..runtime.device import autocast, resolve_device
from . import distributed
from .config import TrainConfig


class ImageSource(Protocol):
    """What the trainer needs from a dataset (``diffusion_studio.data.ImageDataset`` is one)."""

    def __len__(self) -> int: ...

    def batch(self, indices: torch.Tensor, device=None, generator=None, flip: bool = False) -> torch.Tensor: ...


class TensorImages:
    """A float tensor (N, C, H, W) in [−1, 1] as an ImageSource (tests, synthetic data)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None, spec: str = "tensor"):
        self.images, self.labels, self.spec = images.float(), labels, spec

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices, device=None, generator=None, flip=False):
        x = self.images[indices]
        if flip:
            mask = torch.rand(len(indices), generator=generator) < 0.5
            x = torch.where(mask[:, None, None, None], x.flip(-1), x)
        return x.to(device) if device is not None else x

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "n": len(self), "size": self.images.shape[-1], "channels": self.images.shape[1]}


@dataclass
class TrainEvent:
    """What one optimisation step reports."""

    step: int                              # steps finished so far (1 after the first)
    total_steps: int | None
    loss: float
    lr: float
    images_per_s: float
    eta_s: float | None
    elapsed_s: float
    grad_norm: float
    bucket_loss: list[float | None] = field(default_factory=list)  # smoothed loss per t bucket (None: not seen yet)
    preview: torch.Tensor | None = None    # (N, C, H, W) in [−1, 1] from the EMA model, fixed seed
    checkpoint: Path | None = None         # set when this step wrote a checkpoint
    done: bool = False

    @property
    def progress(self) -> float | None:
        return None if not self.total_steps else self.step / self.total_steps


class Trainer:
    """Trains ε_θ on a dataset: Algorithm 1 with AdamW, warm-up, gradient clipping and an EMA of the weights."""

    def __init__(self, model_config: ModelConfig, schedule: NoiseSchedule, data: ImageSource, config: TrainConfig,
                 out: str | Path | None = None, data_info: dict[str, Any] | None = None):
        config.validate()
        model_config.validate()
        self.config, self.schedule, self.data = config, schedule, data
        self.out = None if out is None else Path(out)
        self.data_info = data_info if data_info is not None else _data_info(data)
        n = len(data)
        if n < 1:
            raise ValueError("data: the dataset is empty")
        if config.batch_size > n:
            raise ValueError(f"batch_size: {config.batch_size} is larger than the dataset ({n} images)")
        self.dist = distributed.current()  # rank 0 of 1 unless torchrun started this process
        self.device = self.dist.local_device(resolve_device(config.device))
        # On a CPU the layout and, for 'auto', the precision are what this CPU is measured to run fastest
        # (core/runtime/calibrate.py, cached per machine); on a GPU NCHW, and the layout is the user's choice.
        fast = None
        if self.device.type == "cpu" and (config.precision == "auto" or config.channels_last is None):
            resolve_precision(config.precision, self.device)  # validates the name
            # Several processes: rank 0 measures and every rank takes its choice (DDP needs one layout everywhere).
            fast = self.dist.broadcast(calibrate.choose(model_config, config.batch_size, config.precision, "train",
                                                        self.device) if self.dist.is_main else None)
        self.fast_path = fast
        self.precision = fast.precision if fast is not None else resolve_precision(config.precision, self.device)
        # The initial weights follow the run's seed (same seed, same run: a run stopped and resumed can then match
        # one trained straight through), drawn from a forked global RNG so the caller's random state is untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = build_network(model_config)
        self.model = model.to(self.device)
        self.channels_last = (config.channels_last if config.channels_last is not None
                              else fast is not None and fast.channels_last)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        # The compiled module shares the model's parameters; EMA, checkpoints and previews use the plain module.
        self._forward = self.dist.wrap(self.model, compile=config.compile)  # DDP when several ranks
        # Fused AdamW: one pass over each parameter instead of a dozen (about 5x less optimizer time on a 2-core CPU).
        fused = self.device.type in ("cuda", "cpu")
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                           fused=fused or None)
        self.step = 0
        self.elapsed_before = 0.0  # training seconds spent before this session (resumes)
        self._active_s = 0.0
        self._time_total: float | None = None  # a time-budget run's total training seconds (set by run())
        self._snr = schedule.snr.to(self.device, torch.float32)
        self.gen = torch.Generator().manual_seed(self.dist.seed(config.seed))  # data order and t, per rank
        self.noise_gen = torch.Generator(device=self.device).manual_seed(self.dist.seed(config.seed + 1))
        # Dropout draws from torch's global generator, which cannot be handed a Generator: the run keeps its own state
        # of it and swaps it in around each forward pass, so the caller's random state is never touched and a resumed
        # run draws the dropout masks a straight-through run would have.
        self.torch_rng = torch.Generator().manual_seed(self.dist.seed(config.seed + 2)).get_state()
        self.cuda_rng: torch.Tensor | None = None
        self._buckets: list[float | None] = [None] * config.buckets
        self.last_loss = float("nan")
        self._labels = getattr(data, "labels", None) if config.class_conditional else None
        if config.class_conditional and (self._labels is None or model_config.num_classes is None):
            raise ValueError("class_conditional: needs a labelled dataset and a model built with num_classes")
        self._text = caption_table(data, model_config) if config.text else None
        if self._text is not None:  # example captions and their words: the sampler offers and checks prompts with them
            self.data_info = {**self.data_info, **self._text.info()}

    # ---- one step -----------------------------------------------------------------------------------------------
    def _lr_at(self, step: int) -> float:
        cfg = self.config
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
        if cfg.lr_schedule == "cosine":
            if cfg.steps:
                progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
            else:  # a time budget: decay over the training time the run has (all sessions of it)
                progress = self.elapsed_s / self._time_total if self._time_total else 0.0
            progress = min(1.0, max(0.0, progress))
            lr *= 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))
        return lr

    def _draw_batch(self, n: int):
        """This rank's n examples and noise for one step: (t, x0, condition y, ε), from its own generators."""
        cfg, dev = self.config, self.device
        idx = torch.randint(len(self.data), (n,), generator=self.gen)
        t = torch.randint(self.schedule.T, (n,), generator=self.gen)  # index i ↔ paper t = i + 1
        x0 = self.data.batch(idx, device=dev, generator=self.gen, flip=cfg.flip)
        y = None
        if self._labels is not None:
            y = self._labels[idx].clone()
            y[torch.rand(n, generator=self.gen) < cfg.p_uncond] = self.model.config.num_classes
            y = y.to(dev)
        elif self._text is not None:
            y = self._text.batch(idx, cfg.p_uncond, self.gen, dev)
        eps = torch.randn(x0.shape, generator=self.noise_gen, device=dev)
        return t, x0, y, eps

    def train_step(self) -> tuple[float, float]:
        """One step of Algorithm 1; returns (loss, grad norm). Raises TrainingDiverged before a bad update."""
        cfg, dev = self.config, self.device
        t, x0, y, eps = self._draw_batch(self.dist.local_batch(cfg.batch_size))  # --batch is global: split over ranks
        t_dev = t.to(dev)
        sqrt_ab = self.schedule.at("sqrt_alpha_bars", t_dev, x0)
        sqrt_1mab = self.schedule.at("sqrt_one_minus_alpha_bars", t_dev, x0)
        x_t = sqrt_ab * x0 + sqrt_1mab * eps
        prediction = self.model.config.prediction
        target = objective.target(prediction, x0, eps, sqrt_ab, sqrt_1mab)
        for g in self.optimizer.param_groups:
            g["lr"] = self._lr_at(self.step)
        if self.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        self.model.train()
        with self._own_rng(), autocast(dev, self.precision):
            eps_pred = self._forward(x_t, t_dev, y)
        per_sample = F.mse_loss(eps_pred.float(), target, reduction="none").flatten(1).mean(1)
        weights = objective.loss_weights(prediction, cfg.loss_weighting, self._snr[t_dev], cfg.snr_gamma)
        loss = (weights * per_sample).mean()
        if not torch.isfinite(loss):
            raise TrainingDiverged(self.step + 1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = cfg.grad_clip if cfg.grad_clip else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if not torch.isfinite(grad_norm):
            raise TrainingDiverged(self.step + 1, "gradient")
        self.optimizer.step()
        self._update_ema()
        self._update_buckets(t, per_sample.detach().cpu())
        self.step += 1
        self.last_loss = float(loss.detach())
        return self.last_loss, float(grad_norm)

    @contextlib.contextmanager
    def _own_rng(self):
        """torch's global generator (and the GPU's) set to this run's state, and the caller's put back after."""
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device] if cuda else []):
            torch.set_rng_state(self.torch_rng)
            if cuda:
                if self.cuda_rng is None:
                    torch.cuda.manual_seed(self.dist.seed(self.config.seed + 2))
                else:
                    torch.cuda.set_rng_state(self.cuda_rng, self.device)
            try:
                yield
            finally:
                self.torch_rng = torch.get_rng_state()
                if cuda:
                    self.cuda_rng = torch.cuda.get_rng_state(self.device)

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        ema_p = list(self.ema.parameters())
        torch._foreach_lerp_(ema_p, [p.detach() for p in self.model.parameters()], 1.0 - decay)

    def _update_buckets(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        nb = self.config.buckets
        b = (t * nb) // self.schedule.T
        for i in torch.unique(b).tolist():
            m = float(losses[b == i].mean())
            old = self._buckets[i]
            self._buckets[i] = m if old is None else 0.9 * old + 0.1 * m

    # ---- the generator ------------------------------------------------------------------------------------------
    def run(self) -> Iterator[TrainEvent]:
        """Yield one TrainEvent per optimisation step until the run's total ``steps`` or ``minutes`` more are reached.

        ``steps`` counts from the start of the run, so a resumed run goes on to the same total (and yields nothing if
        it is already there). Stop early by no longer calling ``next``; then ``save()`` keeps the run.
        Errors surface as TrainingError.
        """
        cfg = self.config
        total = cfg.steps if cfg.steps is not None else None
        if total is not None and self.step >= total:
            return
        budget = cfg.minutes * 60 if cfg.minutes is not None else None
        self._time_total = self.elapsed_before + budget if budget is not None else None
        rate = None
        self._active_s = 0.0  # time spent inside steps; a paused generator (not being advanced) does not count
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    loss, gnorm = self.train_step()
                except torch.OutOfMemoryError:
                    self._free_memory()
                    raise TrainingOutOfMemory(cfg.batch_size, self.device) from None
                except RuntimeError as e:
                    if "out of memory" in str(e).lower() or "can't allocate memory" in str(e).lower():
                        self._free_memory()
                        raise TrainingOutOfMemory(cfg.batch_size, self.device) from None
                    raise
                dt = time.perf_counter() - t0
                inst = cfg.batch_size / max(dt, 1e-9)
                rate = inst if rate is None else 0.9 * rate + 0.1 * inst
                if total is not None:
                    done = self.step >= total
                    eta = (total - self.step) * cfg.batch_size / rate
                else:
                    done = self.dist.any_flag(self._active_s + dt >= budget)  # all ranks stop at one step
                    eta = max(0.0, budget - self._active_s - dt)
                ev = TrainEvent(step=self.step, total_steps=total, loss=loss, lr=self._lr_at(self.step - 1),
                                images_per_s=rate, eta_s=eta, elapsed_s=0.0, grad_norm=gnorm,
                                bucket_loss=list(self._buckets), done=done)
                if cfg.preview_every and self.dist.is_main and (self.step % cfg.preview_every == 0 or done):
                    ev.preview = self.preview()
                if self.out is not None and cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and not done:
                    self._active_s += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    ev.checkpoint = self.save()
                self._active_s += time.perf_counter() - t0
                ev.elapsed_s = self.elapsed_s
                yield ev
                if done:
                    return
        finally:
            self.elapsed_before = self.elapsed_s
            self._active_s = 0.0

    @property
    def elapsed_s(self) -> float:
        """Seconds spent training in this run, over all sessions (resumes) so far, pauses not counted."""
        return self.elapsed_before + self._active_s

    def _free_memory(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @torch.no_grad()
    def preview(self, n: int | None = None, seed: int | None = None) -> torch.Tensor:
        """A few samples from the EMA weights with DDIM from a fixed seed, so previews are comparable over time."""
        cfg, mc = self.config, self.model.config
        n = n or cfg.preview_n
        cond, w = (self._text.preview_condition(n, self.device), 3.0) if self._text is not None else (None, 1.0)
        if cond is None and self._labels is not None and mc.num_classes:  # one of each class, guided as sampling is
            cond, w = torch.arange(n, device=self.device) % mc.num_classes, 2.0
        fn = model_fn(self.ema, self.device, self.precision, condition=cond, guidance=w,
                      channels_last=self.channels_last, schedule=self.schedule)
        last = None
        for last in ddim_sample(fn, self.schedule, (n, *mc.shape),
                                steps=min(cfg.preview_steps, self.schedule.T), seed=cfg.preview_seed if seed is None else seed,
                                device=self.device, every=10**9):
            pass
        return last.x.clamp(-1, 1).cpu()

    # ---- checkpoints --------------------------------------------------------------------------------------------
    def checkpoint_state(self) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
        tensors: dict[str, dict[str, torch.Tensor]] = {
            "model": dict(self.model.state_dict()),
            "ema": dict(self.ema.state_dict()),
            "optim": {},
            "rng": self.dist.gather_rng({"data": self.gen.get_state(), "noise": self.noise_gen.get_state(),
                                         "torch": self.torch_rng}),
        }
        if self.cuda_rng is not None:  # dropout on a GPU draws from the CUDA generator, not the CPU one
            tensors["rng"]["cuda"] = self.cuda_rng
        opt = self.optimizer.state_dict()
        for pid, st in opt["state"].items():
            for k, v in st.items():
                tensors["optim"][f"{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
        meta = {
            "step": self.step,
            "model": self.model.config.to_dict(),
            "schedule": self.schedule.to_dict(),
            "data": self.data_info,
            "train": self.config.to_dict(),
            "optimizer": {"param_groups": opt["param_groups"]},
            "elapsed_s": self.elapsed_s,
            "last_loss": self.last_loss if math.isfinite(self.last_loss) else None,
            "buckets": self._buckets,
        }
        return tensors, meta

    def save(self, path: str | Path | None = None) -> Path:
        target = Path(path) if path is not None else self.out
        if target is None:
            raise ValueError("save: no output path given and the trainer has no output folder")
        tensors, meta = self.checkpoint_state()
        return self.dist.save_once(lambda: save_checkpoint(target, tensors, meta))  # rank 0 writes, all wait

    @classmethod
    def resume(cls, checkpoint: str | Path | Checkpoint, data: ImageSource, out: str | Path | None = None,
               **overrides: Any) -> "Trainer":
        """Continue a saved run: same weights, EMA, optimizer moments, step, random streams and hyper-parameters.

        ``overrides`` may change steps/minutes (how far to go), device, logging and preview settings.
        """
        ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
        if "optim" not in ckpt.tensors or "rng" not in ckpt.tensors:
            raise ValueError(f"resume: {ckpt.path.name} holds no training state (it is an exported model)")
        cfg = TrainConfig.from_dict({**ckpt.meta.get("train", {}), **overrides})
        trainer = cls(ckpt.model_config, ckpt.schedule, data, cfg, out=out if out is not None else ckpt.path,
                      data_info=ckpt.meta.get("data"))
        trainer.model.load_state_dict(ckpt.tensors["model"])
        trainer.ema.load_state_dict(ckpt.tensors["ema"])
        opt_state = trainer.optimizer.state_dict()
        saved_groups = ckpt.meta.get("optimizer", {}).get("param_groups")
        if saved_groups:
            for g, s in zip(opt_state["param_groups"], saved_groups):
                g.update({k: v for k, v in s.items() if k not in ("params", "fused", "foreach")})
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, v in ckpt.tensors["optim"].items():
            pid, name = key.split(".", 1)
            state.setdefault(int(pid), {})[name] = v
        opt_state["state"] = state
        trainer.optimizer.load_state_dict(opt_state)
        # A checkpoint stores moments in NCHW order; a model kept in NHWC needs them in its own layout, since the
        # fused AdamW kernel walks a parameter and its moments as flat memory (a mismatch silently mixes elements).
        for p, st in trainer.optimizer.state.items():
            for k, v in st.items():
                if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                    st[k] = torch.empty_like(p).copy_(v)
        rng = ckpt.tensors["rng"]
        trainer.gen.set_state(rng["data"])
        trainer.noise_gen.set_state(rng["noise"])
        trainer.torch_rng = rng["torch"]
        # ranks > 0: their own streams
        trainer.torch_rng = trainer.dist.restore_rng(trainer.gen, trainer.noise_gen, rng, cfg.seed, ckpt.step,
                                                     trainer.torch_rng)
        if "cuda" in rng and trainer.device.type == "cuda":
            trainer.cuda_rng = rng["cuda"]
        trainer.step = ckpt.step
        trainer.elapsed_before = float(ckpt.meta.get("elapsed_s", 0.0))
        trainer._buckets = list(ckpt.meta.get("buckets") or trainer._buckets)
        trainer.last_loss = float(ckpt.meta.get("last_loss") or float("nan"))
        return trainer


def _data_info(data: ImageSource) -> dict[str, Any]:
    to_dict = getattr(data, "to_dict", None)
    info = dict(to_dict()) if callable(to_dict) else {"spec": getattr(data, "spec", "unknown"), "n": len(data)}
    names = getattr(data, "class_names", None)
    if names:
        info["class_names"] = list(names)
    return info
