"""What is written matches the Megatron layout; what Megatron/MindSpeed write is read."""

from __future__ import annotations

import argparse
import io
import shutil
from pathlib import Path

import pytest
import torch

from atelier.llm.convert import Hf2MgOptions, hf2mg, mg2hf

from .helpers import assert_same_state, flat, hf_state, load_rank, rank_path

ARGS_FIELDS = (
    "num_layers",
    "hidden_size",
    "ffn_hidden_size",
    "num_attention_heads",
    "group_query_attention",
    "num_query_groups",
    "seq_length",
    "max_position_embeddings",
    "padded_vocab_size",
    "position_embedding_type",
    "rotary_base",
    "normalization",
    "swiglu",
    "untie_embeddings_and_output_weights",
    "add_qkv_bias",
    "add_bias_linear",
    "norm_epsilon",
    "tensor_model_parallel_size",
    "pipeline_model_parallel_size",
    "params_dtype",
)


def test_layout_and_args(hf_model, tmp_path: Path) -> None:
    mg = tmp_path / "mg"
    hf2mg(
        Hf2MgOptions(
            load_dir=hf_model("qwen2", 6),
            save_dir=mg,
            tp=2,
            pp=3,
            num_layer_list=[1, 3, 2],
            fmt="legacy",
        )
    )
    assert (mg / "latest_checkpointed_iteration.txt").read_text().strip() == "1"
    dirs = sorted(p.name for p in (mg / "iter_0000001").iterdir())
    assert dirs == [f"mp_rank_{t:02d}_{p:03d}" for t in range(2) for p in range(3)]
    ck = load_rank(rank_path(mg, 1, 1, 3))
    assert ck["checkpoint_version"] == 3.0 and ck["iteration"] == 1
    args = ck["args"]
    assert isinstance(args, argparse.Namespace)
    for name in ARGS_FIELDS:
        assert getattr(args, name, None) is not None, name
    assert (args.num_query_groups, args.padded_vocab_size, args.num_layer_list) == (4, 512, "1,3,2")
    assert args.position_embedding_type == "rope" and args.normalization == "RMSNorm"
    assert args.add_qkv_bias and not args.untie_embeddings_and_output_weights
    # legacy nesting as Megatron-LM's legacy GPTModel saves it; layer numbers local per stage
    enc = ck["model"]["language_model"]["encoder"]
    assert sorted({k.split(".")[1] for k in enc}) == ["0", "1", "2"]
    assert enc["layers.0.self_attention.query_key_value.weight"].shape == (64, 64)
    assert enc["layers.0.self_attention.query_key_value.bias"].shape == (64,)
    assert enc["layers.0.mlp.dense_h_to_4h.weight"].shape == (96, 64)
    assert enc["layers.0.mlp.dense_4h_to_h.weight"].shape == (64, 48)
    first = load_rank(rank_path(mg, 0, 0, 3))["model"]
    assert first["language_model"]["embedding"]["word_embeddings"]["weight"].shape == (256, 64)
    last = load_rank(rank_path(mg, 0, 2, 3))["model"]
    assert "final_norm.weight" in last["language_model"]["encoder"]
    assert last["word_embeddings_for_head"]["weight"].shape == (256, 64)  # tied, PP > 1


def test_mcore_names(hf_model, tmp_path: Path) -> None:
    hf = hf_model("qwen2")
    hf2mg(Hf2MgOptions(load_dir=hf, save_dir=tmp_path / "te", pp=2, fmt="mcore", mcore_norms="te"))
    first = load_rank(rank_path(tmp_path / "te", 0, 0, 2))["model"]
    assert {
        "embedding.word_embeddings.weight",
        "decoder.layers.1.self_attention.linear_qkv.layer_norm_weight",
        "decoder.layers.1.self_attention.linear_qkv.bias",
        "decoder.layers.1.self_attention.linear_proj.weight",
        "decoder.layers.1.mlp.linear_fc1.layer_norm_weight",
        "decoder.layers.1.mlp.linear_fc1.weight",
        "decoder.layers.1.mlp.linear_fc2.weight",
    } <= set(first)
    last = load_rank(rank_path(tmp_path / "te", 0, 1, 2))["model"]
    assert {"decoder.final_layernorm.weight", "output_layer.weight"} <= set(last)
    hf2mg(Hf2MgOptions(load_dir=hf, save_dir=tmp_path / "local", fmt="mcore"))
    only = load_rank(rank_path(tmp_path / "local", 0, 0, 1))["model"]
    assert "decoder.layers.0.input_layernorm.weight" in only
    assert "decoder.layers.0.pre_mlp_layernorm.weight" in only
    assert "output_layer.weight" not in only  # tied and PP = 1: no separate output weight


