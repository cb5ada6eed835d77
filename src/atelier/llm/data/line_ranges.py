"""Plain JSON-lines and text files cut by bytes, on line starts, without reading them.

Why: a terabyte corpus cannot afford a pass that only counts lines before the work starts,
and with a fast encoder even one main process reading every byte and piping it to the
workers is a quarter of a run's CPU. A cut moves forward to the next line start, which
reads only the bytes up to it; the worker then reads its own range (`loaded`). Lines of
such a range count from 1; `lines_before` gives the file's numbering for an error message.
Used by `preprocess` (a range per chunk) and by `--ray` (ray_ranges.py, a range per shard).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from atelier.llm.data import sources
from atelier.llm.data.sources import Chunk, SourceFile, whole_lines


def iter_chunks_at_offsets(srcs: list[SourceFile]) -> Iterator[Chunk]:
    """All chunks of `srcs`, in order, as `iter_chunks` gives them; but a plain (not
    compressed) JSON-lines or text file is cut into byte ranges on line starts, without
    reading it here: each worker reads its own chunk (`loaded`).

    Why: with a fast encoder, the main process reading every byte and pickling it through
    a pipe to a worker (who unpickles it) took a quarter of the run's CPU; a cut only reads
    the bytes up to the next line start.
    """
    index = 0
    for src in srcs:
        if not sources.line_format(src) or src.compressed:
            for chunk in sources.iter_chunks([src]):
                yield replace(chunk, index=index)
                index += 1
            continue
        start = 0
        while start < src.size:
            stop = line_start_at_or_after(src.path, start + sources.BLOCK_BYTES, src.size)
            yield Chunk(index, src.path, 1, "lines", src.fmt, None, stop - start, offset=start)
            index, start = index + 1, stop


def line_start_at_or_after(path: str, pos: int, size: int) -> int:
    """The first offset >= pos where a line starts (or `size`): reads only to that line's end."""
    if pos <= 0:
        return 0
    if pos >= size:
        return size
    with open(path, "rb") as f:
        f.seek(pos - 1)
        at = pos - 1
        while block := f.read(64 << 10):
            cut = block.find(b"\n")
            if cut >= 0:
                return min(at + cut + 1, size)
            at += len(block)
    return size


def loaded(chunk: Chunk) -> Chunk:
    """`chunk` with its bytes, read now when it was planned at an offset."""
    if chunk.payload is not None or chunk.offset is None:
        return chunk
    with open(chunk.path, "rb") as f:
        f.seek(chunk.offset)
        data = f.read(chunk.nbytes)
    body, _ = whole_lines(data, True)  # the file's last line may lack its newline
    return replace(chunk, payload=body)


def lines_before(path: str, offset: int) -> int:
    """Lines in the file before byte `offset` (for a line number in an error message)."""
    n, left = 0, offset
    with open(path, "rb") as f:
        while left > 0 and (block := f.read(min(sources.BLOCK_BYTES, left))):
            n += block.count(b"\n")
            left -= len(block)
    return n
