"""End to end: pretraining output, workers, shards + merge, packing, atomicity."""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from atelier.core.errors import AtelierError
from atelier.llm.data import handlers
from atelier.llm.data.indexed import IndexedReader
from atelier.llm.data.merge import merge

from ...conftest import write_jsonl
from .helpers import files_bytes, instruction_rows, run

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from megatron.core.datasets.indexed_dataset import IndexedDataset

KEYS3 = ["packed_input_ids", "packed_attention_mask", "packed_labels"]


def test_pretrain_matches_hf_tokenizer_and_megatron_reads_it(
    tmp_path, hf_tokenizer_dir, hf_tokenizer, texts
):
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": t, "id": i} for i, t in enumerate(texts)])
    report = run(hf_tokenizer_dir, src, tmp_path / "out", append_eod=True)
    assert (report.read, report.written, sum(report.skipped.values())) == (60, 60, 0)
    ds = IndexedDataset(str(tmp_path / "out_text_document"))
    assert ds.index.dtype == np.int32 and len(ds) == 60  # MindSpeed's int32, any vocabulary
    for i, t in enumerate(texts):
        expected = [*hf_tokenizer(t).input_ids, hf_tokenizer.eos_token_id]  # BOS from tokenizer
        assert ds[i].tolist() == expected
    assert report.tokens == sum(len(ds[i]) for i in range(60))


def test_several_json_keys_and_sentence_lists(tmp_path, hf_tokenizer_dir, hf_tokenizer):
    recs = [{"title": f"T{i}", "body": [f"first {i}.", f"second {i}."]} for i in range(5)]
    src = write_jsonl(tmp_path / "c.jsonl", recs)
    run(hf_tokenizer_dir, src, tmp_path / "o", json_keys=("title", "body"))
    title = IndexedReader.open(tmp_path / "o_title_document")
    body = IndexedReader.open(tmp_path / "o_body_document")
    assert title.num_documents == body.num_documents == 5
    assert len(body) == 10  # one sequence per sentence, two per document
    np.testing.assert_array_equal(body.doc_ends, np.arange(0, 11, 2))
    assert body[1].tolist() == hf_tokenizer("second 0.").input_ids


def test_output_identical_for_any_worker_count(tmp_path, hf_tokenizer_dir, texts, monkeypatch):
    from atelier.llm.data import sources

    monkeypatch.setattr(sources, "BLOCK_BYTES", 512)  # many chunks, so workers interleave
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts * 3])
    run(hf_tokenizer_dir, src, tmp_path / "w1", append_eod=True, workers=1)
    run(hf_tokenizer_dir, src, tmp_path / "w4", append_eod=True, workers=4)
    assert files_bytes(tmp_path / "w1", ["text"]) == files_bytes(tmp_path / "w4", ["text"])
    sg = tmp_path / "s.jsonl"
    sg.write_text(Path(__file__).parent.joinpath("sharegpt.jsonl").read_text() * 5)
    kw = dict(handler_name="SharegptStyleInstructionHandler", prompt_type="qwen")
    run(hf_tokenizer_dir, sg, tmp_path / "i1", workers=1, **kw)
    run(hf_tokenizer_dir, sg, tmp_path / "i4", workers=4, **kw)
    assert files_bytes(tmp_path / "i1", KEYS3) == files_bytes(tmp_path / "i4", KEYS3)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_shards_then_merge_equal_a_whole_run(tmp_path, hf_tokenizer_dir, texts, fmt):
    recs = [{"text": t} for t in texts]
    if fmt == "jsonl":
        src = write_jsonl(tmp_path / "c.jsonl", recs)
    else:
        src = tmp_path / "c.parquet"
        pq.write_table(pa.Table.from_pylist(recs), src, row_group_size=7)
    run(hf_tokenizer_dir, src, tmp_path / "whole", append_eod=True)
    parts = []
    for i in range(3):
        run(hf_tokenizer_dir, src, tmp_path / f"part{i}", append_eod=True, shard=i, num_shards=3)
        parts.append(str(tmp_path / f"part{i}"))
    merge(parts, str(tmp_path / "merged"))
    assert files_bytes(tmp_path / "merged", ["text"]) == files_bytes(tmp_path / "whole", ["text"])


