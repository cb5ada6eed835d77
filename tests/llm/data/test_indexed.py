"""Our writer and reader against megatron-core's builder and dataset, byte for byte."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from atelier.core.atomic import commit_files
from atelier.core.errors import AtelierError
from atelier.llm.data.indexed import IndexedReader, IndexedWriter, optimal_dtype

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder


def _docs(seed: int, n: int, high: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, high, size=int(rng.integers(1, 50))) for _ in range(n)]


def _ours(prefix, docs, dtype, per_doc=None):
    w = IndexedWriter(prefix, dtype)
    if per_doc is None:
        w.add_documents(np.concatenate(docs), np.array([len(d) for d in docs]))
    else:
        w.add_documents(np.concatenate(docs), np.array([len(d) for d in docs]), per_doc)
    commit_files(w.finish())


@pytest.mark.parametrize("vocab", [1000, 70000])
def test_bytes_identical_to_megatron_builder(tmp_path, vocab):
    docs = _docs(0, 40, vocab)
    dtype = optimal_dtype(vocab)
    assert dtype == (np.uint16 if vocab < 65500 else np.int32)
    _ours(tmp_path / "ours", docs, dtype)
    ref = IndexedDatasetBuilder(str(tmp_path / "ref.bin"), dtype=dtype)
    for d in docs:
        ref.add_item(torch.tensor(d))
        ref.end_document()
    ref.finalize(str(tmp_path / "ref.idx"))
    for ext in ("bin", "idx"):
        assert (tmp_path / f"ours.{ext}").read_bytes() == (tmp_path / f"ref.{ext}").read_bytes()


def test_multi_sequence_documents_match_add_document(tmp_path):
    seqs = _docs(1, 12, 500)
    per_doc = np.array([3, 1, 4, 2, 2])
    _ours(tmp_path / "ours", seqs, np.uint16, per_doc)
    ref = IndexedDatasetBuilder(str(tmp_path / "ref.bin"), dtype=np.uint16)
    i = 0
    for n in per_doc:
        part = seqs[i : i + n]
        ref.add_document(np.concatenate(part), [len(p) for p in part])
        i += n
    ref.finalize(str(tmp_path / "ref.idx"))
    for ext in ("bin", "idx"):
        assert (tmp_path / f"ours.{ext}").read_bytes() == (tmp_path / f"ref.{ext}").read_bytes()


def test_megatron_reads_ours_and_we_read_megatron(tmp_path):
    docs = _docs(2, 25, 3000)
    _ours(tmp_path / "ours", docs, np.uint16)
    ds = IndexedDataset(str(tmp_path / "ours"))
    assert len(ds) == len(docs)
    for i, d in enumerate(docs):
        np.testing.assert_array_equal(ds[i], d)
    np.testing.assert_array_equal(ds.document_indices, np.arange(len(docs) + 1))
    ours = IndexedReader.open(tmp_path / "ours")
    assert ours.num_documents == len(docs) and ours.num_tokens == sum(map(len, docs))
    for i, d in enumerate(docs):
        np.testing.assert_array_equal(ours[i], d)


def test_truncated_or_foreign_index_is_named(tmp_path):
    _ours(tmp_path / "d", _docs(3, 5, 100), np.uint16)
    idx = tmp_path / "d.idx"
    idx.write_bytes(idx.read_bytes()[:-8])
    with pytest.raises(AtelierError, match="truncated index"):
        IndexedReader.open(tmp_path / "d")
    idx.write_bytes(b"nonsense" * 10)
    with pytest.raises(AtelierError, match="bad magic"):
        IndexedReader.open(tmp_path / "d")
    with pytest.raises(AtelierError, match="not found"):
        IndexedReader.open(tmp_path / "missing")


def test_abort_leaves_nothing(tmp_path):
    w = IndexedWriter(tmp_path / "x", np.int32)
    w.add_sequence(np.arange(5))
    w.abort()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kernel_copy", [True, False])
def test_append_raw_with_and_without_copy_file_range(tmp_path, monkeypatch, kernel_copy):
    """The merge's kernel-side copy and its read/write fallback give the same bytes as
    writing all documents at once (documents written after an append included)."""
    import errno
    import os

    if not kernel_copy:

        def refuse(*a, **k):
            raise OSError(errno.EXDEV, "cross-device")

        monkeypatch.setattr(os, "copy_file_range", refuse, raising=False)
    docs = _docs(3, 30, 1000)
    _ours(tmp_path / "whole", docs, np.int32)
    _ours(tmp_path / "a", docs[:10], np.int32)
    _ours(tmp_path / "b", docs[10:25], np.int32)
    w = IndexedWriter(tmp_path / "m", np.int32)
    for p in ("a", "b"):
        r = IndexedReader.open(tmp_path / p)
        w.append_raw(tmp_path / f"{p}.bin", r.lengths, r.doc_ends)
    w.add_documents(np.concatenate(docs[25:]), np.array([len(d) for d in docs[25:]]))
    commit_files(w.finish())
    for ext in ("bin", "idx"):
        assert (tmp_path / f"m.{ext}").read_bytes() == (tmp_path / f"whole.{ext}").read_bytes()
