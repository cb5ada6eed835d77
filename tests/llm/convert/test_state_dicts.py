"""The in-memory API (for the trainer) equals the file converters, tensor for tensor."""

from __future__ import annotations

from pathlib import Path

import pytest

from atelier.core.errors import AtelierError
from atelier.llm.convert import (
    Hf2MgOptions,
    StateDictSource,
    hf2mg,
    hf_to_megatron_rank,
    megatron_ranks_to_hf,
    mg2hf,
    reshard,
    source_to_megatron_rank,
)
from atelier.llm.convert.hf_checkpoint import HFSource, hf_plan, hf_tensors
from atelier.llm.convert.megatron_writer import MegatronTarget, write_megatron

from .helpers import assert_same_state, flat, hf_state, load_rank, rank_path


def _meta(hf: Path):
    src = HFSource(hf)
    src.close()
    return src.meta


@pytest.mark.parametrize(("family", "tp", "pp"), [("qwen3", 2, 2), ("qwen2", 4, 1)])
def test_hf_to_megatron_rank_equals_hf2mg(hf_model, tmp_path: Path, family, tp, pp) -> None:
    hf = hf_model(family, 4)
    hf2mg(Hf2MgOptions(load_dir=hf, save_dir=tmp_path / "mg", tp=tp, pp=pp))
    state, meta = hf_state(hf), _meta(hf)
    for p in range(pp):
        for t in range(tp):
            want = flat(load_rank(rank_path(tmp_path / "mg", t, p, pp))["model"])
            got = hf_to_megatron_rank(state, meta, tp, t, pp=pp, pp_rank=p)
            assert_same_state(want, got)
    # the lazy folder reader gives the same rank
    got = source_to_megatron_rank(HFSource(hf), tp, tp - 1, pp=pp, pp_rank=pp - 1)
    want = flat(load_rank(rank_path(tmp_path / "mg", tp - 1, pp - 1, pp))["model"])
    assert_same_state(want, got)


@pytest.mark.parametrize("family", ["qwen3", "qwen3tied", "llama31"])
def test_ranks_to_hf_and_reshard_round_trip(hf_model, family: str) -> None:
    hf = hf_model(family, 4)
    state, meta = hf_state(hf), _meta(hf)
    ranks = [hf_to_megatron_rank(state, meta, 2, r) for r in range(2)]
    assert_same_state(state, megatron_ranks_to_hf(ranks, meta))
    wide = reshard(ranks, meta, 2, 1)
    assert_same_state(wide[0], hf_to_megatron_rank(state, meta, 1, 0))
    assert_same_state(state, megatron_ranks_to_hf(wide, meta))
    with pytest.raises(AtelierError, match="rank_states: 2 state dicts but tp_from is 4"):
        reshard(ranks, meta, 4, 1)


def test_state_dict_source_feeds_both_writers(hf_model, tmp_path: Path) -> None:
    """In-memory shards (as the trainer holds them) -> the Megatron writer and the HF writer."""
    from atelier.llm.convert.hf_checkpoint import write_safetensors_sharded

    hf = hf_model("qwen3", 4)
    state, meta = hf_state(hf), _meta(hf)
    ranks = [hf_to_megatron_rank(state, meta, 2, r) for r in range(2)]
    out = tmp_path / "mg"
    out.mkdir()
    write_megatron(StateDictSource(ranks, meta), out, MegatronTarget(tp=2))
    hf2mg(Hf2MgOptions(load_dir=hf, save_dir=tmp_path / "direct", tp=2))
    for t in range(2):
        a = load_rank(rank_path(out, t, 0, 1))
        b = load_rank(rank_path(tmp_path / "direct", t, 0, 1))
        assert_same_state(flat(a["model"]), flat(b["model"]))
    mg2hf(out, tmp_path / "back", hf_config_dir=hf)
    assert_same_state(state, hf_state(tmp_path / "back"))
    (tmp_path / "st").mkdir()
    source = StateDictSource(ranks, meta)
    write_safetensors_sharded(hf_tensors(source), tmp_path / "st", hf_plan(meta), meta.dtype, 10**9)
    assert_same_state(state, hf_state(tmp_path / "st"))


def test_in_memory_bad_input_names_parameters(hf_model) -> None:
    hf = hf_model("qwen3", 4)
    state, meta = hf_state(hf), _meta(hf)
    del state["model.layers.2.self_attn.k_norm.weight"]
    with pytest.raises(
        AtelierError, match=r"hf_state: tensor 'model\.layers\.2\.self_attn\.k_norm"
    ):
        hf_to_megatron_rank(state, meta, 1, 0)
    with pytest.raises(AtelierError, match=r"^tp 3 must divide"):
        hf_to_megatron_rank(hf_state(hf), meta, 3, 0)
    with pytest.raises(AtelierError, match="rank 2: must be between 0 and tp - 1 = 1"):
        hf_to_megatron_rank(hf_state(hf), meta, 2, 2)
    ranks = [hf_to_megatron_rank(hf_state(hf), meta, 1, 0)]
    with pytest.raises(AtelierError, match=r"fmt legacy: .*q_norm"):
        reshard(ranks, meta, 1, 1, fmt="legacy")
    broken = {k: v for k, v in ranks[0].items() if "q_layernorm" not in k}
    with pytest.raises(AtelierError, match=r"rank_states\[0\]\[0\]: tensor .*q_layernorm"):
        megatron_ranks_to_hf([broken], meta)


def test_meta_from_hf_config_defaults_for_the_trainer(hf_model) -> None:
    import json

    import torch

    from atelier.llm.convert import meta_from_hf_config

    config = json.loads((hf_model("qwen3") / "config.json").read_text())
    meta = meta_from_hf_config(config)
    assert (meta.family, meta.head_dim, meta.qk_norm, meta.dtype) == (
        "qwen3",
        16,
        True,
        torch.float32,
    )
    assert [p.role for p in meta.fam.parts_for(meta)] == [
        "input_norm",
        "qkv",
        "q_norm",
        "k_norm",
        "proj",
        "post_norm",
        "fc1",
        "fc2",
    ]
    assert meta_from_hf_config({**config, "torch_dtype": "bfloat16"}).dtype == torch.bfloat16
