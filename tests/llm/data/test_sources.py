"""Every input format yields the same records, streamed, with record numbers."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from atelier.core.errors import AtelierError
from atelier.llm.data import line_ranges, sources
from atelier.llm.data.handlers import iter_records

RECORDS = [
    {"text": f'document number {i}, with "quotes", commas\nand a newline'} for i in range(57)
]


def _records(path: str, start: int = 0, stop: int | None = None) -> list:
    out = []
    for chunk in sources.iter_chunks(sources.resolve_inputs(path), start, stop):
        out += [(n, r) for n, r in iter_records(chunk, "text")]
    return out


def _write_all(tmp_path) -> dict[str, str]:
    table = pa.Table.from_pylist(RECORDS)
    paths = {}
    p = tmp_path / "a.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    paths["jsonl"] = str(p)
    p = tmp_path / "b.json"
    p.write_text(json.dumps(RECORDS, indent=2))
    paths["json-array"] = str(p)
    p = tmp_path / "c.json"
    p.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    paths["json-lines"] = str(p)
    p = tmp_path / "d.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in RECORDS)
    paths["jsonl.gz"] = str(p)
    p = tmp_path / "e.parquet"
    pq.write_table(table, p, row_group_size=10)
    paths["parquet"] = str(p)
    p = tmp_path / "f.csv"
    pcsv.write_csv(table, p)
    paths["csv"] = str(p)
    p = tmp_path / "g.arrow"
    with pa.ipc.new_file(p, table.schema) as w:
        for batch in table.to_batches(max_chunksize=20):
            w.write_batch(batch)
    paths["arrow-file"] = str(p)
    (tmp_path / "stream").mkdir()
    p = tmp_path / "stream" / "h.arrow"  # `datasets` saves Arrow IPC streams
    with pa.ipc.new_stream(p, table.schema) as w:
        w.write_table(table)
    paths["arrow-stream"] = str(p)
    return paths


def test_every_format_gives_the_same_records(tmp_path):
    for fmt, path in _write_all(tmp_path).items():
        got = [r for _, r in _records(path)]
        assert got == RECORDS, fmt


def test_shards_partition_the_records(tmp_path):
    for fmt, path in _write_all(tmp_path).items():
        total = sources.count_total(sources.resolve_inputs(path))
        assert total == len(RECORDS), fmt
        joined = []
        for shard in range(4):
            start, stop = sources.shard_range(total, shard, 4)
            joined += [r for _, r in _records(path, start, stop)]
        assert joined == RECORDS, fmt


def test_text_lines_and_numbers(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("first doc\n\nthird line doc\r\nlast without newline")
    got = _records(str(p))
    assert got == [
        (1, {"text": "first doc"}),
        (3, {"text": "third line doc"}),
        (4, {"text": "last without newline"}),
    ]


def test_line_chunks_split_on_line_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "BLOCK_BYTES", 37)  # force many tiny blocks
    p = tmp_path / "a.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    got = _records(str(p))
    assert [r for _, r in got] == RECORDS
    assert [n for n, _ in got] == list(range(1, len(RECORDS) + 1))
    start, stop = sources.shard_range(len(RECORDS), 1, 3)
    assert [n for n, _ in _records(str(p), start, stop)] == list(range(start + 1, stop + 1))


def test_directory_takes_most_common_extension_and_glob(tmp_path):
    for i in range(3):
        (tmp_path / f"part{i}.jsonl").write_text(json.dumps({"text": str(i)}) + "\n")
    (tmp_path / "notes.txt").write_text("not data\n")
    found = sources.resolve_inputs(str(tmp_path))
    assert [s.path.rsplit("/", 1)[1] for s in found] == [
        "part0.jsonl",
        "part1.jsonl",
        "part2.jsonl",
    ]
    assert len(sources.resolve_inputs(str(tmp_path / "part*.jsonl"))) == 3


def test_bad_inputs(tmp_path):
    with pytest.raises(AtelierError, match="no such file"):
        sources.resolve_inputs(str(tmp_path / "nope.jsonl"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(AtelierError, match="no data files"):
        sources.resolve_inputs(str(tmp_path / "empty"))
    (tmp_path / "x.xml").write_text("<a/>")
    with pytest.raises(AtelierError, match="unknown input format"):
        sources.resolve_inputs(str(tmp_path / "x.xml"))
    bad = tmp_path / "bad.json"
    bad.write_text('[{"text": "a"}, {"text": ')
    with pytest.raises(AtelierError, match="record 2: malformed JSON"):
        _records(str(bad))
    obj = tmp_path / "obj.json"
    obj.write_text('  {"text": "a"}\n')  # a single object is JSON lines with one record
    assert [r for _, r in _records(str(obj))] == [{"text": "a"}]


@pytest.mark.parametrize("tail", ["\n", ""], ids=["newline-at-end", "no-newline-at-end"])
def test_offset_chunks_cover_the_file_on_line_starts(tmp_path, monkeypatch, tail):
    """Cut by bytes without being read here; read back by the worker, they are the file."""
    monkeypatch.setattr(sources, "BLOCK_BYTES", 100)
    lines = [json.dumps({"text": "x" * (i * 7 % 230)}) for i in range(40)]  # some > 100 B
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(lines) + tail)
    chunks = list(line_ranges.iter_chunks_at_offsets(sources.resolve_inputs(str(path))))
    assert [c.index for c in chunks] == list(range(len(chunks))) and len(chunks) > 5
    assert all(c.payload is None for c in chunks)  # nothing read in the planning process
    data = path.read_bytes()
    pos = 0
    for c in chunks:
        assert c.offset == pos and (pos == 0 or data[pos - 1 : pos] == b"\n")
        pos += c.nbytes
    assert pos == len(data)
    joined = b"".join(line_ranges.loaded(c).payload for c in chunks)
    assert joined == (data if tail else data + b"\n")
    got = [r for c in chunks for _, r in iter_records(line_ranges.loaded(c), "text")]
    assert got == [r for _, r in _records(str(path))]


def test_offset_chunks_leave_compressed_and_array_files_to_iter_chunks(tmp_path):
    gz = tmp_path / "a.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in RECORDS)
    arr = tmp_path / "b.json"
    arr.write_text(json.dumps(RECORDS))
    for p in (gz, arr):
        chunks = list(line_ranges.iter_chunks_at_offsets(sources.resolve_inputs(str(p))))
        assert all(c.offset is None and c.payload is not None for c in chunks)
        assert [r for c in chunks for _, r in iter_records(c, "text")] == RECORDS
