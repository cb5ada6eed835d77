"""Pretraining samples against megatron-core's own GPTDataset and BlendedMegatronDatasetBuilder.

megatron-core (with its compiled `helpers_cpp`) runs on CPU here: for the same data, blend,
split, seq-length and seed, every sample of every split must be equal, field by field, and
our segment ids must give megatron-core's attention mask.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from atelier.llm.train.data import DataSpec, build_datasets
from atelier.llm.train.data.gpt_index import plan_epochs

from .helpers import EOD, PAD, VOCAB, write_pretraining

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from megatron.core.datasets.blended_megatron_dataset_builder import (
        BlendedMegatronDatasetBuilder,
    )
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig


class _Tokenizer:
    """What megatron-core's GPTDataset asks of a tokenizer."""

    def __init__(self, pad: int | None) -> None:
        self.vocab_size = VOCAB
        self.eod = EOD
        if pad is not None:
            self.pad = pad
        self.unique_identifiers = {"class": "Test", "pad": pad}


def _megatron(blend, split, seq_length, seed, sizes, pad=PAD, **flags):
    # path_to_cache None: megatron-core caches next to the data (its BlendedDataset cache
    # would need torch.distributed); our caches there have other names.
    cfg = GPTDatasetConfig(
        random_seed=seed,
        sequence_length=seq_length,
        blend=blend,
        split=split,
        tokenizer=_Tokenizer(pad),
        reset_position_ids=flags.get("reset_position_ids", False),
        reset_attention_mask=flags.get("reset_attention_mask", False),
        eod_mask_loss=flags.get("eod_mask_loss", False),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return BlendedMegatronDatasetBuilder(GPTDataset, sizes, lambda: True, cfg).build()


def _assert_indices(ours, theirs) -> None:
    for name in ("doc_index", "sample_index", "shuffle_index"):
        a, b = getattr(ours, name), getattr(theirs, name.replace("doc_", "document_"))
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)


def _assert_same(ours, theirs, reset_attention_mask: bool) -> None:
    if theirs is None:
        assert ours is None
        return
    assert ours is not None and len(ours) == len(theirs)
    if hasattr(theirs, "datasets"):  # BlendedDataset: the same draw, of the same datasets
        np.testing.assert_array_equal(ours.which, theirs.dataset_index)
        np.testing.assert_array_equal(ours.nth, theirs.dataset_sample_index)
        for o, t in zip(ours.datasets, theirs.datasets, strict=True):
            _assert_indices(o, t)
    else:
        _assert_indices(ours, theirs)
    for i in range(len(theirs)):
        a, b = ours[i], theirs[i]
        for key in ("tokens", "labels", "position_ids"):
            assert a[key].dtype == np.int64
            np.testing.assert_array_equal(a[key], b[key].numpy(), err_msg=f"{key} of sample {i}")
        assert a["loss_mask"].dtype == np.float32
        np.testing.assert_array_equal(a["loss_mask"], b["loss_mask"].numpy())
        if reset_attention_mask:
            seg = a["segment_ids"]
            causal = np.tril(np.ones((len(seg), len(seg)), dtype=bool))
            allowed = causal & (seg[:, None] == seg[None, :])
            np.testing.assert_array_equal(~allowed, b["attention_mask"][0].numpy())
        else:
            assert "segment_ids" not in a


FLAGS = [
    {},
    {"reset_position_ids": True, "reset_attention_mask": True, "eod_mask_loss": True},
    {"reset_position_ids": True},
]


