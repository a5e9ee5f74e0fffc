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

import contextlib
import datetime as _dt
import hashlib
import os
import re
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import DistributedError

DEFAULT_TIMEOUT_S = 300.0  # how long a rank waits for the others in any collective before giving up with an error
# How long the first contact may take: rank 0 waiting for every rank to reach its store, or a rank waiting for the
# store to answer. torchrun's agent already holds the store and started every rank at once, so its ranks meet within
# a second; a longer wait only delays the one-line error for leftover variables in a plain shell.
JOIN_TIMEOUT_S = 3.0
MAX_WORLD_SIZE = 4096  # more processes than any single run here could use: a typo or a leftover number
_WHOLE = re.compile(r"[0-9]{1,10}")
_JOINED = "diffusion-studio/joined"
HINT = " (leftover torchrun variables? unset them to train in one process)"


@dataclass(frozen=True)
class Environment:
    """torchrun's variables, checked: this process is rank ``rank`` of ``world_size`` (``local_rank`` on its node)."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str = ""
    master_port: int = 0

    @property
    def where(self) -> str:
        return f"MASTER_ADDR:MASTER_PORT ({self.master_addr}:{self.master_port})"


def _whole(env, name: str, lo: int, hi: int, why: str = "") -> int:
    text = env[name].strip()
    if not _WHOLE.fullmatch(text):
        raise ValueError(f"environment variable {name} must be a whole number, got {env[name][:40]!r}{HINT}")
    value = int(text)
    if not lo <= value <= hi:
        raise ValueError(f"environment variable {name}={value} must be in {lo}..{hi}{why}{HINT}")
    return value


def read_environment(env=None) -> Environment | None:
    """torchrun's RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT, each checked; None
    without RANK and WORLD_SIZE (one process). A ValueError names the first variable that is wrong."""
    env = os.environ if env is None else env
    present = [n for n in ("RANK", "WORLD_SIZE") if n in env]
    if not present:
        return None
    if len(present) == 1:
        other = "WORLD_SIZE" if present[0] == "RANK" else "RANK"
        raise ValueError(f"environment variable {present[0]} is set ({env[present[0]][:40]!r}) but {other} is not; "
                         f"torchrun sets both{HINT}")
    world = _whole(env, "WORLD_SIZE", 1, MAX_WORLD_SIZE, " (the number of processes of the run)")
    rank = _whole(env, "RANK", 0, world - 1, f" (ranks count from 0 to WORLD_SIZE - 1 = {world - 1})")
    local_world = world
    if "LOCAL_WORLD_SIZE" in env:
        local_world = _whole(env, "LOCAL_WORLD_SIZE", 1, world, f" (at most WORLD_SIZE = {world})")
    local_rank = 0
    if "LOCAL_RANK" in env:
        limit = "LOCAL_WORLD_SIZE" if "LOCAL_WORLD_SIZE" in env else "WORLD_SIZE"
        local_rank = _whole(env, "LOCAL_RANK", 0, local_world - 1, f" (below {limit} = {local_world})")
    if world == 1:
        return Environment(rank, world, local_rank)
    addr = env.get("MASTER_ADDR", "")
    if not addr.strip():
        raise ValueError(f"environment variable MASTER_ADDR is not set: a {world}-process run needs the address of "
                         f"rank 0{HINT}")
    if len(addr) > 253 or not addr.isprintable() or any(c.isspace() for c in addr):
        raise ValueError(f"environment variable MASTER_ADDR must be a host name or address, got {addr[:40]!r}")
    if "MASTER_PORT" not in env:
        raise ValueError(f"environment variable MASTER_PORT is not set: a {world}-process run needs rank 0's "
                         f"port{HINT}")
    port = _whole(env, "MASTER_PORT", 1, 65535, " (a TCP port)")
    return Environment(rank, world, local_rank, addr.strip(), port)


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


def init(device: str = "auto", timeout_s: float | None = None, join_timeout_s: float | None = None) -> Context:
    """Join the process group torchrun describes in the environment (NCCL for CUDA, gloo otherwise); a no-op
    without it or with WORLD_SIZE=1. Every variable is checked first (DistributedError naming it); the first contact
    must happen within ``join_timeout_s`` (JOIN_TIMEOUT_S), so leftover variables end in one line, not a hang;
    ``timeout_s`` then bounds every collective, so a dead rank is an error, not a hang."""
    global _current
    if _current.active or not launched_by_torchrun():
        return _current
    try:
        env = read_environment()
    except ValueError as e:
        raise DistributedError(str(e)) from None
    if env is None or env.world_size <= 1:
        return _current
    import torch.distributed as dist

    rank, world, local_rank = env.rank, env.world_size, env.local_rank
    wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    backend = "nccl" if wants_cuda and torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(f"environment variable LOCAL_RANK={local_rank}: this machine has "
                                   f"{torch.cuda.device_count()} GPU(s), one per process (cuda:0..)")
        torch.cuda.set_device(local_rank)
    timeout = float(timeout_s or DEFAULT_TIMEOUT_S)
    store = _join(env, float(join_timeout_s or JOIN_TIMEOUT_S), timeout)
    try:
        dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world,
                                timeout=_dt.timedelta(seconds=timeout))
    except Exception as e:  # noqa: BLE001 - the backend could not connect: name where it was waiting
        raise DistributedError(f"rank {rank}: could not join the other {world - 1} process(es) at {env.where} "
                               f"({_first_line(e)})") from None
    global _joined
    _joined = True
    _current = Context(rank=rank, world_size=world, local_rank=local_rank, backend=backend, timeout_s=timeout)
    return _current


_joined = False  # this process has been part of a process group (even if it has left it since)


def joined() -> bool:
    return _joined


def exit_now(code: int) -> None:
    """End a process that took part in a multi-process run, its output flushed, without the interpreter's teardown:
    the backend's threads (gloo's, the TCPStore's) can abort that teardown ("terminate called without an active
    exception", exit 134) after the run's work and its last words are done, turning a success into a crash."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(code)


