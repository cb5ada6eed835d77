"""Bad input: one AtelierError line naming the parameter or file, never a hang or traceback."""

from __future__ import annotations

import os

import numpy as np
import pytest

from atelier.core.errors import AtelierError
from atelier.llm.train.data import DataSpec, build_datasets, check_positions, check_vocab
from atelier.llm.train.data.spec import parse_blend, split_weights

from .helpers import EOD, VOCAB, write_instruction, write_pretraining


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_missing_prefix_names_files_and_preprocess(tmp_path):
    p = tmp_path / "corpus"
    with pytest.raises(AtelierError) as e:
        build_datasets(DataSpec(str(p)), [1, 0, 0])
    msg = _one_line(e)
    assert f"{p}.bin" in msg and f"{p}.idx" in msg
    assert "atelier llm preprocess" in msg and "--output-prefix" in msg
    assert "_text_document" in msg and "is_instruction" in msg


def test_missing_instruction_prefix(tmp_path):
    p = tmp_path / "sft"
    with pytest.raises(AtelierError) as e:
        build_datasets(DataSpec(str(p), is_instruction=True), [1, 0, 0])
    msg = _one_line(e)
    assert f"{p}_packed_input_ids_document.bin" in msg and "--handler-name" in msg


def test_text_document_hint(tmp_path):
    write_pretraining(tmp_path / "corpus_text_document", seed=0, n_docs=5)
    with pytest.raises(AtelierError, match=r"did you mean .*corpus_text_document"):
        build_datasets(DataSpec(str(tmp_path / "corpus")), [1, 0, 0])


def test_instruction_flag_on_pretraining_data_and_vice_versa(tmp_path):
    write_pretraining(tmp_path / "corpus_text_document", seed=0, n_docs=5)
    with pytest.raises(AtelierError, match=r"a pretraining dataset .* drop is_instruction"):
        build_datasets(
            DataSpec(str(tmp_path / "corpus_text_document"), is_instruction=True), [1, 0, 0]
        )
    write_instruction(tmp_path / "sft", [([5, 6, EOD], [-100, 6, EOD])])
    with pytest.raises(AtelierError, match=r"an instruction dataset .* set is_instruction"):
        build_datasets(DataSpec(str(tmp_path / "sft")), [1, 0, 0])
    with pytest.raises(AtelierError, match=r"without its suffix: .*sft$"):
        build_datasets(
            DataSpec(str(tmp_path / "sft_packed_input_ids_document"), is_instruction=True),
            [1, 0, 0],
        )


def test_instruction_takes_one_prefix(tmp_path):
    with pytest.raises(AtelierError, match="one prefix"):
        build_datasets(DataSpec("0.5 a 0.5 b", is_instruction=True), [1, 0, 0])


def test_instruction_files_that_disagree(tmp_path):
    write_instruction(tmp_path / "a", [([5, 6, EOD], [-100, 6, EOD])])
    write_instruction(tmp_path / "b", [([5, 6, 7, EOD], [-100, 6, 7, EOD])])
    for ext in (".bin", ".idx"):
        os.replace(
            f"{tmp_path}/b_packed_labels_document{ext}", f"{tmp_path}/a_packed_labels_document{ext}"
        )
    with pytest.raises(AtelierError, match=r"a_packed_labels_document.idx: its rows do not match"):
        build_datasets(DataSpec(str(tmp_path / "a"), is_instruction=True), [1, 0, 0])


def test_vocab_check(tmp_path):
    docs = write_pretraining(tmp_path / "c_text_document", seed=0, n_docs=20)
    top = int(max(d.max() for d in docs))
    spec = DataSpec(str(tmp_path / "c_text_document"), eod_id=EOD)
    check_vocab(spec, top + 1)
    with pytest.raises(AtelierError) as e:
        check_vocab(spec, top)
    msg = _one_line(e)
    assert "c_text_document.bin" in msg and f"token id {top} >= " in msg and str(top) in msg
    write_instruction(tmp_path / "sft", [([5, 60, EOD], [-100, 60, EOD])])
    sft = DataSpec(str(tmp_path / "sft"), is_instruction=True, eod_id=EOD)
    check_vocab(sft, 61)  # the -100 labels are no token ids
    with pytest.raises(AtelierError, match=r"sft_packed_input_ids_document.bin: token id 60"):
        check_vocab(sft, 60)
    with pytest.raises(AtelierError, match="eod_id 2"):
        check_vocab(DataSpec(str(tmp_path / "c_text_document"), eod_id=EOD), 2)
    assert top < VOCAB


@pytest.mark.parametrize(
    "split", ["", "a,b", "1,2,3,4", "0,0,0", "-1,2", "9;1", "1,,2", "1e3,1", "."]
)
def test_split_malformed(split):
    with pytest.raises(AtelierError, match="split"):
        split_weights(split)


@pytest.mark.parametrize("split", ["949,50,1", "90,10,0", "1", "8/2", " 98, 2 ,0"])
def test_split_accepted(split):
    assert np.isclose(sum(split_weights(split)), 1.0)


@pytest.mark.parametrize(
    ("data_path", "match"),
    [
        ("0.5 a b", "weights malformed"),
        ("0.5 a x b", "weights malformed: 'x'"),
        ("0 a 1 b", "weight 0.0 of a"),
        ("nan a 1 b", "weight nan of a"),
        ("-1 a 2 b", "weight -1.0 of a"),
        ("1 2 3 4", "'2' stands where a prefix"),
        ("   ", "empty"),
    ],
)
def test_blend_malformed(data_path, match):
    with pytest.raises(AtelierError, match=match):
        parse_blend(data_path)


def test_blend_forms():
    assert parse_blend("a") == (["a"], None)
    assert parse_blend(["a", "b"]) == (["a", "b"], None)
    assert parse_blend("30 a 70 b") == (["a", "b"], [30.0, 70.0])
    assert parse_blend(["1.0", "a"]) == (["a"], [1.0])


def test_empty_split_is_an_error_not_a_hang(tmp_path):
    """megatron-core loops forever on a split without tokens; we say which split."""
    write_pretraining(tmp_path / "c_text_document", seed=0, n_docs=10)
    spec = DataSpec(str(tmp_path / "c_text_document"), "949,50,1", 8)
    with pytest.raises(AtelierError, match=r"split 949,50,1: the test split .* holds 0 sequences"):
        build_datasets(spec, [5, 1, 1])
    train, _, test = build_datasets(spec, [5, 1, 0])  # nothing asked of it: no dataset
    assert test is None and len(train) >= 5


def test_seq_length_against_max_positions():
    check_positions(DataSpec("x", seq_length=4096), 4096)
    with pytest.raises(AtelierError, match=r"seq_length 8192: longer than .* 4096"):
        check_positions(DataSpec("x", seq_length=8192), 4096)


def test_spec_fields():
    with pytest.raises(AtelierError, match="seq_length 0"):
        DataSpec("x", seq_length=0)
    with pytest.raises(AtelierError, match="pad_id -3"):
        DataSpec("x", pad_id=-3)


def test_unwritable_cache_names_data_cache_path(tmp_path):
    write_pretraining(tmp_path / "c_text_document", seed=0, n_docs=10)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    spec = DataSpec(str(tmp_path / "c_text_document"), "1", 8, data_cache_path=str(blocker / "x"))
    with pytest.raises(AtelierError) as e:
        build_datasets(spec, [3, 0, 0])
    assert "give data_cache_path a writable folder" in _one_line(e)
    assert blocker.read_text() == "not a folder"