def test_merge_directory_like_megatron(tmp_path, hf_tokenizer_dir, texts):
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts])
    (tmp_path / "shards").mkdir()
    for i in range(2):
        run(hf_tokenizer_dir, src, tmp_path / "shards" / f"s{i}", shard=i, num_shards=2)
    run(hf_tokenizer_dir, src, tmp_path / "whole")
    written = merge([str(tmp_path / "shards")], str(tmp_path / "m"))
    assert written == {str(tmp_path / "m"): 60}
    whole = files_bytes(tmp_path / "whole", ["text"])
    assert Path(f"{tmp_path}/m.bin").read_bytes() == whole["text.bin"]
    assert Path(f"{tmp_path}/m.idx").read_bytes() == whole["text.idx"]


def test_over_length_samples_are_skipped_and_counted(
    tmp_path, hf_tokenizer_dir, hf_tokenizer, texts
):
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts])
    limit = 30
    expected = sum(len(hf_tokenizer(t).input_ids) + 1 >= limit for t in texts)  # MindSpeed: >=
    assert 0 < expected < len(texts)
    r = run(hf_tokenizer_dir, src, tmp_path / "o", append_eod=True, seq_length=limit)
    assert r.skipped == Counter(too_long=expected)
    assert r.written == len(texts) - expected
    assert IndexedReader.open(tmp_path / "o_text_document").lengths.max() < limit
    assert any("too_long" in line for line in r.lines())


def test_packing_fills_rows_and_keeps_every_sample(tmp_path, hf_tokenizer_dir):
    sg = tmp_path / "s.jsonl"
    sg.write_text(Path(__file__).parent.joinpath("sharegpt.jsonl").read_text() * 4)
    kw = dict(handler_name="SharegptStyleInstructionHandler", prompt_type="qwen")
    run(hf_tokenizer_dir, sg, tmp_path / "plain", seq_length=256, **kw)
    r = run(
        hf_tokenizer_dir,
        sg,
        tmp_path / "packed",
        seq_length=256,
        pack=True,
        mask_padding=True,
        **kw,
    )
    plain = instruction_rows(tmp_path / "plain")
    packed = instruction_rows(tmp_path / "packed")
    assert r.packed_rows == len(packed) < len(plain)
    pad = -1
    found = []
    for ids, mask, labels in packed:
        assert len(ids) == len(mask) == len(labels) == 256
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()  # real tokens first, then padding
        assert (labels[n:] == -100).all()
        pad = ids[n] if n < 256 else pad
        found.append((ids[:n].tolist(), labels[:n].tolist()))
    # every sample appears exactly once, whole, in some row
    rest = Counter()
    for ids, labels in found:
        rest[(tuple(ids), tuple(labels))] += 1
    total_real = sum(len(i) for i, _ in found)
    assert total_real == sum(len(ids) for ids, _, _ in plain)
    for ids, _, labels in plain:
        hit = [k for k in rest if _contains(k, (ids.tolist(), labels.tolist()))]
        assert hit, "sample missing from packed rows"


def _contains(row, sample) -> bool:
    ids, labels = map(list, row)
    s_ids, s_labels = sample
    n = len(s_ids)
    return any(
        ids[i : i + n] == s_ids and labels[i : i + n] == s_labels for i in range(len(ids) - n + 1)
    )


