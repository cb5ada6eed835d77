"""`atelier demo`: every suite's main job on bundled tiny data, no network."""

from __future__ import annotations

import argparse

from atelier.core.flags import Int


def register(suites: argparse._SubParsersAction) -> None:
    p = suites.add_parser("demo", help="run each suite on bundled sample data")
    p.add_argument("--out", default="out/demo", help="where outputs go (default out/demo)")
    p.add_argument(
        "--workers", type=Int(1, 64), default=2, help="worker processes for preprocessing"
    )
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from atelier.dws.demo import run as dws_demo
    from atelier.lipsync.demo import run as lipsync_demo
    from atelier.llm.demo import run as llm_demo
    from atelier.sd.demo import run as sd_demo

    llm_demo(args.out, workers=args.workers)
    sd_demo(args.out)
    lipsync_demo(args.out)
    dws_demo(args.out)
    return 0