def _as_other_writer(mg: Path, pp: int, tp: int, strip_hf_config: bool) -> None:
    """Rewrite a legacy checkpoint the way older Megatron / MindSpeed spell it."""
    renames = (
        (".input_norm.", ".input_layernorm."),
        (".post_attention_norm.", ".post_attention_layernorm."),
        ("encoder.final_norm", "encoder.final_layernorm"),
        ("language_model.encoder.", "language_model.transformer."),
    )
    for t in range(tp):
        for p in range(pp):
            path = rank_path(mg, t, p, pp)
            ck = load_rank(path)
            model = {}
            for k, v in flat(ck["model"]).items():
                for a, b in renames:
                    k = k.replace(a, b)
                model[k] = v
                # Transformer Engine keeps BytesIO here: not loadable with weights_only
                model[k.rsplit(".", 1)[0] + "._extra_state"] = io.BytesIO(b"te")
            ck["model"] = model  # flat, as MindSpeed-LLM saves it
            if strip_hf_config:
                for name in list(vars(ck["args"])):
                    if name.startswith("atelier_"):
                        delattr(ck["args"], name)
            torch.save(ck, path)
    (mg / "iter_0000001").rename(mg / "release")
    (mg / "latest_checkpointed_iteration.txt").write_text("release")


def _assert_converts_back_exactly(hf: Path, mg: Path, out: Path) -> None:
    """mg2hf gives the original tensors, and transformers computes the same logits."""
    from transformers import AutoModelForCausalLM

    mg2hf(mg, out)
    assert_same_state(hf_state(hf), hf_state(out))
    ids = torch.tensor([[1, 5, 9, 200, 7]])
    with torch.no_grad():
        want = AutoModelForCausalLM.from_pretrained(hf)(ids).logits
        got = AutoModelForCausalLM.from_pretrained(out)(ids).logits
    assert torch.equal(got, want)


@pytest.mark.parametrize("strip", [False, True])
def test_reads_other_spellings(hf_model, tmp_path: Path, strip: bool) -> None:
    hf = hf_model("llama")
    mg = tmp_path / "mg"
    hf2mg(Hf2MgOptions(load_dir=hf, save_dir=mg, tp=2, pp=2, fmt="legacy"))
    _as_other_writer(mg, 2, 2, strip)
    if strip:
        shutil.rmtree(mg / "hf_assets")
    _assert_converts_back_exactly(hf, mg, tmp_path / "out")


def test_megatron_core_builds_and_loads_it(hf_model, tmp_path: Path) -> None:
    """megatron-core's own GPTModel (local spec), built from our args, loads our state dict
    with nothing missing or unexpected: untied Llama, tied QKV-bias Qwen2 and qk-norm Qwen3
    (T=1, P=1: megatron-core runs on CPU here)."""
    import subprocess
    import sys

    pytest.importorskip("megatron.core")
    files = []
    families = ("llama", "qwen2", "qwen3")
    for family in families:
        hf2mg(
            Hf2MgOptions(
                load_dir=hf_model(family),
                save_dir=tmp_path / family,
                fmt="mcore",
                mcore_norms="local",
            )
        )
        files.append(str(rank_path(tmp_path / family, 0, 0, 1)))
    script = Path(__file__).with_name("megatron_core_load.py")
    proc = subprocess.run(
        [sys.executable, str(script), *files], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()[-len(families) :]
    assert lines == ["missing=[] unexpected=[] shapes_ok=True"] * len(families)


def test_foreign_qwen3_checkpoint_is_rebuilt_as_qwen3(hf_model, tmp_path: Path) -> None:
    """Args without Atelier's fields: qk_layernorm in the args makes it a Qwen3 again."""
    hf = hf_model("qwen3")
    mg = tmp_path / "mg"
    hf2mg(Hf2MgOptions(load_dir=hf, save_dir=mg, tp=2))
    for t in range(2):
        path = rank_path(mg, t, 0, 1)
        ck = load_rank(path)
        assert ck["args"].qk_layernorm and ck["args"].kv_channels == 16
        for name in list(vars(ck["args"])):
            if name.startswith("atelier_"):
                delattr(ck["args"], name)
        torch.save(ck, path)
    shutil.rmtree(mg / "hf_assets")
    _assert_converts_back_exactly(hf, mg, tmp_path / "out")
