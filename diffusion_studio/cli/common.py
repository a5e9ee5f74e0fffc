"""What every command shares: the parser classes, argument types, one-line messages, progress output, device checks."""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

PROG = "diffusion-studio"

# Mirrors of core's names, kept here so that --help and argument errors need no torch import (tests/test_cli.py
# checks they match core.unet.PRESETS and core.schedule.KINDS).
PRESET_NAMES = ("micro", "tiny", "small", "base", "ddpm-cifar")
SCHEDULE_KINDS = ("linear", "cosine", "sigmoid", "quadratic")
BETA_RANGE_KINDS = ("linear", "quadratic", "sigmoid")

LINE_INTERVAL_S = 5.0    # without a progress bar, at most one progress line this often (first and last always)
THREADS_HELP = ("CPU threads for torch (default: torch's choice); on a busy machine fewer threads can be much faster, "
                "because a thread that waits for a core stalls the others")
TRAIN_FIELD_FLAGS = {
    "steps": "--steps", "minutes": "--minutes", "batch_size": "--batch", "lr": "--lr", "ema_decay": "--ema-decay",
    "warmup_steps": "--warmup", "log_every": "--log-every", "lr_schedule": "--lr-schedule", "device": "--device",
    "precision": "--precision", "loss_weighting": "--loss-weighting", "snr_gamma": "--snr-gamma",
}


class UsageError(Exception):
    """The command line asks for something impossible; exit 2."""


class CliError(Exception):
    """A runtime problem found by the CLI itself; exit 1."""


class Stopped(Exception):
    """Training stopped by a signal after saving; carries the exit code and the one-line message."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


# ---- argument types -------------------------------------------------------------------------------------------------
def int_at_least(lo: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo}, got {value}")
        return value

    parse.__name__ = "whole number"
    return parse


def float_in(lo: float, hi: float, lo_open: bool = True, hi_open: bool = True) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        above = value > lo if lo_open else value >= lo
        below = value < hi if hi_open else value <= hi
        if not (math.isfinite(value) and above and below):
            interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
            raise argparse.ArgumentTypeError(f"must be in {interval}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    at_least = int_at_least(lo)

    def parse(text: str) -> int:
        value = at_least(text)
        if value > hi:
            raise argparse.ArgumentTypeError(f"must be at most {hi}, got {value}")
        return value

    parse.__name__ = "whole number"
    return parse


def limited(name: str) -> Callable[[str], float]:
    """The argument type of training setting ``name``, with the one range core/limits.py gives it (the range the
    checkpoint manifest checks too, so no run starts with a value its own checkpoint would refuse)."""
    from ..core.limits import FLOAT_LIMITS, INT_LIMITS

    if name in INT_LIMITS:
        return int_in(*INT_LIMITS[name])
    lo, hi, lo_open, hi_open = FLOAT_LIMITS[name]
    return float_in(lo, hi, lo_open, hi_open)


def px_list(text: str) -> tuple[int, ...]:
    """'8,4' → (8, 4): distinct positive whole numbers, largest first."""
    one = int_at_least(1)
    parts = [x.strip() for x in text.split(",")]
    if not all(parts) or len(parts) > 16:
        raise argparse.ArgumentTypeError(f"expected 1 to 16 whole numbers separated by commas, got {text!r}")
    return tuple(sorted({one(x) for x in parts}, reverse=True))


px_list.__name__ = "list of resolutions"
POSITIVE = int_at_least(1)
# torch's thread pool crashes far below 65536 threads; more threads than 4× the cores only slow a run down.
MAX_THREADS = max(256, 4 * (os.cpu_count() or 1))
THREADS = int_in(1, MAX_THREADS)
NON_NEGATIVE = int_at_least(0)
UNIT_OPEN = float_in(0.0, 1.0)                 # β, lr
UNIT_HALF_OPEN = float_in(0.0, 1.0, lo_open=False)  # EMA decay
POSITIVE_FLOAT = float_in(0.0, math.inf)
NON_NEGATIVE_FLOAT = float_in(0.0, math.inf, lo_open=False)


# ---- the parser -----------------------------------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``diffusion-studio: error: ...``) instead of usage + error over two lines."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


class Formatter(argparse.HelpFormatter):
    """Wraps descriptions and epilogs line by line, so examples keep their own lines."""

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=30, width=min(110, max(60, _terminal_width())))

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        out = []
        for line in text.splitlines():
            lead = line[: len(line) - len(line.lstrip())]
            out.append(textwrap.fill(line.strip(), width, initial_indent=indent + lead,
                                     subsequent_indent=indent + lead + "    ") if line.strip() else "")
        return "\n".join(out)


def _terminal_width() -> int:
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns - 2
    except (OSError, ValueError, AttributeError):
        return 100


def common_options() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    # SUPPRESS: the subcommand's default must not overwrite a --debug given before the subcommand.
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="on errors, show the full traceback")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bar; print a progress line now and then instead (as when not on a terminal)")
    return common


def add_command(sub, common, name: str, help: str, description: str, epilog: str | None = None):
    """A subcommand with the shared options (--debug, --quiet) and the line-keeping help formatter."""
    return sub.add_parser(name, parents=[common], formatter_class=Formatter, help=help, description=description,
                          epilog=epilog)


# ---- messages -------------------------------------------------------------------------------------------------------
def terminal_safe(text: str) -> str:
    """``text`` with control, format and bidirectional characters written as escapes (\\x1b, \\u202e), so that
    text from a file (a caption, a name) cannot move the cursor, recolour the terminal or reorder what is shown."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():  # bidi marks and overrides are format characters (Cf): not printable
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def one_line(text: object, limit: int = 600) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def say(message: str) -> None:
    """One line on stderr, prefixed with the program's name."""
    print(terminal_safe(f"{PROG}: {one_line(message)}"), file=sys.stderr, flush=True)


