"""How `--ray` cuts the input: byte ranges on line boundaries, without a counting pass.

A terabyte corpus cannot afford a pass that only counts records before the work starts,
nor tasks that each read the file from its beginning to find their first record. Plain
(uncompressed) JSONL/text files are therefore cut by bytes: each cut is moved forward to
the next line start, which only reads the few bytes after it. Ranges never span files and
are listed in input order, so merging their outputs in order gives a single run's bytes.
Other formats (JSON arrays, CSV, Parquet, compressed files) cannot be entered in the
middle: they are cut by record numbers as `--shard/--num-shards` cuts them.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from atelier.llm.data import sources
from atelier.llm.data.line_ranges import line_start_at_or_after, lines_before
from atelier.llm.data.sources import BLOCK_BYTES, Chunk, SourceFile, whole_lines


@dataclass(frozen=True)
class Range:
    """One Ray task's part of the input: [start, stop) of one file, in bytes or records."""

    file: int  # index into the resolved input files
    unit: Literal["bytes", "records"]
    start: int
    stop: int


def seekable_lines(src: SourceFile) -> bool:
    return sources.line_format(src) and not src.compressed


def plan_ranges(srcs: list[SourceFile], pieces: int) -> list[Range]:
    """About `pieces` ranges over all files, each file's share by its size, in input order."""
    total = max(1, sum(s.size for s in srcs))
    out: list[Range] = []
    for i, src in enumerate(srcs):
        if src.size == 0:
            continue
        k = max(1, round(pieces * src.size / total))
        if seekable_lines(src):
            cuts = sorted(
                {line_start_at_or_after(src.path, src.size * j // k, src.size) for j in range(k)}
            )
            bounds = [*cuts, src.size]
            out += [Range(i, "bytes", a, b) for a, b in itertools.pairwise(bounds) if b > a]
        else:
            n = sources.count_records(src)
            for j in range(min(k, n)):
                a, b = sources.shard_range(n, j, min(k, n))
                out.append(Range(i, "records", a, b))
    return out


def range_chunks(src: SourceFile, rng: Range) -> Iterator[Chunk]:
    """The chunks of one range, as `sources.iter_chunks` would cut them from the whole file;
    a byte range numbers its lines from 1 (see `renumbered` for an error message)."""
    if rng.unit == "records":
        yield from sources.iter_chunks([src], rng.start, rng.stop)
        return
    index, line, carry, pos = 0, 1, b"", rng.start
    with open(src.path, "rb") as f:
        f.seek(rng.start)
        while pos < rng.stop:
            block = f.read(min(BLOCK_BYTES, rng.stop - pos))
            pos += len(block)
            last = not block or pos >= rng.stop  # not block: the file shrank since the plan
            body, carry = whole_lines(carry + block, last)
            if body:
                yield Chunk(index, src.path, line, "lines", src.fmt, body, len(body))
                index += 1
                line += body.count(b"\n")
            if last:
                return


def renumbered(chunk: Chunk, src: SourceFile, rng: Range) -> Chunk:
    """The chunk with its true line numbers (byte ranges start counting at 1)."""
    if rng.unit == "records":
        return chunk
    return dataclasses.replace(chunk, first=chunk.first + lines_before(src.path, rng.start))
