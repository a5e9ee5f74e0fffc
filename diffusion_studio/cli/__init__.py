"""The command line for headless machines: train, sample, info (and fid); with no arguments it opens the app."""
from __future__ import annotations

import argparse
import sys
import traceback
from typing import Any

from .. import __version__
from .common import (
    PRESET_NAMES, PROG, SCHEDULE_KINDS, CliError, Formatter, Parser, Stopped, UsageError, common_options, one_line,
    say,
)
from .importer import add_import_parser
from .info import add_export_parser, add_info_parser
from .nll import add_nll_parser
from .sample import add_sample_parser
from .train import add_train_parser
from .train_autoencoder import add_train_autoencoder_parser

__all__ = ["main", "build_parser", "PROG", "PRESET_NAMES", "SCHEDULE_KINDS", "UsageError", "CliError", "Stopped"]

# Exit codes: 0 done; 1 a runtime error (unreadable data or checkpoint, training diverged, disk full ...); 2 a bad
# command line, including values that only the data can refute (a batch larger than the dataset); 130 stopped by
# Ctrl+C (training saves a checkpoint first), 143 by SIGTERM. Every error is one line on stderr; --debug adds the
# traceback. torch is imported only once a command runs (the command modules import it inside their functions), so
# --help and most usage errors answer at once.

APP_COMMAND = "app"
_TOP_LEVEL_OPTIONS = ("-h", "--help", "--version")


def build_parser(command: str | None = None) -> tuple[argparse.ArgumentParser, dict[str, Any]]:
    """The parser, and the fid command's state ({"run": callable} once it is loaded).

    The fid module (heavier imports) is loaded only when ``command`` is "fid"; otherwise a stand-in lists it.
    """
    parser = Parser(
        prog=PROG, formatter_class=Formatter,
        description="Diffusion Studio: train and sample DDPM diffusion models. Without a command, opens the app.",
        epilog="examples:\n"
               f"  {PROG} train --data builtin:digits --size 16 --model tiny --steps 2000 --out runs/digits\n"
               f"  {PROG} train --out runs/digits --resume --steps 4000\n"
               f"  {PROG} sample --model runs/digits --n 64 --out samples --grid grid.png --gif reverse.gif\n"
               f"  {PROG} info runs/digits\n\n"
               f"'{PROG} COMMAND --help' lists each command's options.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true", help="on errors, show the full traceback")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    common = common_options()
    add_train_parser(sub, common)
    add_train_autoencoder_parser(sub, common)
    add_sample_parser(sub, common)
    add_info_parser(sub, common)
    add_export_parser(sub, common)
    add_import_parser(sub, common)
    add_nll_parser(sub, common)
    sub.add_parser(APP_COMMAND, add_help=False,
                   help=f"open the desktop app (the default without a command); '{PROG} app --help' lists its options")
    if command == "fid":
        fid = _add_fid_parser(sub)
    else:
        sub.add_parser("fid", add_help=False,
                       help=f"FID of generated images against real ones (see '{PROG} fid --help')")
        fid = {}
    return parser, fid


def _add_fid_parser(sub) -> dict[str, Any]:
    # fid lives in its own module, loaded only for the fid command (its imports are the heaviest).
    from . import fid as fid_cli

    fid_cli.add_fid_parser(sub)
    return {"run": fid_cli.run_fid}


# ---- the app --------------------------------------------------------------------------------------------------------
def _app_arguments(argv: list[str]) -> list[str] | None:
    """The app's own arguments when this command line opens the app, else None.

    No command (only --debug), ``app [APP OPTIONS]``, or options the CLI itself does not have
    (``--demo``, ``--screenshot FILE`` ...) open the app and hand the options to it.
    """
    rest = [a for a in argv if a != "--debug"]
    if not rest:
        return []
    if rest[0] == APP_COMMAND:
        return rest[1:]
    if rest[0].startswith("-") and rest[0].split("=", 1)[0] not in _TOP_LEVEL_OPTIONS:
        return rest
    return None


def _open_app(app_argv: list[str]) -> int:
    try:
        from ..gui.app import run_app
    except ImportError as e:
        raise CliError(f"the desktop app cannot start ({one_line(e)}); the headless commands still work, "
                       f"see '{PROG} --help'") from None
    return int(run_app(list(app_argv)) or 0)


# ---- errors and main ------------------------------------------------------------------------------------------------
def _describe_error(e: BaseException, debug: bool) -> str:
    if isinstance(e, OSError) and not isinstance(e, (ConnectionError,)) and e.strerror:
        where = e.filename if e.filename is not None else ""
        return f"{where}: {e.strerror}" if where else e.strerror
    text = one_line(e) or type(e).__name__
    known = ("DataError", "LoadCancelled", "CheckpointError", "TrainingError", "TrainingDiverged",
             "TrainingOutOfMemory", "UnknownModelError", "CliError")
    if type(e).__name__ in known or isinstance(e, (ValueError, RuntimeError, LookupError, OSError)):
        return text
    hint = "" if debug else " (run with --debug for the traceback)"
    return f"{type(e).__name__}: {text}{hint}"


def _safe_streams() -> None:
    # Messages carry symbols like ε and ≥; a console that cannot show them should get a stand-in, not a crash.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):
            pass


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script passes it to sys.exit)."""
    from .common import forget_created_folders

    code = _main(argv)
    forget_created_folders(failed=code != 0)
    dist = sys.modules.get("diffusion_studio.core.train.distributed")
    if argv is None and dist is not None and dist.joined():  # a rank of a multi-process run, run as a program
        dist.exit_now(code)
    return code


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    _safe_streams()
    try:
        app_args = _app_arguments(argv)
        if app_args is not None:
            return _open_app(app_args)
        first = next((a for a in argv if a != "--debug"), None)
        parser, fid = build_parser(first)
        args, extra = parser.parse_known_args(argv)
        if extra:
            where = f"{PROG} {args.command}" if args.command else PROG
            raise UsageError(f"unrecognized arguments: {' '.join(extra)} (see '{where} --help')")
        args.argv = argv
        debug = debug or bool(getattr(args, "debug", False))
        if args.command is None:
            return _open_app([])
        if args.command == "fid":
            return int(fid["run"](args) or 0)
        return int(args.func(args) or 0)
    except SystemExit as e:  # --help, --version, or a command that exits by itself
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except UsageError as e:
        say(f"error: {e}")
        return 2
    except Stopped as e:
        say(str(e))
        return e.code
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except Exception as e:  # noqa: BLE001 - every runtime error becomes one line (plus the traceback with --debug)
        if debug:
            traceback.print_exc()
        say(_describe_error(e, debug))
        return 1