def echo(message: str = "") -> None:
    """One line of the command's report on stdout (control and bidi characters escaped)."""
    print("\n".join(terminal_safe(line) for line in message.split("\n")), flush=True)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def field_message(e: Exception, flags: dict[str, str]) -> str:
    """Core's "field: reason" → "argument --flag: reason"."""
    text = str(e)
    name, sep, rest = text.partition(": ")
    if sep and name in flags:
        return f"argument {flags[name]}: {rest}"
    return text


# ---- progress -------------------------------------------------------------------------------------------------------
def wants_bar(args) -> bool:
    if getattr(args, "quiet", False):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Lines:
    """Progress lines for logs: the first, then at most one per LINE_INTERVAL_S, and any marked final.

    With ``delay``, the first line waits until the work has taken LINE_INTERVAL_S (quick work stays silent).
    """

    def __init__(self, enabled: bool, delay: bool = False):
        self.enabled = enabled
        self.last = time.monotonic() if delay else None

    def __call__(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.enabled and (force or self.last is None or now - self.last >= LINE_INTERVAL_S):
            self.last = now
            print(text, file=sys.stderr, flush=True)


def make_bar(**kw):
    from tqdm import tqdm

    return tqdm(file=sys.stderr, dynamic_ncols=True, **kw)


# ---- shared checks --------------------------------------------------------------------------------------------------
def out_folder(text: str) -> Path:
    """The --out folder (``~`` expanded); a usage error when a file stands there."""
    out = Path(text).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"argument --out: {out} is a file, not a folder")
    return out


_CREATED: list[Path] = []  # folders an output check made, removed again (if still empty) when the command fails


def forget_created_folders(failed: bool) -> None:
    """After a command: when it failed, remove the folders its output checks created that are still empty
    (deepest first), so that a refused command leaves nothing behind; either way start a fresh list."""
    made, _CREATED[:] = list(_CREATED), []
    if failed:
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only an empty folder goes


def _probe_folder(folder: Path) -> str | None:
    """Why files cannot be created in ``folder`` (created if missing), or None: a real file is made and removed,
    since permissions, read-only mounts and pseudo file systems (/proc) only show when one tries."""
    import errno
    import secrets

    try:
        missing = [f for f in (folder, *folder.parents) if not f.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        _CREATED.extend(reversed(missing))
        probe = folder / f".diffusion-studio-probe-{os.getpid()}-{secrets.token_hex(4)}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        return e.strerror or errno.errorcode.get(e.errno or 0, str(e))
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None


def writable_file(value: str | None, flag: str) -> Path | None:
    """An output file's path, checked before any work: not a folder or a device, and its folder takes new files."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.is_dir():
        raise UsageError(f"argument {flag}: {value} is a folder; give a file name")
    if path.exists() and not path.is_file():
        raise UsageError(f"argument {flag}: {value} is not a regular file (a device, pipe or socket); give a file name")
    why = _probe_folder(path.parent)
    if why is not None:
        raise UsageError(f"argument {flag}: cannot write {value} ({why} in {path.parent})")
    return path


def writable_folder(out: Path, flag: str = "--out") -> Path:
    """An output folder, created and checked before any work: it takes new files."""
    why = _probe_folder(out)
    if why is not None:
        raise UsageError(f"argument {flag}: cannot write into {out} ({why})")
    return out


def refuse_other_kind(out: Path, manifest: str) -> None:
    """A usage error when --out holds another kind of run than the one about to be written there."""
    from ..core.io.runkind import KINDS, other_kind

    other = other_kind(out, manifest)
    if other is not None:
        raise UsageError(f"argument --out: {out} holds {other}; {KINDS[manifest]} needs a folder of its own "
                         f"(choose another folder)")


def check_device(device: str, precision: str, resolve: bool = True):
    """The device, and the precision resolved for it — or, with ``resolve`` False, 'auto' kept for a choice made
    later per workload (sampling measures its own model and batch: core/runtime/calibrate.for_sampling)."""
    from ..core.runtime.device import resolve_device
    from ..core.runtime.calibrate import resolve_precision

    try:
        dev = resolve_device(device)
    except ValueError as e:
        raise UsageError(field_message(e, TRAIN_FIELD_FLAGS)) from None
    try:
        if precision == "auto" and not resolve:
            return dev, precision
        return dev, resolve_precision(precision, dev)
    except ValueError as e:
        raise UsageError(field_message(e, TRAIN_FIELD_FLAGS)) from None


def write_text_atomic(path: Path, text: str) -> None:
    """Written beside the target and renamed over it: a run killed mid-write leaves the old file whole."""
    from ..core.io.safeio import write_atomic

    write_atomic(path, text.encode("utf-8"), durable=False)


def set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)

