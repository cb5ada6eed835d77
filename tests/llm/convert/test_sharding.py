"""The pure sharding math, on small tensors."""

from __future__ import annotations

import pytest
import torch

from atelier.core.errors import AtelierError
from atelier.llm.convert import sharding as sh


@pytest.mark.parametrize(
    ("true", "div", "tp", "padded"),
    [
        (300, 128, 1, 384),
        (300, 128, 2, 512),
        (32000, 128, 8, 32768),
        (151936, 128, 4, 152064),
        (64000, 128, 2, 64000),
        (128256, 128, 8, 129024),
    ],
)
def test_padded_vocab_size(true, div, tp, padded) -> None:
    assert sh.padded_vocab_size(true, div, tp) == padded


def test_fuse_qkv_per_group_order_and_inverse() -> None:
    heads, groups, d, h = 8, 2, 3, 5
    q = torch.arange(heads * d * h, dtype=torch.float32).reshape(heads * d, h)
    k = -torch.arange(groups * d * h, dtype=torch.float32).reshape(groups * d, h) - 1
    v = k - 1000
    fused = sh.fuse_qkv(q, k, v, groups)
    per = heads // groups * d
    # group 0: its 4 query heads, then its key head, then its value head
    assert torch.equal(fused[:per], q[:per])
    assert torch.equal(fused[per : per + d], k[:d])
    assert torch.equal(fused[per + d : per + 2 * d], v[:d])
    back = sh.unfuse_qkv(fused, heads, groups, d)
    assert all(torch.equal(a, b) for a, b in zip(back, (q, k, v), strict=True))


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_rank_slice_then_fuse_is_the_rank_chunk(tp: int) -> None:
    torch.manual_seed(0)
    heads, groups, d, h, f = 8, 4, 2, 6, 12
    parts = {
        "q": torch.randn(heads * d, h),
        "k": torch.randn(groups * d, h),
        "v": torch.randn(groups * d, h),
        "o": torch.randn(h, heads * d),
        "gate": torch.randn(f, h),
        "up": torch.randn(f, h),
        "down": torch.randn(h, f),
        "input_norm": torch.randn(h),
    }
    full_qkv = sh.fuse_qkv(parts["q"], parts["k"], parts["v"], groups)
    for r in range(tp):
        mine = sh.rank_slice(parts, tp, r)
        assert torch.equal(
            sh.fuse_qkv(mine["q"], mine["k"], mine["v"], groups // tp), full_qkv.chunk(tp)[r]
        )
        assert torch.equal(
            torch.cat([mine["gate"], mine["up"]]),
            sh.fuse_gate_up(parts["gate"], parts["up"], tp, r),
        )
        assert torch.equal(mine["o"], parts["o"].chunk(tp, dim=1)[r])
        assert torch.equal(mine["input_norm"], parts["input_norm"])
    shards = [sh.fuse_gate_up(parts["gate"], parts["up"], tp, r) for r in range(tp)]
    gate, up = sh.unfuse_gate_up(shards)
    assert torch.equal(gate, parts["gate"]) and torch.equal(up, parts["up"])


def test_padded_shard_matches_pad_then_split() -> None:
    w = torch.randn(300, 4)
    padded = sh.padded_vocab_size(300, 128, 4)  # 512: rank 3 is all padding
    full = sh.pad_vocab(w, padded)
    assert torch.equal(full[300:], w[-1:].expand(212, -1))
    for r in range(4):
        start, stop = sh.vocab_shard_range(padded, 4, r)
        rows = w[start : min(stop, 300)] if start < 300 else w[:0]
        got = sh.padded_shard(rows, w[-1], start, stop, 300)
        assert torch.equal(got, sh.split_rows(full, 4, r))


def test_layer_partition() -> None:
    assert sh.layer_partition(6, 3, None) == [2, 2, 2]
    assert sh.layer_partition(6, 3, [1, 3, 2]) == [1, 3, 2]
    with pytest.raises(AtelierError, match="--num-layer-list"):
        sh.layer_partition(7, 2, None)
    assert sh.valid_tensor_parallel_sizes(32, 8, 11008) == [1, 2, 4, 8]
