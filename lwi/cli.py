"""The ``lwi`` command line. See ``lwi --help`` and docs/contracts.md.

Errors the user can act on (:class:`lwi.errors.LWIError`) are printed as one sentence and give exit
code 1 (2 for bad arguments); ``--debug`` shows the traceback. With ``--progress json`` the error is
also written as a final ``{"event": "error"}`` line on stdout.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import traceback
from typing import List, Optional

from lwi import __version__
from lwi.commands import COMMANDS, DISTRIBUTED, SEVERAL_DEVICES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lwi",
        description="Learnable Weight Initialization (Kunhimon et al.) for volumetric segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"lwi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"lwi.commands.{name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP, epilog=getattr(module, "EPILOG", None))
        p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _left_to_rank0(command: str) -> bool:
    """Under torchrun, a command that runs in one process is rank 0's alone: True on the other ranks
    (they end at once); rank 0 says so. False without torchrun and for the training commands."""
    import os

    if command in DISTRIBUTED or not os.environ.get("WORLD_SIZE", "").strip():
        return False  # no torchrun: lwi.distributed (and torch) stay unimported for light commands
    from lwi import distributed

    rank = distributed.launched_rank()
    if rank is None:
        return False
    if rank == 0:
        hint = SEVERAL_DEVICES.get(command)
        print(f"lwi {command} runs in one process: under torchrun rank 0 runs it and the other "
              f"{distributed.env_world_size() - 1} process(es) end at once" + (f" ({hint})." if hint else "."),
              file=sys.stderr, flush=True)
    return rank != 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from lwi import interrupt
    from lwi.errors import LWIError
    from lwi.outputs import os_error_sentence
    from lwi.progress import close_all

    if hasattr(signal, "SIGXFSZ"):  # a file-size limit (ulimit -f): EFBIG, told in a sentence, not a core dump
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # Whatever ends the run, the progress bars are closed first: the error sentence is the last line.
    try:
        if _left_to_rank0(args.command):
            return 0
        with interrupt.handling():
            return int(args._run(args) or 0)
    except BrokenPipeError:  # output piped into `head` and the like: not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as exc:
        close_all()
        note = str(exc)
        _report_error(args, f"Interrupted. {note}" if note else "Interrupted; the command did not finish.")
        return 130
    except LWIError as exc:
        close_all()
        if getattr(args, "debug", False):
            traceback.print_exc()
        _report_error(args, str(exc))
        return 1
    except OSError as exc:  # disk full, permission denied, file vanished: the OS's reason, one sentence
        close_all()
        if getattr(args, "debug", False):
            traceback.print_exc()
        _report_error(args, os_error_sentence(exc))
        return 1
    except MemoryError:
        close_all()
        _report_error(args, "The computer ran out of memory; use a smaller --roi or batch, or a coarser grid.")
        return 1
    except Exception as exc:  # an unexpected failure: still one line unless --debug
        close_all()
        if getattr(args, "debug", False):
            traceback.print_exc()
        _report_error(args, f"Unexpected error ({type(exc).__name__}): {exc}. Run again with --debug for details.")
        return 1


def _report_error(args: argparse.Namespace, message: str) -> None:
    # Under torchrun the first rank to fail reports (lwi.distributed); not imported (torch) for other runs.
    distributed = sys.modules.get("lwi.distributed")
    if distributed is not None:
        message = distributed.failure_message(message)
        if message is None:
            return
    print(f"lwi {args.command}: error: {message}", file=sys.stderr)
    if getattr(args, "progress", None) == "json":
        import json

        print(json.dumps({"event": "error", "message": message}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
