"""Streaming readers for every input format `preprocess` accepts.

Nothing here loads a whole file: line formats are read in blocks of raw bytes
(parsed later, in the workers), JSON arrays with an incremental decoder, and
columnar formats batch by batch. Every record keeps its 1-based number (the line
for line formats, the row or array element otherwise) so errors can name it.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Literal

from atelier.core.errors import AtelierError

# Longest suffix first: ".jsonl.gz" must win over ".gz".
SUFFIX_FORMATS: tuple[tuple[str, str], ...] = (
    (".jsonl.gz", "jsonl"),
    (".json.gz", "json"),
    (".jsonl", "jsonl"),
    (".json", "json"),
    (".parquet", "parquet"),
    (".csv", "csv"),
    (".txt", "text"),
    (".arrow", "arrow"),
)
BLOCK_BYTES = 4 << 20
RECORDS_PER_CHUNK = 2048


def suffix_of(path: str | Path) -> str | None:
    name = str(path).lower()
    for suffix, _ in SUFFIX_FORMATS:
        if name.endswith(suffix):
            return suffix
    return None


@dataclass(frozen=True)
class SourceFile:
    path: str
    # jsonl (also a .json of JSON lines) | json (an array) | parquet | csv | text | arrow
    fmt: str
    compressed: bool
    size: int


@dataclass
class Chunk:
    """A unit of work for an encoder: raw lines (parsed by the worker) or records."""

    index: int
    path: str
    first: int  # number of the first record in this chunk, 1-based
    kind: Literal["lines", "records"]
    fmt: str
    payload: Any  # bytes for "lines"; list of dicts for "records"; None: read at `offset`
    nbytes: int
    # where a "lines" chunk cut by `line_ranges.iter_chunks_at_offsets` starts in its file: the
    # worker reads its own bytes (`loaded`); its line numbers then count from 1
    offset: int | None = None


def resolve_inputs(spec: str) -> list[SourceFile]:
    """A file, a directory (files of its most common extension) or a glob."""
    if not spec:
        raise AtelierError("--input is empty; give a file, a directory or a glob")
    p = Path(spec)
    if p.is_file():
        paths = [p]
    elif p.is_dir():
        files = [f for f in sorted(p.rglob("*")) if f.is_file() and suffix_of(f)]
        if not files:
            known = ", ".join(s for s, _ in SUFFIX_FORMATS)
            raise AtelierError(f"--input {spec}: directory has no data files ({known})")
        common, _ = Counter(suffix_of(f) for f in files).most_common(1)[0]
        paths = [f for f in files if suffix_of(f) == common]
    else:
        paths = [Path(x) for x in sorted(glob.glob(spec, recursive=True)) if Path(x).is_file()]
        if not paths:
            raise AtelierError(f"--input {spec}: no such file, directory or matching glob")
    out = []
    for f in paths:
        suffix = suffix_of(f)
        if suffix is None:
            known = ", ".join(s for s, _ in SUFFIX_FORMATS)
            raise AtelierError(f"{f}: unknown input format; use one of {known}")
        fmt = dict(SUFFIX_FORMATS)[suffix]
        src = SourceFile(str(f), fmt, suffix.endswith(".gz"), f.stat().st_size)
        if fmt == "json" and not _is_json_array(src):  # decided once, by peeking at the file
            src = replace(src, fmt="jsonl")
        out.append(src)
    return out


class _CheckedGzip(gzip.GzipFile):
    """A gzip reader whose corrupt or truncated input is a one-line error naming the file."""

    def _checked(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            why = "truncated" if isinstance(e, EOFError) else "not gzip data or corrupt"
            raise AtelierError(
                f"{self.name}: {why} ({e}); re-download or re-compress it, or rename it "
                "without .gz if it is not compressed"
            ) from None

    def read(self, size: int | None = -1) -> bytes:
        return self._checked(super().read, size)

    def read1(self, size: int = -1) -> bytes:
        return self._checked(super().read1, size)

    def readinto(self, b: Any) -> int:
        return self._checked(super().readinto, b)

    def peek(self, n: int) -> bytes:
        return self._checked(super().peek, n)


def _open_binary(src: SourceFile) -> BinaryIO:
    if src.compressed:
        return _CheckedGzip(src.path, "rb")  # type: ignore[return-value]
    return open(src.path, "rb")


def _is_json_array(src: SourceFile) -> bool:
    with _open_binary(src) as f:
        while True:
            block = f.read(4096)
            if not block:
                return False
            stripped = block.lstrip()
            if stripped:
                # A UTF-8 byte-order mark is not whitespace to bytes.lstrip.
                stripped = stripped.removeprefix(b"\xef\xbb\xbf").lstrip()
                if stripped:
                    return stripped[:1] == b"["


def line_format(src: SourceFile) -> bool:
    return src.fmt in ("jsonl", "text")


def count_records(src: SourceFile) -> int:
    """How many records (line slots, rows, elements) a file holds, read cheaply."""
    if line_format(src):
        n, last = 0, b"\n"
        with _open_binary(src) as f:
            while block := f.read(BLOCK_BYTES):
                n += block.count(b"\n")
                last = block[-1:]
        return n + (last != b"\n")
    if src.fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(src.path).metadata.num_rows
    return sum(1 for _ in _iter_records(src, 0, None))


# ---------------------------------------------------------------- line formats


def whole_lines(data: bytes, last: bool) -> tuple[bytes, bytes]:
    """(the whole lines of `data`, the rest to carry into the next block); at the `last`
    block the final line is whole too, its newline added."""
    if last:
        return (data + b"\n" if data and not data.endswith(b"\n") else data), b""
    cut = data.rfind(b"\n")
    return data[: cut + 1], data[cut + 1 :]


def _iter_line_chunks(src: SourceFile, skip: int, take: int | None) -> Iterator[tuple[int, bytes]]:
    """Yield (number of first line, bytes of whole lines), honouring skip/take in lines."""
    lineno = 1
    remaining = take
    carry = b""
    with _open_binary(src) as f:
        while True:
            block = f.read(BLOCK_BYTES)
            eof = not block
            body, carry = whole_lines(carry + block, eof)
            if body:
                n = body.count(b"\n")
                if skip:
                    if skip >= n:
                        skip -= n
                        lineno += n
                        body = b""
                    else:
                        pos = 0
                        for _ in range(skip):
                            pos = body.index(b"\n", pos) + 1
                        body = body[pos:]
                        lineno += skip
                        n -= skip
                        skip = 0
                if body:
                    if remaining is not None and n > remaining:
                        pos = 0
                        for _ in range(remaining):
                            pos = body.index(b"\n", pos) + 1
                        body, n = body[:pos], remaining
                    if n:
                        yield lineno, body
                        lineno += n
                    if remaining is not None:
                        remaining -= n
                        if remaining <= 0:
                            return
            if eof:
                return


# ---------------------------------------------------------------- record formats
# Each iterator yields (number, record, bytes_done): bytes_done estimates how far
# into the file the reader is, for the progress bar.


def _iter_json_array(src: SourceFile) -> Iterator[tuple[int, Any, int]]:
    """Elements of a top-level JSON array, decoded incrementally."""
    decoder = json.JSONDecoder()
    with open(src.path, "rb") as disk:
        raw: BinaryIO = (
            _CheckedGzip(filename=src.path, fileobj=disk) if src.compressed else disk  # type: ignore[assignment]
        )
        f = io.TextIOWrapper(raw, encoding="utf-8-sig")
        buf = f.read(1 << 20)
        pos = len(buf) - len(buf.lstrip())
        if buf[pos : pos + 1] != "[":
            raise AtelierError(f"{src.path}: expected a JSON array of records or JSON lines")
        pos += 1
        number = 0
        eof = False
        while True:
            while True:  # skip whitespace and separators, refilling as needed
                while pos < len(buf) and buf[pos] in " \t\r\n,":
                    pos += 1
                if pos < len(buf) or eof:
                    break
                more = f.read(1 << 20)
                eof = not more
                buf, pos = buf[pos:] + more, 0
            if pos >= len(buf):
                raise AtelierError(f"{src.path}: JSON array is not closed with ']' (truncated?)")
            if buf[pos] == "]":
                return
            while True:
                try:
                    obj, end = decoder.raw_decode(buf, pos)
                    break
                except json.JSONDecodeError as e:
                    if eof:
                        raise AtelierError(
                            f"{src.path}: record {number + 1}: malformed JSON ({e.msg}); fix the "
                            "file (--skip-bad-records cannot resynchronise inside an array)"
                        ) from None
                    more = f.read(max(1 << 20, len(buf)))
                    eof = not more
                    buf, pos = buf[pos:] + more, 0
            number += 1
            yield number, obj, disk.tell()
            buf, pos = buf[end:], 0


def _iter_csv(src: SourceFile) -> Iterator[tuple[int, Any, int]]:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    try:
        reader = pcsv.open_csv(
            src.path,
            read_options=pcsv.ReadOptions(block_size=1 << 22),
            convert_options=pcsv.ConvertOptions(strings_can_be_null=False),
        )
    except pa.ArrowInvalid as e:
        raise AtelierError(f"{src.path}: not a readable CSV ({e})") from None
    number = 0
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as e:
            raise AtelierError(f"{src.path}: after row {number}: malformed CSV ({e})") from None
        for row in batch.to_pylist():
            number += 1
            yield number, row, 0


def _iter_columnar(src: SourceFile) -> Iterator[tuple[int, Any, int]]:
    import pyarrow as pa

    total_rows = 0
    if src.fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(src.path)
        except (pa.ArrowInvalid, OSError) as e:
            raise AtelierError(f"{src.path}: not a readable Parquet file ({e})") from None
        total_rows = pf.metadata.num_rows
        batches: Iterator[Any] = pf.iter_batches(batch_size=1024)
    else:
        batches = _iter_arrow_batches(src)
    number = 0
    for batch in batches:
        for row in batch.to_pylist():
            number += 1
            yield number, row, (src.size * number // total_rows if total_rows else 0)


def _iter_arrow_batches(src: SourceFile) -> Iterator[Any]:
    """Record batches of an Arrow IPC file, or of a stream (as `datasets` saves them)."""
    import pyarrow as pa

    with pa.memory_map(src.path, "r") as source:
        try:
            reader = pa.ipc.open_file(source)
        except pa.ArrowInvalid:
            reader = None
        if reader is not None:
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)
            return
        source.seek(0)
        try:
            stream = pa.ipc.open_stream(source)
        except pa.ArrowInvalid as e:
            raise AtelierError(f"{src.path}: not an Arrow IPC file or stream ({e})") from None
        yield from stream


def _iter_records(src: SourceFile, skip: int, take: int | None) -> Iterator[tuple[int, Any, int]]:
    """Records of the non-line formats, with skip/take counted in records."""
    it = (
        _iter_json_array(src)
        if src.fmt == "json"
        else (_iter_csv(src) if src.fmt == "csv" else _iter_columnar(src))
    )
    for number, rec, done in it:
        if number <= skip:
            continue
        if take is not None and number > skip + take:
            return
        yield number, rec, done


# ---------------------------------------------------------------- chunking


def iter_chunks(
    sources: list[SourceFile], start: int = 0, stop: int | None = None
) -> Iterator[Chunk]:
    """Chunks covering global records [start, stop) across `sources`, in order.

    Records are counted (cheaply) only when a range is asked for, i.e. for shards.
    """
    index = 0
    offset = 0  # global number of records before the current file
    ranged = start > 0 or stop is not None
    for src in sources:
        if stop is not None and offset >= stop:
            return
        skip = max(0, start - offset)
        take: int | None = None
        if ranged:
            n = count_records(src)
            take = (n if stop is None else min(n, stop - offset)) - skip
            offset += n
            if take <= 0:
                continue
        if line_format(src):
            for first, body in _iter_line_chunks(src, skip, take):
                yield Chunk(index, src.path, first, "lines", src.fmt, body, len(body))
                index += 1
            continue
        batch: list[Any] = []
        first, reported, done = skip + 1, 0, 0
        for number, rec, done in _iter_records(src, skip, take):
            if not batch:
                first = number
            batch.append(rec)
            if len(batch) >= RECORDS_PER_CHUNK:
                yield Chunk(index, src.path, first, "records", src.fmt, batch, done - reported)
                index, reported, batch = index + 1, done, []
        if batch or reported < src.size:
            # the last chunk also accounts for bytes no estimate covered (csv, arrow)
            yield Chunk(index, src.path, first, "records", src.fmt, batch, src.size - reported)
            index += 1


def shard_range(total: int, shard: int, num_shards: int) -> tuple[int, int]:
    """Contiguous record range of one shard, so merged shards equal a whole run."""
    return total * shard // num_shards, total * (shard + 1) // num_shards


def count_total(sources: list[SourceFile]) -> int:
    return sum(count_records(s) for s in sources)


def total_bytes(srcs: list[SourceFile]) -> int:
    return sum(s.size for s in srcs)
