"""`atelier` entry point: one parser, a sub-parser per suite, one error policy.

A user mistake (`AtelierError`) prints one line and exits 2; Ctrl-C exits 130
without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from atelier import __version__
from atelier.cli import demo as demo_cli
from atelier.cli import dws as dws_cli
from atelier.cli import lipsync as lipsync_cli
from atelier.cli import llm as llm_cli
from atelier.cli import sd as sd_cli
from atelier.core.errors import AtelierError
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error already printed in one line (2)
        return e.code if isinstance(e.code, int) else 2
    setup_logging(args.log_level)
    try:
        return int(args.func(args) or 0)
    except AtelierError as e:
        print(f"atelier: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("atelier: interrupted; no partial output was left under final names", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
