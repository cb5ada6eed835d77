"""Run in a subprocess: build megatron-core's GPTModel from our args, load our rank file.

Usage: python megatron_core_load.py RANK_FILE... Prints one line per file:
"missing=[...] unexpected=[...] shapes_ok=...".
A separate process because megatron-core needs a (one-process, gloo) process group.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch


def main(paths: list[str]) -> None:
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    from megatron.core import parallel_state

    parallel_state.initialize_model_parallel(1, 1)
    for path in paths:
        check(path)


def check(path: str) -> None:
    with torch.serialization.safe_globals([argparse.Namespace]):
        ck = torch.load(path, weights_only=True)
    model = build_model(ck["args"])
    missing, unexpected = model.load_state_dict(ck["model"], strict=False)
    shapes_ok = all(model.state_dict()[k].shape == v.shape for k, v in ck["model"].items())
    print(f"missing={sorted(missing)} unexpected={sorted(unexpected)} shapes_ok={shapes_ok}")


def build_model(a: argparse.Namespace):  # -> megatron-core GPTModel
    """megatron-core's GPTModel (local spec) from the args Atelier writes."""
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer.transformer_config import TransformerConfig

    cfg = TransformerConfig(
        num_layers=a.num_layers,
        hidden_size=a.hidden_size,
        ffn_hidden_size=a.ffn_hidden_size,
        num_attention_heads=a.num_attention_heads,
        num_query_groups=a.num_query_groups,
        kv_channels=a.kv_channels,
        normalization=a.normalization,
        gated_linear_unit=a.swiglu,
        activation_func=torch.nn.functional.silu,
        add_bias_linear=a.add_bias_linear,
        add_qkv_bias=a.add_qkv_bias,
        qk_layernorm=getattr(a, "qk_layernorm", False),
        use_cpu_initialization=True,
        layernorm_epsilon=a.norm_epsilon,
        params_dtype=a.params_dtype,
    )
    return GPTModel(
        cfg,
        get_gpt_layer_local_spec(
            normalization=a.normalization, qk_layernorm=getattr(a, "qk_layernorm", False)
        ),
        vocab_size=a.padded_vocab_size,
        max_sequence_length=a.max_position_embeddings,
        position_embedding_type=a.position_embedding_type,
        rotary_base=a.rotary_base,
        share_embeddings_and_output_weights=not a.untie_embeddings_and_output_weights,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
