"""Index caches: written once, atomically, where megatron-core puts them; reused on a match."""

from __future__ import annotations

import numpy as np
import pytest

from atelier.llm.train.data import DataSpec, build_datasets
from atelier.llm.train.data import pretrain as pretrain_module

from .helpers import EOD, write_instruction, write_pretraining


def _files(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def _no_rebuild(*args, **kwargs):
    raise AssertionError("the cache should have been reused")


def test_written_next_to_the_data_and_reused(tmp_path, monkeypatch):
    p = tmp_path / "c_text_document"
    write_pretraining(p, seed=0, n_docs=40)
    spec = DataSpec(str(p), "90,10,0", 8, 5, eod_id=EOD)
    first = build_datasets(spec, [30, 4, 0])
    folder = tmp_path / "c_text_document" / "cache" / "GPTDataset_indices"
    names = _files(folder)
    assert len(names) == 8  # 2 splits x (description + 3 arrays)
    assert not [n for n in _files(tmp_path) if n.endswith(".partial")]
    monkeypatch.setattr(pretrain_module, "gpt_indices", _no_rebuild)
    again = build_datasets(spec, [30, 4, 0])
    for a, b in zip(first[:2], again[:2], strict=True):
        assert isinstance(b.shuffle_index, np.memmap)
        for i in range(len(a)):
            np.testing.assert_array_equal(a[i]["tokens"], b[i]["tokens"])
    assert _files(folder) == names
    with pytest.raises(AssertionError, match="reused"):  # other parameters: other files
        build_datasets(DataSpec(str(p), "90,10,0", 8, 6, eod_id=EOD), [30, 4, 0])
    with pytest.raises(AssertionError, match="reused"):
        build_datasets(spec, [31, 4, 0])


def test_rewritten_data_is_not_served_a_stale_cache(tmp_path, monkeypatch):
    p = tmp_path / "c_text_document"
    write_pretraining(p, seed=0, n_docs=40)
    spec = DataSpec(str(p), "1", 8, 5, eod_id=EOD)
    build_datasets(spec, [10, 0, 0])
    write_pretraining(p, seed=1, n_docs=40)  # same prefix, other documents
    monkeypatch.setattr(pretrain_module, "gpt_indices", _no_rebuild)
    with pytest.raises(AssertionError, match="reused"):
        build_datasets(spec, [10, 0, 0])


def test_data_cache_path_and_blend_cache(tmp_path):
    a, b = tmp_path / "a_text_document", tmp_path / "b_text_document"
    write_pretraining(a, seed=0, n_docs=30)
    write_pretraining(b, seed=1, n_docs=30)
    cache = tmp_path / "cache"
    spec = DataSpec(f"1 {a} 2 {b}", "1", 8, 5, eod_id=EOD, data_cache_path=str(cache))
    train, _, _ = build_datasets(spec, [20, 0, 0])
    names = _files(cache)
    assert sum("GPTDataset-train" in n for n in names) == 8
    assert sum("BlendedDataset-train" in n for n in names) == 3
    assert not (a / "cache").exists()
    again, _, _ = build_datasets(spec, [20, 0, 0])
    np.testing.assert_array_equal(train.which, again.which)
    assert _files(cache) == names


def test_instruction_cache(tmp_path):
    write_instruction(tmp_path / "sft", [([5, 6, EOD], [-100, 6, EOD])] * 7)
    spec = DataSpec(str(tmp_path / "sft"), "1", 8, 5, is_instruction=True, eod_id=EOD)
    train, _, _ = build_datasets(spec, [10, 0, 0])
    folder = tmp_path / "sft_packed_input_ids_document" / "cache"
    assert len(_files(folder)) == 2
    assert len(train) == 14
