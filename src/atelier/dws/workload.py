"""Which columns a workload's queries join, group on or filter to constants.

A lexical reading of queries.sql, good enough to know which columns matter: `a = b` and
`USING (...)` are joins, `GROUP BY` lists of plain column names are groupings, and
`col = 'literal' | number | IN (...)` are constant filters; names are matched bare (the
last part of `t.col`), unquoted ones folded to lower case. The file is never sent to the
server. One tokenizing pass (linear in the file's size, whatever it holds: a megabyte-long
word or an unclosed quote included), then patterns over the tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from atelier.core.errors import AtelierError


@dataclass
class Workload:
    """Columns that queries join or group on, and columns they filter to a constant."""

    join: set[str] = field(default_factory=set)
    group: set[str] = field(default_factory=set)
    constant: set[str] = field(default_factory=set)

    @property
    def preferred(self) -> set[str]:
        return self.join | self.group


_TOKEN = re.compile(
    r"""
    (?P<skip>\s+|--[^\n]*|/\*.*?(?:\*/|\Z))
    |(?P<str>[EeNn]?'(?:[^']|'')*(?:'|\Z))
    |(?P<qid>"(?:[^"]|"")*(?:"|\Z))
    |(?P<num>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
    |(?P<id>[^\W\d]\w*(?:\$\w*)*)
    |(?P<op>.)
    """,
    re.X | re.S,
)
_NOT_COLUMNS = {"true", "false", "null", "and", "or", "not", "select", "where", "on"}
_GROUP_END = {"having", "order", "limit", "window", "union", "except", "intersect", "offset"}


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, value): id (folded to lower case), qid (quotes removed), str, num, op."""
    out = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or "op"
        if kind == "skip":
            continue
        v = m.group()
        if kind == "id":
            v = v.lower()
        elif kind == "qid":
            v = v[1:-1].replace('""', '"') if v.endswith('"') and len(v) > 1 else v[1:]
        out.append((kind, v))
    return out


def _name_at(toks: list[tuple[str, str]], i: int) -> tuple[str | None, int]:
    """A possibly qualified name starting at i: its last part and the index after it."""
    if i >= len(toks) or toks[i][0] not in ("id", "qid"):
        return None, i
    last, j = toks[i][1], i + 1
    while j + 1 < len(toks) and toks[j] == ("op", ".") and toks[j + 1][0] in ("id", "qid"):
        last, j = toks[j + 1][1], j + 2
    return last, j


def _group_by(toks: list[tuple[str, str]], j: int, group: set[str]) -> int:
    """Items of a GROUP BY list from j; plain (qualified) names go to `group`."""
    item: list[tuple[str, str]] = []
    depth = 0

    def plain() -> None:
        name, k = _name_at(item, 0)
        if name is not None and k == len(item):
            group.add(name)

    while j < len(toks):
        t = toks[j]
        if depth == 0 and (
            t in (("op", ")"), ("op", ";")) or (t[0] == "id" and t[1] in _GROUP_END)
        ):
            break
        depth += {("op", "("): 1, ("op", ")"): -1}.get(t, 0)
        if depth == 0 and t == ("op", ","):
            plain()
            item = []
        else:
            item.append(t)
        j += 1
    plain()
    return j


def _is_constant(toks: list[tuple[str, str]], j: int) -> bool:
    """A literal at j: 'x', 42, -42, or a list (…) starting with one."""
    if j < len(toks) and toks[j] == ("op", "("):
        j += 1
    if j < len(toks) and toks[j] == ("op", "-"):
        j += 1
    return j < len(toks) and toks[j][0] in ("str", "num")


def parse_workload(text: str) -> Workload:
    toks = _tokens(text)
    w = Workload()
    i = 0
    while i < len(toks):
        kind, val = toks[i]
        if kind == "id" and val == "using" and i + 1 < len(toks) and toks[i + 1] == ("op", "("):
            j = i + 2
            while j < len(toks) and toks[j] != ("op", ")"):
                if toks[j][0] in ("id", "qid"):
                    w.join.add(toks[j][1])
                j += 1
            i = j
            continue
        if kind == "id" and val == "group" and i + 1 < len(toks) and toks[i + 1] == ("id", "by"):
            i = _group_by(toks, i + 2, w.group)
            continue
        name, j = _name_at(toks, i)
        if name is None:
            i += 1
            continue
        if not (kind == "id" and name in _NOT_COLUMNS) and j < len(toks):
            nxt = toks[j]
            if nxt == ("op", "=") or nxt == ("id", "in"):
                if _is_constant(toks, j + 1):
                    w.constant.add(name)
                elif nxt == ("op", "="):
                    other, k = _name_at(toks, j + 1)
                    called = k < len(toks) and toks[k] == ("op", "(")
                    if (
                        other is not None
                        and not called
                        and not (toks[j + 1][0] == "id" and other in _NOT_COLUMNS)
                    ):
                        w.join |= {name, other}
        i = j
    return w


def read_workload(path: str | Path) -> Workload:
    """The workload file, refused in one line when it is not SQL text."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise AtelierError(f"--workload {path}: cannot read: {e.strerror}") from None
    nul = data.find(b"\0")
    if nul >= 0:
        raise AtelierError(
            f"--workload {path}: contains NUL bytes (first at offset {nul}): "
            "not a text file of SQL queries"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise AtelierError(
            f"--workload {path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
            f"{e.start}); convert it, e.g. iconv -f GBK -t UTF-8"
        ) from None
    return parse_workload(text)
