"""micro_batches against Megatron's MegatronPretrainingSampler, and exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atelier.core.errors import AtelierError
from atelier.llm.train.data import DataSpec, build_datasets, micro_batches

from .helpers import EOD, write_pretraining

GOLD = json.loads((Path(__file__).parent / "mindspeed_golden.json").read_text())["sampler"]


@pytest.mark.parametrize(("cfg", "expected"), GOLD, ids=[str(c) for c, _ in GOLD])
def test_equals_megatron_sampler(cfg, expected):
    total, consumed, mbs, rank, size, drop_last = cfg
    assert list(micro_batches(total, consumed, mbs, rank, size, drop_last)) == expected


def test_ranks_take_contiguous_slices_of_each_micro_step():
    mbs, dp = 3, 4
    per_rank = [list(micro_batches(100, 0, mbs, r, dp)) for r in range(dp)]
    for step in range(len(per_rank[0])):
        together = [i for r in range(dp) for i in per_rank[r][step]]
        assert together == list(range(step * mbs * dp, (step + 1) * mbs * dp))


def test_resume_from_consumed_samples_continues_exactly(tmp_path):
    p = tmp_path / "c_text_document"
    write_pretraining(p, seed=1, n_docs=80)
    train, _, _ = build_datasets(DataSpec(str(p), "1", 8, 3, eod_id=EOD), [60, 0, 0])
    mbs, dp, steps_before = 2, 2, 5
    whole = [list(train.micro_batches(0, mbs, r, dp)) for r in range(dp)]
    consumed = steps_before * mbs * dp
    resumed = [list(train.micro_batches(consumed, mbs, r, dp)) for r in range(dp)]
    for r in range(dp):
        assert resumed[r] == whole[r][steps_before:]
        assert [train[i]["tokens"].tolist() for i in resumed[r][0]] == [
            train[i]["tokens"].tolist() for i in whole[r][steps_before]
        ]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0, 0, 1, 0, 1), "no samples"),
        ((10, 10, 1, 0, 1), "consumed_samples 10"),
        ((10, -1, 1, 0, 1), "consumed_samples -1"),
        ((10, 0, 0, 0, 1), "micro_batch_size 0"),
        ((10, 0, 1, 2, 2), "dp_rank 2 dp_size 2"),
    ],
)
def test_bad_sampler_arguments(args, match):
    with pytest.raises(AtelierError, match=match):
        micro_batches(*args)


def test_data_loader_gives_the_collated_micro_batches(tmp_path):
    from atelier.llm.train.data import collate, data_loader

    p = tmp_path / "c_text_document"
    write_pretraining(p, seed=1, n_docs=80)
    train, _, _ = build_datasets(DataSpec(str(p), "1", 8, 3, eod_id=EOD), [30, 0, 0])
    loader = data_loader(train, 0, consumed_samples=8, micro_batch_size=2, dp_rank=1, dp_size=2)
    expected = list(train.micro_batches(8, 2, 1, 2))
    assert len(loader) == len(expected)
    for _ in range(2):  # re-iterable, like an epoch of a torch DataLoader
        got = list(loader)
        assert len(got) == len(expected)
        for batch, idx in zip(got, expected, strict=True):
            ref = collate([train[i] for i in idx], 0)
            assert batch.keys() == ref.keys()
            for key in ref:
                assert batch[key].equal(ref[key])
    with pytest.raises(AtelierError, match="consumed_samples 999"):
        data_loader(train, 0, 999, 2)
