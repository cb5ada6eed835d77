"""Instruction samples against golden values from MindSpeed-LLM's own logic.

`mindspeed_golden.json` was produced by running MindSpeed-LLM's pure functions
(`get_train_valid_test_split_`, `_build_index_mappings`' epoch loop,
`DecoderPackedMTFDataset.__getitem__` / `_cut_instruction_token` / `get_prompt_index` /
`_infer_seqlen`, right padding as `DataCollatorForSeq2Seq` does it, and the GPTModel's
`labels[:, 1:]` shift) on the rows below, transcribed into a throwaway script outside the
repository. Each golden sample gives the input ids and the (position, target) pairs the
loss trains on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from atelier.llm.train.data import DataSpec, build_datasets, collate
from atelier.llm.train.data.instruction import shuffle_rows
from atelier.llm.train.data.spec import legacy_split_ranges

from .helpers import EOD, PAD, write_instruction

GOLD = json.loads((Path(__file__).parent / "mindspeed_golden.json").read_text())

ROWS = [
    ([10, 11, 12, 20, 21, 2], [-100, -100, -100, 20, 21, 2]),
    (
        [10, 11, 12, 13, 20, 21, 22, 2, 14, 15, 16, 23, 24, 25, 26, 27, 2],
        [-100] * 4 + [20, 21, 22, 2] + [-100] * 3 + [23, 24, 25, 26, 27, 2],
    ),
    (  # a packed row: two samples and two pads
        [10, 11, 20, 2, 12, 13, 14, 21, 22, 2, 1, 1],
        [-100, -100, 20, 2, -100, -100, -100, 21, 22, 2, -100, -100],
    ),
    ([30, 31, 2], [-100, 31, 2]),
    ([40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 60, 2], [-100] * 13 + [60, 2]),
    ([33, 5, 6, 7, 8, 9, 2], [33, -100, -100, -100, 7, 8, 2]),
]


@pytest.mark.parametrize(
    ("split", "size", "key"),
    [("4,1,1", 6, "split_4_1_1_of_6"), ("949,50,1", 23, "split_949_50_1_of_23"),
     ("98,2,0", 7, "split_98_2_0_of_7")],
)  # fmt: skip
def test_split_is_megatron_legacy(split, size, key):
    bounds = legacy_split_ranges(split, size)
    assert [0] + [e for _, e in bounds] == GOLD[key]


def test_order_is_mindspeed_epochs_of_shuffles():
    assert shuffle_rows(0, 23, 50, 1234).tolist() == GOLD["order_0_23_50_1234"]
    assert shuffle_rows(21, 23, 5, 7).tolist() == GOLD["order_21_2_5_7"]


def test_order_through_build_datasets(tmp_path):
    rng = np.random.default_rng(0)
    rows = [([int(x) for x in rng.integers(3, 99, 4)] + [EOD], [-100, -100, 5, 6, EOD])
            for _ in range(23)]  # fmt: skip
    write_instruction(tmp_path / "sft", rows)
    spec = DataSpec(str(tmp_path / "sft"), "949,50,1", 8, 1234, is_instruction=True, eod_id=EOD)
    train, valid, test = build_datasets(spec, [50, 5, 0])
    assert test is None  # the legacy split leaves it no row
    assert train.order.tolist() == GOLD["order_0_22_50_1234"]
    assert len(train) == 3 * 22  # whole epochs: MindSpeed's length
    assert valid.order.tolist() == [22] * 5
    assert train[0]["tokens"][:5].tolist() == rows[train.order[0]][0]


CASES = [k for k in GOLD if k.startswith("L") and not k.endswith("_rows")]


@pytest.mark.parametrize("key", CASES)
def test_samples_equal_mindspeed(tmp_path, key):
    seq, rp, ra, pad = (int(part[-1:]) if i else int(part[1:])
                        for i, part in enumerate(key.split("_")))  # fmt: skip
    rows = [ROWS[i] for i in GOLD[key + "_rows"]]
    write_instruction(tmp_path / "sft", rows, pad=PAD)
    spec = DataSpec(str(tmp_path / "sft"), "1", seq, 3, is_instruction=True,
                    pad_to_seq_length=bool(pad), reset_position_ids=bool(rp),
                    reset_attention_mask=bool(ra), eod_id=EOD, pad_id=PAD)  # fmt: skip
    train, _, _ = build_datasets(spec, [len(rows), 0, 0])
    assert sorted(train.order.tolist()) == list(range(len(rows)))
    for i in range(len(train)):
        gold = GOLD[key][int(train.order[i])]
        s = train[i]
        assert s["tokens"].tolist() == gold["input_ids"]
        n = len(gold["input_ids"])
        assert {k: len(v) for k, v in s.items()} == {k: n for k in s}
        trained = [[t, int(s["labels"][t])] for t in np.flatnonzero(s["loss_mask"])]
        assert trained == gold["trained"]
        assert set(s["labels"][s["loss_mask"] == 0].tolist()) <= {0}
        assert s["position_ids"].tolist() == gold.get("position_ids", list(range(n)))
        if ra:
            ends = np.array(gold["actual_seq_len"])
            expect = (ends[None, :] <= np.arange(n)[:, None]).sum(axis=1)
            assert s["segment_ids"].tolist() == expect.tolist()
            assert s["segment_ids"].dtype == np.int32
        else:
            assert "segment_ids" not in s
        assert s["tokens"].dtype == s["labels"].dtype == s["position_ids"].dtype == np.int64
        assert s["loss_mask"].dtype == np.float32


def test_unpadded_collate_pads_to_longest(tmp_path):
    write_instruction(tmp_path / "sft", ROWS[:4], pad=PAD)
    spec = DataSpec(str(tmp_path / "sft"), "1", 16, 3, is_instruction=True,
                    pad_to_seq_length=False, reset_position_ids=True,
                    reset_attention_mask=True, eod_id=EOD, pad_id=PAD)  # fmt: skip
    train, _, _ = build_datasets(spec, [4, 0, 0])
    samples = [train[i] for i in range(4)]
    batch = collate(samples, pad_id=spec.fill_id)
    longest = max(len(s["tokens"]) for s in samples)
    assert batch["tokens"].shape == (4, longest) == (4, 16)  # 17 cut to seq_length
    for b, s in enumerate(samples):
        n = len(s["tokens"])
        for key, value in s.items():
            assert batch[key][b, :n].tolist() == value.tolist()
        assert batch["tokens"][b, n:].tolist() == [PAD] * (longest - n)
        assert batch["loss_mask"][b, n:].sum() == 0
        assert batch["labels"][b, n:].tolist() == [0] * (longest - n)
        if n < longest:  # padding: positions go on, a segment of its own
            assert batch["position_ids"][b, n] == s["position_ids"][-1] + 1
            assert batch["segment_ids"][b, n:].unique().tolist() == [s["segment_ids"][-1] + 1]
    assert collate(samples, PAD, multiple_of=5)["tokens"].shape == (4, 20)
    assert collate(samples, PAD, pad_to=20)["tokens"].shape == (4, 20)
    with pytest.raises(ValueError, match="pad_to 10"):
        collate(samples, PAD, pad_to=10)


def test_loss_only_where_labels_are_not_ignored(tmp_path):
    """The loss reads label t+1 at position t where it is not -100, nothing else."""
    ids, labels = ROWS[0]
    variants = {
        "plain": labels,
        "first": [99, *labels[1:]],  # label 0 is never a target (no logit before it)
        "user": [labels[0], 11, *labels[2:]],  # a user token's label made trainable
    }
    out = {}
    for name, lab in variants.items():
        write_instruction(tmp_path / name, [(ids, lab)])
        spec = DataSpec(str(tmp_path / name), "1", 8, 1, is_instruction=True, eod_id=EOD)
        out[name] = build_datasets(spec, [1, 0, 0])[0][0]
    for key in out["plain"]:
        np.testing.assert_array_equal(out["plain"][key], out["first"][key])
    assert out["plain"]["loss_mask"].tolist() == [0, 0, 1, 1, 1, 0, 0, 0]
    assert out["plain"]["labels"].tolist() == [0, 0, 20, 21, 2, 0, 0, 0]
    assert out["user"]["loss_mask"].tolist() == [1, 0, 1, 1, 1, 0, 0, 0]
    assert out["user"]["labels"][0] == 11


def test_packed_rows_keep_samples_apart(tmp_path, hf_tokenizer_dir):
    """`preprocess --pack` rows, read with both resets, train each sample as if alone."""
    from atelier.llm.assets.build import demo_texts
    from atelier.llm.data.tokenizer import TokenizerSpec, load_tokenizer

    from ....conftest import write_jsonl
    from ...data.helpers import run

    texts = demo_texts()
    records = [{"instruction": texts[i % len(texts)][: 20 + 7 * (i % 5)], "input": "",
                "output": texts[(i + 3) % len(texts)][: 10 + 5 * (i % 4)]}
               for i in range(24)]  # fmt: skip
    src = write_jsonl(tmp_path / "a.jsonl", records)
    kw = dict(handler_name="AlpacaStyleInstructionHandler", prompt_type="alpaca", seq_length=256)
    run(hf_tokenizer_dir, src, tmp_path / "plain", **kw)
    run(hf_tokenizer_dir, src, tmp_path / "packed", pack=True, **kw)
    eos = load_tokenizer(TokenizerSpec(name_or_path=str(hf_tokenizer_dir))).eos
    common = dict(split="1", seq_length=256, is_instruction=True, eod_id=eos, pad_id=eos)

    def trained_view(s, lo, hi):
        mask = s["loss_mask"][lo:hi] > 0
        return (s["tokens"][lo:hi].tolist(), np.flatnonzero(mask).tolist(),
                s["labels"][lo:hi][mask].tolist())  # fmt: skip

    plain, _, _ = build_datasets(DataSpec(str(tmp_path / "plain"), **common), [1, 0, 0])
    alone = sorted(trained_view(s, 0, int(s["loss_mask"].nonzero()[0][-1]) + 2)
                   for s in (plain[i] for i in range(len(plain))))  # fmt: skip
    spec = DataSpec(str(tmp_path / "packed"), reset_position_ids=True,
                    reset_attention_mask=True, **common)  # fmt: skip
    packed, _, _ = build_datasets(spec, [1, 0, 0])
    assert len(plain) == 24 and len(packed) < 24 / 2  # one epoch each; rows of 2+ samples
    together = []
    for i in range(len(packed)):
        s = packed[i]
        seg = s["segment_ids"]
        for k in np.unique(seg):
            where = np.flatnonzero(seg == k)
            lo, hi = int(where[0]), int(where[-1]) + 1
            assert s["position_ids"][lo:hi].tolist() == list(range(hi - lo))
            if s["loss_mask"][lo:hi].any():
                together.append(trained_view(s, lo, hi))
    assert sorted(together) == alone