@pytest.mark.parametrize("flags", FLAGS, ids=["plain", "all-resets", "positions-only"])
def test_blend_of_two_prefixes_split_90_10_0(tmp_path, flags):
    # megatron-core caches the loss mask of the first sample it reads *after* zeroing that
    # sample's pad labels in place, when no flag is set; every later sample then inherits
    # those zeros (access-order dependent). Data with pad ids inside is compared only where
    # megatron-core does not cache (a flag set); test_pad_ids_in_text covers the plain case.
    stray = bool(flags)
    a, b = tmp_path / "a_text_document", tmp_path / "b_text_document"
    write_pretraining(a, seed=1, n_docs=60, stray_pad=stray)
    write_pretraining(b, seed=2, n_docs=45, stray_pad=stray)
    sizes = [70, 9, 0]
    theirs = _megatron([[str(a), str(b)], [0.3, 0.7]], "90,10,0", 16, 7, sizes, **flags)
    spec = DataSpec(f"0.3 {a} 0.7 {b}", "90,10,0", 16, 7, eod_id=EOD, pad_id=PAD,
                    data_cache_path=str(tmp_path / "ours"), **flags)  # fmt: skip
    ours = build_datasets(spec, sizes)
    assert theirs[2] is None
    for o, t in zip(ours, theirs, strict=True):
        _assert_same(o, t, flags.get("reset_attention_mask", False))


@pytest.mark.parametrize(
    ("sizes", "seed"),
    [([100, 5, 2], 1234), ([1250, 5, 2], 5), ([1400, 60, 40], 9)],
    ids=["one-epoch", "two-epochs", "separate-final-epoch"],
)
def test_single_prefix(tmp_path, sizes, seed):
    """Several epochs too, with and without megatron-core's separate final epoch."""
    p = tmp_path / "c_text_document"
    write_pretraining(p, seed=3, n_docs=400, stray_pad=False)
    theirs = _megatron([[str(p)], None], "90,8,2", 12, seed, sizes)
    spec = DataSpec(str(p), "90,8,2", 12, seed, eod_id=EOD, pad_id=PAD)
    ours = build_datasets(spec, sizes)
    beg, end = ours[0].documents
    plan = plan_epochs(int(ours[0].reader.lengths[beg:end].sum()), sizes[0], 12)
    assert (plan.num_epochs, plan.separate_final_epoch) == {1234: (1, False), 5: (2, False),
                                                           9: (3, True)}[seed]  # fmt: skip
    for o, t in zip(ours, theirs, strict=True):
        _assert_same(o, t, False)


def test_unweighted_blend_and_pad_equal_to_eod(tmp_path):
    """Prefixes without weights blend by size; a pad id equal to EOD is not masked."""
    a, b = tmp_path / "a_text_document", tmp_path / "b_text_document"
    write_pretraining(a, seed=4, n_docs=30)  # pads == EOD here: nothing masked beyond EOD
    write_pretraining(b, seed=5, n_docs=50)
    sizes = [40, 4, 0]
    theirs = _megatron([[str(a), str(b)], None], "8,2", 10, 3, sizes, pad=EOD)
    spec = DataSpec([str(a), str(b)], "8,2", 10, 3, eod_id=EOD, pad_id=EOD)
    ours = build_datasets(spec, sizes)
    for o, t in zip(ours, theirs, strict=True):
        _assert_same(o, t, False)


def test_pad_ids_in_text(tmp_path):
    """Without flags a label equal to the pad id is untrained and both become id 0."""
    p = tmp_path / "d_text_document"
    docs = write_pretraining(p, seed=6, n_docs=40)
    assert any(PAD in d for d in docs)
    spec = DataSpec(str(p), "1", 12, 2, eod_id=EOD, pad_id=PAD)
    train, _, _ = build_datasets(spec, [30, 0, 0])
    text = np.concatenate(docs)
    seen = 0
    for i in range(len(train)):
        s = train[i]
        raw = train.text(i)
        np.testing.assert_array_equal(s["loss_mask"], (raw[1:] != PAD).astype(np.float32))
        np.testing.assert_array_equal(s["tokens"], np.where(raw[:-1] == PAD, 0, raw[:-1]))
        np.testing.assert_array_equal(s["labels"], np.where(raw[1:] == PAD, 0, raw[1:]))
        seen += int((raw == PAD).sum())
    assert seen and PAD in text