def _join(env: Environment, join_s: float, timeout_s: float):
    """The run's TCPStore once every rank has reached it, or a DistributedError within ``join_s`` seconds.

    Without torchrun's agent, rank 0 hosts the store and waits for the others to check in; under the agent (it holds
    the store and started every rank) each rank only has to reach it. The store keeps ``timeout_s`` afterwards, for
    the backend's own exchange and for the run."""
    from torch.distributed import TCPStore

    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    hosts = env.rank == 0 and not agent
    deadline = time.monotonic() + join_s
    others = env.world_size - 1
    with _quiet_stderr():  # c10d logs each retry over many lines: the one line below says it all
        if not hosts:
            _wait_until_listening(env, deadline, join_s, "torchrun's agent" if agent else "rank 0")
        try:
            store = TCPStore(env.master_addr, env.master_port, env.world_size, is_master=hosts,
                             timeout=_dt.timedelta(seconds=max(0.5, deadline - time.monotonic())),
                             wait_for_workers=False, multi_tenant=True)
        except Exception as e:  # noqa: BLE001 - a port in use, an unreachable host
            doing = "cannot listen at" if hosts else "cannot reach rank 0's store at"
            raise DistributedError(f"rank {env.rank}: {doing} {env.where} ({_first_line(e)})") from None
        store.set_timeout(_dt.timedelta(seconds=timeout_s))
        if agent:
            return store
        try:
            joined = store.add(_JOINED, 1)
            while joined < env.world_size and time.monotonic() < deadline:
                time.sleep(0.05)
                joined = store.add(_JOINED, 0)
        except Exception as e:  # noqa: BLE001 - rank 0 went away while we waited
            raise DistributedError(f"rank {env.rank}: lost rank 0's store at {env.where} ({_first_line(e)})") from None
    if joined < env.world_size:
        missing = env.world_size - joined
        raise DistributedError(f"rank {env.rank}: {missing} of the {others} other rank(s) never came to "
                               f"{env.where} within {join_s:g} s (WORLD_SIZE={env.world_size}){HINT}")
    return store


def _wait_until_listening(env: Environment, deadline: float, join_s: float, host: str) -> None:
    """Returns once something accepts connections at MASTER_ADDR:MASTER_PORT; DistributedError at the deadline."""
    last: Exception | None = None
    while True:
        try:
            with socket.create_connection((env.master_addr, env.master_port),
                                          timeout=max(0.1, min(1.0, deadline - time.monotonic()))):
                return
        except OSError as e:
            last = e
        if time.monotonic() >= deadline:
            why = getattr(last, "strerror", None) or _first_line(last) if last else "no answer"
            raise DistributedError(f"rank {env.rank}: {host} never came: nothing listens at {env.where} after "
                                   f"{join_s:g} s ({why}){HINT}")
        time.sleep(0.1)


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 sent to a temporary file for the block, and what was written there replayed after it only
    when the block succeeds: c10d's C++ logging cannot be turned off once torch is loaded."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as log:
        ok = False
        try:
            os.dup2(log.fileno(), 2)
            yield
            ok = True
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if ok:
                log.seek(0)
                text = log.read(1 << 16)
                if text:
                    os.write(2, text)


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
