"""Numeric flag types, validated once at parse time, and a parser that errs in one line.

Every numeric flag of every verb takes its type from here (`Int(1)`, `Float(0, 1)`), never
plain `int`/`float`: a range check written once cannot be forgotten in one verb, and
`tests/cli` walks the whole parser tree to feed every such flag 0, -1, nan and a huge value.
The types are objects (not closures) so that sweep can read their bounds.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import NoReturn


@dataclass(frozen=True)
class Int:
    """An integer in [lo, hi] (either bound optional). Booleans and floats are refused."""

    lo: int | None = None
    hi: int | None = None

    def __call__(self, text: str) -> int:
        try:
            value = int(text.strip(), 10)
        except (ValueError, AttributeError):
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if self.lo is not None and value < self.lo:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum {self.describe()}")
        if self.hi is not None and value > self.hi:
            raise argparse.ArgumentTypeError(f"{value} is above the maximum {self.describe()}")
        return value

    def describe(self) -> str:
        lo = "-inf" if self.lo is None else str(self.lo)
        hi = "inf" if self.hi is None else str(self.hi)
        return f"(allowed: {lo} to {hi})"

    @property
    def __name__(self) -> str:  # argparse uses it in "invalid <name> value" messages
        return "whole number"


@dataclass(frozen=True)
class Float:
    """A finite number in [lo, hi]; `lo_open`/`hi_open` exclude the bound itself."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __call__(self, text: str) -> float:
        try:
            value = float(text.strip())
        except (ValueError, AttributeError):
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            raise argparse.ArgumentTypeError(f"{text} is out of range {self.describe()}")
        if self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)):
            raise argparse.ArgumentTypeError(f"{text} is out of range {self.describe()}")
        return value

    def describe(self) -> str:
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        left = "(" if self.lo_open or self.lo is None else "["
        right = ")" if self.hi_open or self.hi is None else "]"
        return f"(allowed: {left}{lo}, {hi}{right})"

    @property
    def __name__(self) -> str:
        return "number"


# The ones most flags need, named for what they mean.
POSITIVE_INT = Int(1)
NON_NEGATIVE_INT = Int(0)
PORT = Int(1, 65535)
PORT_OR_ZERO = Int(0, 65535)  # 0 = let the OS pick
SEED = Int(0, 2**32 - 1)
POSITIVE_FLOAT = Float(0, None, lo_open=True)
NON_NEGATIVE_FLOAT = Float(0)
FRACTION = Float(0, 1)
OPEN_FRACTION = Float(0, 1, lo_open=True, hi_open=True)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the verb and flag, and exit 2.

    Plain argparse prints the whole usage block first; a user scanning a job log wants the
    line that says what to fix. `--help` still prints the full usage.
    """

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"atelier: error: {self.prog}: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)
