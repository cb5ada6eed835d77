"""`atelier` builds its whole parser in every process (the multi-process tests start many):
building it must not import numpy, torch, OpenCV or a suite's heavy modules."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("numpy", "torch", "cv2", "atelier.lipsync.detect", "atelier.llm.train.loop")


def test_building_the_parser_imports_nothing_heavy():
    code = (
        "import sys\n"
        "from atelier.cli.main import build_parser\n"
        "build_parser()\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "", f"imported while building the parser: {out.stdout}"


def test_detector_choices_are_the_detectors_make_detector_builds():
    from atelier.cli.main import build_parser
    from atelier.lipsync import detect

    parser = build_parser()
    args = parser.parse_args(
        ["lipsync", "infer", "--checkpoint-path", "w", "--face", "f", "--audio", "a"]
    )
    assert args.detector == detect.DETECTORS[0]
    for action in _subparser(parser, "lipsync", "infer")._actions:
        if "--detector" in action.option_strings:
            assert tuple(action.choices) == detect.DETECTORS
            break
    else:
        raise AssertionError("lipsync infer has no --detector")


def _subparser(parser, *names):
    import argparse

    for name in names:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser
