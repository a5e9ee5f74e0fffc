"""Data-parallel training on torch.distributed: the process group from torchrun's environment, rank-aware seeds,
DistributedDataParallel, rank-0-only writing with everyone waiting, and one-line errors when a rank goes away.

Without torchrun's environment (RANK/WORLD_SIZE) every call here is a no-op for a single process, so the Trainer
calls into it unconditionally. Conventions (improved-diffusion's dist_util, accelerate's rank-aware seeding):
the initial weights are the same on every rank (same seed; DDP also broadcasts rank 0's), while each rank draws its
own data indices, t and ε from generators seeded by (seed, rank); rank 0 keeps exactly the single-process seeds, so
one process trains as it always did. ``--batch`` is the global batch, split evenly over the ranks; DDP averages the
gradients, so N ranks × B/N images take the same step as one process with B images.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import DistributedError

DEFAULT_TIMEOUT_S = 300.0  # how long a rank waits for the others in any collective before giving up with an error


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s streams: ``seed`` itself on rank 0, an unrelated 63-bit number elsewhere."""
    if rank == 0:
        return int(seed)
    digest = hashlib.sha256(f"diffusion-studio:{int(seed)}:{int(rank)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class Context:
    """This process's place in the run: rank r of world_size (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---- set-up -----------------------------------------------------------------------------------------------
    def local_device(self, device: torch.device) -> torch.device:
        """One GPU per process: cuda → cuda:LOCAL_RANK; anything else unchanged."""
        if self.active and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def local_batch(self, batch: int) -> int:
        if batch % self.world_size:
            raise ValueError(f"batch_size: the global batch {batch} does not split evenly over {self.world_size} "
                             f"processes; use a multiple of {self.world_size}")
        return batch // self.world_size

    def seed(self, seed: int) -> int:
        return rank_seed(seed, self.rank)

    def wrap(self, model: torch.nn.Module, compile: bool = False) -> torch.nn.Module:
        """The module that trains: DDP over ``model`` when there are several ranks, compiled if asked."""
        net = model
        if self.active:
            from torch.nn.parallel import DistributedDataParallel as DDP

            dev = next(model.parameters()).device
            net = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        return torch.compile(net) if compile else net

    # ---- collectives ------------------------------------------------------------------------------------------
    def barrier(self) -> None:
        if self.active:
            _collective("barrier", torch.distributed.barrier)

    def any_flag(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any (a stop request, a spent time budget)."""
        if not self.active:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self._comm_device())
        _collective("agreeing to stop", torch.distributed.all_reduce, t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item() > 0)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (picklable, small)."""
        if not self.active:
            return obj
        box = [obj if self.is_main else None]
        _collective("broadcast", torch.distributed.broadcast_object_list, box, src=0)
        return box[0]

    def save_once(self, write: Callable[[], Path]) -> Path:
        """Rank 0 runs ``write`` (a checkpoint save) while the others wait; all return its path or all raise."""
        if not self.active:
            return write()
        result: tuple[str | None, str | None] = (None, None)
        error: BaseException | None = None
        if self.is_main:
            try:
                result = (str(write()), None)
            except Exception as e:  # noqa: BLE001 - every rank must learn that the save failed, then all raise
                error = e
                result = (None, str(e).splitlines()[0] if str(e) else type(e).__name__)
        path, failure = self.broadcast(result)
        if error is not None:
            raise error
        if failure is not None:
            raise DistributedError(f"rank 0 could not save the checkpoint: {failure}")
        return Path(path)

    def gather_rng(self, states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every rank's random states for the checkpoint: rank 0's under their own names, rank r's as NAME.rR."""
        if not self.active:
            return states
        local = {k: v.cpu() for k, v in states.items()}
        everyone: list[Any] = [None] * self.world_size
        _collective("gathering random states", torch.distributed.all_gather_object, everyone, local)
        out = dict(states)
        for r, st in enumerate(everyone):
            if r:
                out.update({f"{k}.r{r}": v for k, v in st.items()})
        return out

    def restore_rng(self, gen: torch.Generator, noise_gen: torch.Generator, rng: dict[str, torch.Tensor],
                    seed: int, step: int, torch_rng: torch.Tensor) -> torch.Tensor:
        """Rank r > 0 continues its own saved streams; a rank the saved run did not have starts fresh ones from
        (seed, rank, step), so a run resumed on more ranks never replays another rank's draws. Returns this rank's
        dropout stream (the trainer's state of torch's global generator)."""
        if self.rank == 0:
            return torch_rng
        r = self.rank
        if f"data.r{r}" in rng and f"noise.r{r}" in rng:
            gen.set_state(rng[f"data.r{r}"])
            noise_gen.set_state(rng[f"noise.r{r}"])  # a generator's state is a CPU byte tensor on any device
            return rng.get(f"torch.r{r}", torch_rng)
        gen.manual_seed(rank_seed(seed + 7919 * step, r))
        noise_gen.manual_seed(rank_seed(seed + 1 + 7919 * step, r))
        return torch.Generator().manual_seed(rank_seed(seed + 2 + 7919 * step, r)).get_state()

    def _comm_device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")


