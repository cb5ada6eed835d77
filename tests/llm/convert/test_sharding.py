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


def _meta(heads: int, groups: int, d: int, h: int, f: int):
    from atelier.llm.convert.meta import ModelMeta

    return ModelMeta(
        family="qwen3",
        num_layers=1,
        hidden_size=h,
        ffn_hidden_size=f,
        num_heads=heads,
        num_groups=groups,
        head_dim=d,
        vocab_size=10,
        tied=False,
        qkv_bias=True,
        rope_theta=1e4,
        norm_eps=1e-6,
        max_positions=16,
        dtype=torch.float32,
    )


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_shard_part_is_the_rank_chunk_and_gather_inverts_it(tp: int) -> None:
    """Every split kind, on a layer with every part (QKV bias and qk-norm included)."""
    from atelier.llm.convert.families import Split, get_family

    torch.manual_seed(0)
    meta = _meta(heads=8, groups=4, d=2, h=6, f=12)
    parts = get_family("qwen3").parts_for(meta)
    assert {p.split for p in parts} == {Split.REPLICATED, Split.QKV, Split.ROW, Split.GATE_UP}
    full = {
        piece: torch.randn(shape)
        for p in parts
        for piece, shape in zip(p.pieces, p.piece_shapes(meta), strict=True)
    }
    for p in parts:
        pieces = [full[k] for k in p.pieces]
        shards = [sh.shard_part(p, pieces, meta, tp, r) for r in range(tp)]
        for r, s in enumerate(shards):
            assert tuple(s.shape) == p.rank_shape(meta, tp), p.role
            if p.split is Split.QKV:
                want = sh.fuse_qkv(*pieces, meta.num_groups).chunk(tp)[r]
            elif p.split is Split.GATE_UP:
                want = sh.fuse_gate_up(*pieces, tp, r)
            elif p.split is Split.ROW:
                want = pieces[0].chunk(tp, dim=1)[r]
            else:
                want = pieces[0]
            assert torch.equal(s, want), p.role
        back = sh.gather_part(p, shards, meta)
        assert all(torch.equal(a, b) for a, b in zip(back, pieces, strict=True)), p.role
    # gate/up: rank r holds [gate_r; up_r]
    gate, up = full["gate"], full["up"]
    r0 = sh.shard_part(next(p for p in parts if p.role == "fc1"), [gate, up], meta, tp, 0)
    assert torch.equal(r0, torch.cat([gate.chunk(tp)[0], up.chunk(tp)[0]]))


def test_vocab_shard_part_pads_and_gathers_back() -> None:
    from atelier.llm.convert.families import get_family

    meta = _meta(heads=8, groups=4, d=2, h=4, f=12)
    meta.vocab_size = 300
    embed = get_family("llama").embed
    w = torch.randn(300, 4)
    padded = sh.padded_vocab_size(300, 128, 4)
    shards = [sh.shard_part(embed, [w], meta, 4, r, padded) for r in range(4)]
    assert torch.equal(torch.cat(shards), sh.pad_vocab(w, padded))
    assert torch.equal(sh.gather_part(embed, shards, meta)[0], w)


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
    with pytest.raises(AtelierError, match="num_layer_list"):
        sh.layer_partition(7, 2, None)
    assert sh.valid_tensor_parallel_sizes(32, 8, 11008) == [1, 2, 4, 8]
