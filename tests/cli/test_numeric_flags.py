"""Every numeric flag of every verb: validated at parse time, one line, exit 2.

The sweep walks the real parser tree, so a flag added later is covered without editing this
file, and a flag declared with plain `int`/`float` fails the structural test.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time

import pytest

from atelier.cli.main import build_parser
from atelier.core.flags import Float, Int

SWEEP_VALUES = ("0", "-1", "nan", "inf", "1e400", "99999999999999999999999", "abc", "")


def _verbs(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for sub in subs:
        for name, child in sub.choices.items():
            yield from _verbs(child, (*path, name))


def _numeric_actions():
    seen = set()
    for path, parser in _verbs(build_parser()):
        for action in parser._actions:
            if not action.option_strings or not isinstance(action.type, Int | Float):
                continue
            key = (path, action.dest)
            if key in seen:
                continue
            seen.add(key)
            yield path, parser, action


NUMERIC = list(_numeric_actions())


def test_no_numeric_flag_bypasses_core_flags():
    loose = [
        f"atelier {' '.join(path)} {a.option_strings[0]}"
        for path, parser in _verbs(build_parser())
        for a in parser._actions
        if a.type in (int, float)
    ]
    assert not loose, f"numeric flags typed int/float instead of core.flags: {loose}"
    assert len(NUMERIC) > 30


@pytest.mark.parametrize(
    "path,action",
    [(p, a) for p, _, a in NUMERIC],
    ids=[f"{'-'.join(p)}:{a.option_strings[0]}" for p, _, a in NUMERIC],
)
def test_sweep_rejects_out_of_range_in_one_line(path, action, capsys):
    for value in SWEEP_VALUES:
        nargs = action.nargs if isinstance(action.nargs, int) else 1
        argv = [*path, action.option_strings[0], *([value] * nargs)]
        started = time.monotonic()
        try:
            args = build_parser().parse_known_args(argv)[0]
        except SystemExit as e:
            err = capsys.readouterr().err
            assert e.code == 2, (argv, err)
            lines = err.strip().splitlines()
            # a missing required flag of the verb is also a one-line error; it must name
            # what is wrong, not print the usage block
            assert len(lines) == 1 and lines[0].startswith("atelier: error:"), (argv, err)
            assert "Traceback" not in err
        else:
            got = getattr(args, action.dest)
            for v in got if isinstance(got, list) else [got]:
                assert isinstance(v, int | float) and not isinstance(v, bool), (argv, v)
                assert math.isfinite(v), (argv, v)
                t = action.type
                assert t.lo is None or v >= t.lo, (argv, v)
                assert t.hi is None or v <= t.hi, (argv, v)
        assert time.monotonic() - started < 5


def test_required_numeric_values_are_type_checked_before_required_flags(capsys):
    # nan to a flag with required siblings still names the flag that is wrong
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(
            ["lipsync", "infer", "--fps", "nan", "--checkpoint-path", "x", "--face", "f"]
        )
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--fps" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv",
    [
        [
            "lipsync",
            "infer",
            "--checkpoint-path",
            "c",
            "--face",
            "f",
            "--audio",
            "a",
            "--fps",
            "-5",
        ],
        [
            "lipsync",
            "preprocess",
            "--data-root",
            "d",
            "--preprocessed-root",
            "p",
            "--batch-size",
            "0",
        ],
        ["sd", "serve", "--model", "m", "--port", "99999"],
        ["dws", "skew", "--file", "x.csv", "--statement-timeout", "nan"],
    ],
)
def test_console_script_one_line_exit_2(argv):
    started = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "atelier", *argv], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert time.monotonic() - started < 60