_current = Context()


def current() -> Context:
    """The process's Context: set by ``init``; rank 0 of 1 otherwise."""
    return _current


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(device: str = "auto", timeout_s: float | None = None) -> Context:
    """Join the process group torchrun describes in the environment (NCCL for CUDA, gloo otherwise); a no-op
    without it or with WORLD_SIZE=1. ``timeout_s`` bounds every collective, so a dead rank is an error, not a hang."""
    global _current
    if _current.active or not launched_by_torchrun():
        return _current
    world = int(os.environ["WORLD_SIZE"])
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0))
    if world <= 1:
        return _current
    import torch.distributed as dist

    wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    backend = "nccl" if wants_cuda and torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    timeout = float(timeout_s or DEFAULT_TIMEOUT_S)
    try:
        dist.init_process_group(backend=backend, timeout=_dt.timedelta(seconds=timeout))
    except Exception as e:  # noqa: BLE001 - the rendezvous failed: name where it was waiting
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        raise DistributedError(f"rank {rank}: could not join the other {world - 1} process(es) at {where} "
                               f"({_first_line(e)})") from None
    _current = Context(rank=rank, world_size=world, local_rank=local_rank, backend=backend, timeout_s=timeout)
    return _current


def shutdown() -> None:
    """Leave the process group (at the end of a run); the Context becomes single-process again."""
    global _current
    if _current.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    _current = Context()


def explain(e: BaseException) -> str | None:
    """A one-line account of a failed collective in a multi-process run, or None if ``e`` is something else."""
    ctx = _current
    if not ctx.active or isinstance(e, DistributedError):
        return None
    names = {type(c).__name__ for c in type(e).__mro__} | {type(e).__name__}
    text = str(e).lower()
    markers = ("gloo", "nccl", "connection closed", "connection reset", "broken pipe", "timed out", "timeout",
               "socket", "peer", "watchdog")
    if not ({"DistError", "DistBackendError", "DistNetworkError"} & names or any(m in text for m in markers)):
        return None
    what = "timed out waiting for" if "time" in text and "out" in text else "lost contact with"
    return (f"rank {ctx.rank}: {what} another process of the {ctx.world_size}-process run (it died, was stopped "
            f"or hangs; limit {ctx.timeout_s:g} s): {_first_line(e)}")


def _collective(what: str, fn: Callable, *args, **kwargs) -> Any:
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - any backend failure in a collective becomes one line
        reason = explain(e) or f"rank {_current.rank}: {what} failed ({_first_line(e)})"
        raise DistributedError(reason) from None


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[0] if lines else type(e).__name__
    if text.startswith("[") and "] " in text:  # gloo/NCCL prefix their messages with a source file and line
        text = text.split("] ", 1)[1]
    return text.split(". This is typically", 1)[0][:200]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (for a single-machine rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