def test_failed_run_keeps_old_outputs_and_leaves_no_temp(tmp_path, hf_tokenizer_dir, texts):
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts])
    run(hf_tokenizer_dir, src, tmp_path / "o")
    before = files_bytes(tmp_path / "o", ["text"])
    with src.open("a") as f:
        f.write("{not json\n")
    with pytest.raises(AtelierError, match=r"c\.jsonl: line 61: malformed JSON"):
        run(hf_tokenizer_dir, src, tmp_path / "o", append_eod=True)
    assert files_bytes(tmp_path / "o", ["text"]) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "c.jsonl",
        "o_text_document.bin",
        "o_text_document.idx",
    ]


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_line_deep_in_a_file_has_its_true_number(
    tmp_path, hf_tokenizer_dir, monkeypatch, workers
):
    """Workers read their own byte ranges and count lines from 1; the error still names the
    file's line, as one process reading it all does."""
    from atelier.llm.data import line_ranges, sources

    monkeypatch.setattr(sources, "BLOCK_BYTES", 200)
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": f"document {i}"} for i in range(300)])
    lines = src.read_text().splitlines(keepends=True)
    lines[236] = "{not json\n"
    src.write_text("".join(lines))
    assert sum(1 for _ in line_ranges.iter_chunks_at_offsets(sources.resolve_inputs(str(src)))) > 10
    with pytest.raises(AtelierError, match=r"c\.jsonl: line 237: malformed JSON"):
        run(hf_tokenizer_dir, src, tmp_path / "o", workers=workers)
    assert not (tmp_path / "o_text_document.bin").exists()


def test_interrupt_mid_run_leaves_no_final_files(tmp_path, hf_tokenizer_dir, texts, monkeypatch):
    from atelier.llm.data import sources

    monkeypatch.setattr(sources, "BLOCK_BYTES", 256)
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts])
    calls = {"n": 0}
    real = handlers.Encoder.encode

    def flaky(self, chunk):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(self, chunk)

    monkeypatch.setattr(handlers.Encoder, "encode", flaky)
    with pytest.raises(KeyboardInterrupt):
        run(hf_tokenizer_dir, src, tmp_path / "o")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]


def test_skip_bad_records_counts_and_continues(tmp_path, hf_tokenizer_dir):
    src = tmp_path / "c.jsonl"
    src.write_text(
        '{"text": "good one"}\n{broken\n{"txt": "wrong key"}\n[1, 2]\n{"text": "good two"}\n'
    )
    with pytest.raises(AtelierError, match=r"line 2: malformed JSON"):
        run(hf_tokenizer_dir, src, tmp_path / "o")
    r = run(hf_tokenizer_dir, src, tmp_path / "o", skip_bad_records=True)
    assert (r.read, r.written, r.skipped) == (5, 2, Counter(bad_record=3))


def test_formats_give_identical_datasets(tmp_path, hf_tokenizer_dir, texts):
    texts = [t for t in texts if "\n" not in t]  # one document per line in .txt
    recs = [{"text": t} for t in texts]
    write_jsonl(tmp_path / "a.jsonl", recs)
    (tmp_path / "b.json").write_text(json.dumps(recs))
    (tmp_path / "c.txt").write_text("".join(t + "\n" for t in texts))
    run(hf_tokenizer_dir, tmp_path / "a.jsonl", tmp_path / "A")
    run(hf_tokenizer_dir, tmp_path / "b.json", tmp_path / "B")
    run(hf_tokenizer_dir, tmp_path / "c.txt", tmp_path / "C")
    a = files_bytes(tmp_path / "A", ["text"])
    assert a == files_bytes(tmp_path / "B", ["text"]) == files_bytes(tmp_path / "C", ["text"])


def test_empty_input_is_an_error(tmp_path, hf_tokenizer_dir):
    (tmp_path / "e.jsonl").write_text("\n\n")
    with pytest.raises(AtelierError, match="no records found"):
        run(hf_tokenizer_dir, tmp_path / "e.jsonl", tmp_path / "o")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.jsonl"]


def test_pack_is_refused_for_pretraining(tmp_path, hf_tokenizer_dir, texts):
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts])
    with pytest.raises(AtelierError, match="--pack is for instruction"):
        run(hf_tokenizer_dir, src, tmp_path / "o", pack=True, seq_length=64)
