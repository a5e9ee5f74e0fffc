"""`train` on several processes: joining torchrun's process group, and `--nproc N` launching them on this machine."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import uuid
from typing import Iterator

from .common import POSITIVE, POSITIVE_FLOAT, CliError, Stopped, UsageError

SHUTDOWN_TIMEOUT_S = 120  # how long a stop (Ctrl+C, SIGTERM) may take to save before the launcher kills the processes
REPEAT_S = 2.0  # a second signal this soon after the first is the launcher forwarding the same Ctrl+C


def current_dist():
    """The process's distributed Context (imports torch, so only once a command runs)."""
    from ..core.train.distributed import current

    return current()


def add_dist_options(p) -> None:
    g = p.add_argument_group(
        "several GPUs or machines",
        "Data-parallel training (DistributedDataParallel). Under torchrun, e.g. 'torchrun --standalone "
        "--nproc-per-node 4 -m diffusion_studio train ...' (multi-node: --nnodes/--rdzv-endpoint), every option "
        "works unchanged; only rank 0 writes the checkpoint, metrics.jsonl and the progress. --batch is the global "
        "batch, split evenly over the processes.")
    g.add_argument("--nproc", type=POSITIVE, metavar="N",
                   help="start N training processes on this machine (one per GPU; gloo processes on a CPU) through "
                        "torch.distributed's elastic launcher, as 'torchrun --standalone --nproc-per-node N' does")
    g.add_argument("--dist-timeout", type=POSITIVE_FLOAT, metavar="S",
                   help="seconds a process waits for the others before the run stops with an error (default: 300)")
    g.add_argument("--dist-join-timeout", type=POSITIVE_FLOAT, metavar="S",
                   help="seconds the processes may take to first meet at MASTER_ADDR:MASTER_PORT before the run "
                        "stops with an error; raise it for processes started by hand at different times "
                        "(default: 3; torchrun's processes meet at once)")


def check_environment():
    """torchrun's variables checked before anything joins or launches: None for one process, else what they say;
    a wrong one is a usage error naming the variable."""
    from ..core.train.distributed import read_environment

    try:
        return read_environment()
    except ValueError as e:
        raise UsageError(str(e)) from None


def _check_nproc(n: int, device: str | None) -> None:
    import torch

    from ..core.train.distributed import MAX_WORLD_SIZE

    wants_cuda = (device or "auto").startswith("cuda") or ((device or "auto") == "auto" and torch.cuda.is_available())
    if wants_cuda and torch.cuda.is_available():
        have, what = torch.cuda.device_count(), "GPU(s), one process each"
    else:
        have, what = os.cpu_count() or 1, "CPU core(s), one gloo process each"
    if n > min(have, MAX_WORLD_SIZE):
        raise UsageError(f"argument --nproc: {n} processes, but this machine has {have} {what}; use at most "
                         f"{min(have, MAX_WORLD_SIZE)}")


def launch_if_asked(args) -> int | None:
    """With --nproc N > 1 (and not already under torchrun): run the N processes and return the exit code."""
    env = check_environment()
    n = getattr(args, "nproc", None)
    if n is None:
        return None
    if env is not None:  # torchrun's variables are set
        raise UsageError("argument --nproc: this process was already started by torchrun; drop --nproc")
    if n == 1:
        return None
    _check_nproc(n, getattr(args, "device", None))
    _check_batch(getattr(args, "batch", None), n, "--nproc")
    return _launch(n, _without_nproc(args.argv))


def _check_batch(batch: int | None, n: int, what: str) -> None:
    if batch is not None and batch % n:
        raise UsageError(f"argument --batch: the global batch {batch} does not split evenly over the {n} processes "
                         f"of {what}; use a multiple of {n}")


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def _launch(n: int, argv: list[str]) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from ..core.train.distributed import free_port

    for name in [n for n in logging.root.manager.loggerDict if n.startswith("torch.distributed.elastic")]:
        logging.getLogger(name).setLevel(logging.CRITICAL)  # its warnings and reports: we give one line instead
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=n, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{free_port()}", max_restarts=0,
                          monitor_interval=0.1, start_method="spawn", shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "diffusion_studio", *argv)
    except SignalException as e:  # Ctrl+C / SIGTERM reached the launcher: the processes saved and stopped
        return 128 + int(e.sigval)
    except ChildFailedError as e:
        return _report_failures(e.failures, n)
    return 0


def _report_failures(failures: dict, n: int) -> int:
    codes = {rank: f.exitcode for rank, f in failures.items()}
    stopped = {128 + signal.SIGINT, 128 + signal.SIGTERM, 128 + getattr(signal, "SIGHUP", 1)}
    if any(c in stopped for c in codes.values()) and all(c in stopped or -c in (signal.SIGTERM, signal.SIGINT)
                                                         for c in codes.values()):
        # a stop that rank 0 reported with its checkpoint (a rank the launcher ended on the way out counts too)
        return next(c for c in codes.values() if c in stopped)
    # SIGTERM/SIGINT are the launcher stopping the others; any other signal killed a rank, which could not say why.
    killed = sorted((r, c) for r, c in codes.items() if c < 0 and -c not in (signal.SIGTERM, signal.SIGINT))
    said = [(r, c) for r, c in sorted(codes.items()) if c > 0 and c not in stopped]
    if said and not killed:
        return int(said[0][1])  # it said why on stderr itself
    if killed:
        rank, code = killed[0]
        try:
            how = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"was killed by signal {-code}"
        raise CliError(f"rank {rank} of {n} {how}; the other processes were stopped (the last checkpoint is kept)")
    rank = min(codes)
    raise CliError(f"rank {rank} of {n} was stopped by a signal (exit {codes[rank]}); the run ended "
                   f"(the last checkpoint is kept)")


def _leave_together(ctx) -> None:
    """After a run that ended well on this rank: wait at a barrier until every rank is done (rank 0 writes the last
    checkpoint), so no process tears down its gloo/NCCL connections while a peer still uses them — a peer that
    vanishes under a live process group can abort that process from the backend's own threads. A barrier that fails
    (a peer that already died) changes nothing: this rank's work is done and its outcome stands."""
    try:
        ctx.barrier()
    except Exception:  # noqa: BLE001 - see above
        pass


@contextlib.contextmanager
def distributed_run(args) -> Iterator:
    """This process's part of the run: joins torchrun's process group (if any) for the block, keeps the other
    ranks quiet on stdout, and turns a failed collective into one line."""
    from ..core.train import distributed

    check_environment()
    try:
        ctx = distributed.init(getattr(args, "device", None) or "auto", getattr(args, "dist_timeout", None),
                               getattr(args, "dist_join_timeout", None))
    except distributed.DistributedError as e:
        raise CliError(str(e)) from None
    if ctx.active:
        _check_batch(getattr(args, "batch", None), ctx.world_size, "this run")
    saved_stdout = sys.stdout
    if not ctx.is_main:
        args.quiet = True  # no progress bar
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - restored below
    try:
        yield ctx
        if ctx.active:
            _leave_together(ctx)
    except Stopped as e:
        if not ctx.is_main:  # rank 0 says where the checkpoint went; the others just say they stopped
            raise Stopped(e.code, f"rank {ctx.rank}: stopped") from None
        if ctx.active:  # saved: the launcher's SIGTERM (the others have exited) must not cut rank 0's last words
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_IGN)
        raise
    except Exception as e:
        reason = distributed.explain(e)
        if reason is not None:
            raise CliError(reason) from None
        raise
    finally:
        if sys.stdout is not saved_stdout:
            sys.stdout.close()
            sys.stdout = saved_stdout
        distributed.shutdown()
