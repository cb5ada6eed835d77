"""hf2mg -> mg2hf is bit-identical; mg2mg equals a direct conversion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from atelier.llm.convert import Hf2MgOptions, hf2mg, mg2hf, mg2mg

from .helpers import assert_same_state, flat, hf_state, load_rank, rank_path

# (family, layers, T, P, layer list, format, mcore norms)
CASES = [
    ("llama", 4, 1, 1, None, "mcore", "local"),
    ("llama", 4, 2, 2, None, "legacy", "local"),
    ("llama", 6, 4, 3, [1, 3, 2], "mcore", "te"),
    ("llama", 6, 2, 3, [2, 2, 2], "legacy", "local"),
    ("llama31", 4, 2, 1, None, "legacy", "local"),
    ("mistral", 6, 2, 3, [3, 1, 2], "mcore", "te"),
    ("mistral", 4, 1, 2, [3, 1], "legacy", "local"),
    ("qwen2", 6, 2, 3, [1, 3, 2], "legacy", "local"),
    ("qwen2", 4, 4, 2, None, "mcore", "local"),
    ("qwen2", 4, 1, 1, None, "mcore", "te"),
    ("yi", 4, 4, 1, None, "mcore", "local"),
    ("yi", 6, 1, 3, [2, 3, 1], "legacy", "local"),
    ("qwen3", 4, 2, 2, None, "mcore", "local"),
    ("qwen3", 6, 4, 3, [1, 3, 2], "mcore", "te"),
    ("qwen3tied", 6, 2, 3, [3, 1, 2], "mcore", "local"),
]


@pytest.mark.parametrize(("family", "layers", "tp", "pp", "layer_list", "fmt", "norms"), CASES)
def test_hf_mg_hf_bit_identical(
    hf_model, tmp_path: Path, family, layers, tp, pp, layer_list, fmt, norms
) -> None:
    hf = hf_model(family, layers)
    mg, out = tmp_path / "mg", tmp_path / "out"
    layout = hf2mg(
        Hf2MgOptions(
            load_dir=hf,
            save_dir=mg,
            tp=tp,
            pp=pp,
            num_layer_list=layer_list,
            fmt=fmt,
            mcore_norms=norms,
        )
    )
    assert layout.layer_list == (layer_list or [layers // pp] * pp)
    mg2hf(mg, out)
    assert_same_state(hf_state(hf), hf_state(out))
    src_cfg = json.loads((hf / "config.json").read_text())
    out_cfg = json.loads((out / "config.json").read_text())
    for key in (
        "vocab_size",
        "num_hidden_layers",
        "num_key_value_heads",
        "tie_word_embeddings",
        "rope_scaling",
        "rope_parameters",
        "architectures",
        "model_type",
    ):
        assert out_cfg.get(key) == src_cfg.get(key), key
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "model.safetensors.index.json",
    ):
        assert (out / name).is_file(), name


def test_output_loads_with_transformers(hf_model, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = hf_model("qwen2", 4)
    hf2mg(Hf2MgOptions(load_dir=hf, save_dir=tmp_path / "mg", tp=2, pp=2))
    mg2hf(tmp_path / "mg", tmp_path / "out", max_shard_bytes=60_000)
    shards = sorted(p.name for p in (tmp_path / "out").glob("model-*.safetensors"))
    assert len(shards) > 1 and shards[0].endswith(f"-of-{len(shards):05d}.safetensors")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    ids = torch.tensor([tok("the quick brown fox")["input_ids"]])
    ref = AutoModelForCausalLM.from_pretrained(hf)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref(ids).logits)


def test_padded_rows_never_leak(hf_model, tmp_path: Path) -> None:
    hf = hf_model("llama", 4)
    hf2mg(
        Hf2MgOptions(
            load_dir=hf, save_dir=tmp_path / "mg", tp=2, pp=2, make_vocab_size_divisible_by=64
        )
    )
    # 300 rows padded to a multiple of 64 * 2 = 128 -> 384, split over 2 ranks
    ck = load_rank(rank_path(tmp_path / "mg", 1, 0, 2))
    assert ck["args"].padded_vocab_size == 384
    assert ck["model"]["embedding.word_embeddings.weight"].shape == (192, 64)
    last = flat(load_rank(rank_path(tmp_path / "mg", 0, 1, 2))["model"])
    assert last["output_layer.weight"].shape == (192, 64)
    mg2hf(tmp_path / "mg", tmp_path / "out")
    state = hf_state(tmp_path / "out")
    assert state["model.embed_tokens.weight"].shape == (300, 64)
    assert state["lm_head.weight"].shape == (300, 64)


def test_params_dtype_cast(hf_model, tmp_path: Path) -> None:
    hf = hf_model("llama", 4)
    hf2mg(Hf2MgOptions(load_dir=hf, save_dir=tmp_path / "mg", tp=2, params_dtype=torch.bfloat16))
    assert load_rank(rank_path(tmp_path / "mg", 0, 0, 1))["args"].params_dtype == torch.bfloat16
    mg2hf(tmp_path / "mg", tmp_path / "out")
    want = {k: v.to(torch.bfloat16) for k, v in hf_state(hf).items()}
    assert_same_state(want, hf_state(tmp_path / "out"))
    assert json.loads((tmp_path / "out" / "config.json").read_text())["torch_dtype"] == "bfloat16"


@pytest.mark.parametrize(
    ("family", "src", "dst"),
    [
        ("llama", (2, 2, None, "legacy"), (4, 3, [1, 3, 2], "mcore")),
        ("qwen2", (4, 3, [3, 2, 1], "mcore"), (1, 2, [2, 4], "legacy")),
        ("qwen3", (2, 3, [3, 2, 1], "mcore"), (4, 2, [2, 4], "mcore")),
    ],
)
def test_mg2mg_equals_direct(hf_model, tmp_path: Path, family, src, dst) -> None:
    hf = hf_model(family, 6)
    hf2mg(
        Hf2MgOptions(
            load_dir=hf,
            save_dir=tmp_path / "a",
            tp=src[0],
            pp=src[1],
            num_layer_list=src[2],
            fmt=src[3],
        )
    )
    mg2mg(tmp_path / "a", tmp_path / "b", tp=dst[0], pp=dst[1], num_layer_list=dst[2], fmt=dst[3])
    hf2mg(
        Hf2MgOptions(
            load_dir=hf,
            save_dir=tmp_path / "c",
            tp=dst[0],
            pp=dst[1],
            num_layer_list=dst[2],
            fmt=dst[3],
        )
    )
    for t in range(dst[0]):
        for p in range(dst[1]):
            b = load_rank(rank_path(tmp_path / "b", t, p, dst[1]))
            c = load_rank(rank_path(tmp_path / "c", t, p, dst[1]))
            assert_same_state(flat(b["model"]), flat(c["model"]))
            assert vars(b["args"]) == vars(c["args"])
    mg2hf(tmp_path / "b", tmp_path / "out")
    assert_same_state(hf_state(hf), hf_state(tmp_path / "out"))


@pytest.mark.parametrize(
    "family", ["llama", "llama31", "mistral", "qwen2", "yi", "qwen3", "qwen3tied"]
)
def test_every_tp_pp_both_formats(hf_model, tmp_path: Path, family: str) -> None:
    """The full grid T in {1,2,4} x P in {1,2,3} (uneven lists), legacy and mcore.

    Qwen3's q/k norms have no parameter in Megatron's legacy GPTModel: legacy is refused."""
    from atelier.core.errors import AtelierError

    hf = hf_model(family, 6)
    want = hf_state(hf)
    layer_lists = {1: None, 2: [4, 2], 3: [1, 3, 2]}
    for tp in (1, 2, 4):
        for pp in (1, 2, 3):
            for fmt, norms in (("legacy", "local"), ("mcore", "te" if tp % 2 else "local")):
                case = tmp_path / f"t{tp}p{pp}{fmt}"
                opts = Hf2MgOptions(
                    load_dir=hf,
                    save_dir=case / "mg",
                    tp=tp,
                    pp=pp,
                    num_layer_list=layer_lists[pp],
                    fmt=fmt,
                    mcore_norms=norms,
                )
                if family in ("mistral", "qwen3tied") and tp == 4:  # 2 query groups
                    with pytest.raises(AtelierError, match="valid sizes: 1, 2"):
                        hf2mg(opts)
                    continue
                if family.startswith("qwen3") and fmt == "legacy":
                    with pytest.raises(AtelierError, match=r"fmt legacy: .*q_norm.*use fmt mcore"):
                        hf2mg(opts)
                    assert not (case / "mg").exists()
                    continue
                hf2mg(opts)
                mg2hf(case / "mg", case / "hf")
                assert_same_state(want, hf_state(case / "hf"))
