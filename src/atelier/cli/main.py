"""`atelier` entry point: one parser, a sub-parser per suite, one error policy.

A user mistake (`AtelierError`) prints one line and exits 2; so does an OS error
the environment caused (full disk, read-only or foreign folder, a path through a
file: `core.errors.from_os_error`). Ctrl-C exits 130 without a traceback; a
closed stdout (`atelier ... | head`) exits quietly like other Unix tools; SIGTERM
unwinds like Ctrl-C (exit 143) so temporaries are removed; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Sequence

from atelier import __version__
from atelier.cli import demo as demo_cli
from atelier.cli import doctor as doctor_cli
from atelier.cli import dws as dws_cli
from atelier.cli import lipsync as lipsync_cli
from atelier.cli import llm as llm_cli
from atelier.cli import sd as sd_cli
from atelier.core.errors import AtelierError, from_os_error
from atelier.core.flags import OneLineParser
from atelier.core.log import setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="atelier",
        description="LLM data and checkpoints, SDXL serving, Wav2Lip and MPP skew advice.",
    )
    parser.add_argument("--version", action="version", version=f"atelier {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    suites = parser.add_subparsers(dest="suite", metavar="SUITE", required=True)
    llm_cli.register(suites)
    sd_cli.register(suites)
    lipsync_cli.register(suites)
    dws_cli.register(suites)
    demo_cli.register(suites)
    doctor_cli.register(suites)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        rc = _main(argv)
        sys.stdout.flush()  # a closed pipe surfaces here (also after --help), not at exit
        return rc
    except BrokenPipeError:
        return _stdout_gone()


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler preempting the job): unwound like Ctrl-C, so every
    temporary is removed on the way out instead of being left for the next run."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error already printed in one line (2)
        return e.code if isinstance(e.code, int) else 2
    setup_logging(args.log_level)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        rc = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe surfaces here, not at interpreter exit
        return rc
    except AtelierError as e:
        return _fail(str(e), e.exit_code)
    except BrokenPipeError:
        return _stdout_gone()
    except OSError as e:
        mapped = from_os_error(e)
        if mapped is None:
            raise
        return _fail(str(mapped), mapped.exit_code)
    except KeyboardInterrupt as e:
        what, code = ("terminated", 143) if isinstance(e, Terminated) else ("interrupted", 130)
        with contextlib.suppress(BrokenPipeError):
            print(f"atelier: {what}; no partial output was left under final names", file=sys.stderr)
        return code


def _fail(message: str, code: int) -> int:
    with contextlib.suppress(BrokenPipeError):
        print(f"atelier: error: {message}", file=sys.stderr)
    return code


def _stdout_gone() -> int:
    """The reader of stdout left (`| head`): stop quietly, 128 + SIGPIPE like a shell."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141


if __name__ == "__main__":
    raise SystemExit(main())
