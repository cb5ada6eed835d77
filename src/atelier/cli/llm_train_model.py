"""Model-shape flags of `atelier llm train` / `run`: they describe, the checkpoint decides.

Megatron scripts spell out the architecture (`--num-layers`, `--swiglu`, `--rotary-base`
...); here the loaded checkpoint is the truth, so these flags are only checked against it
(sizes by the engine, the other facts by `run.check_agrees`). This module holds the flags
and splits what the user gave into those two checks.
"""

from __future__ import annotations

import argparse
from typing import Any

from atelier.core.flags import POSITIVE_FLOAT, Float, Int

# Flags describing the architecture: they must say what the checkpoint is (checked).
ARCH_CHOICES = {
    "--position-embedding-type": ["rope"],
    "--normalization": ["RMSNorm"],
    "--attention-mask-type": ["causal"],
}
ARCH_SWITCHES = (
    "--swiglu",
    "--disable-bias-linear",
    "--use-rotary-position-embeddings",
    "--group-query-attention",
)
SIZE_FLAGS = (
    "--num-layers",
    "--hidden-size",
    "--ffn-hidden-size",
    "--num-attention-heads",
    "--num-query-groups",
    "--max-position-embeddings",
    "--kv-channels",
    "--padded-vocab-size",
    "--vocab-size",
)


def add_model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model shape (read from the checkpoint; given ones must agree)")
    for flag in SIZE_FLAGS:
        g.add_argument(flag, type=Int(1, 1 << 31), default=None)
    g.add_argument("--rotary-base", type=POSITIVE_FLOAT, default=None)
    g.add_argument("--norm-epsilon", type=POSITIVE_FLOAT, default=None)
    g.add_argument("--untie-embeddings-and-output-weights", action="store_true")
    g.add_argument("--add-qkv-bias", action="store_true")
    g.add_argument("--qk-layernorm", action="store_true")
    g.add_argument(
        "--make-vocab-size-divisible-by", type=Int(1, 1 << 20), default=128, help="default 128"
    )
    for flag, choices in ARCH_CHOICES.items():
        g.add_argument(flag, choices=choices, default=None, help="the only kind supported")
    for flag in ARCH_SWITCHES:
        g.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    g.add_argument("--hidden-dropout", type=Float(0, 0), default=0.0, help="only 0 (no dropout)")
    g.add_argument("--attention-dropout", type=Float(0, 0), default=0.0, help="only 0")


def model_shape(args: argparse.Namespace) -> tuple[dict[str, int | None], dict[str, Any]]:
    """(sizes TrainConfig checks against the checkpoint, facts `check_agrees` compares)."""
    shape = {
        "num_layers": args.num_layers,
        "hidden_size": args.hidden_size,
        "ffn_hidden_size": args.ffn_hidden_size,
        "num_attention_heads": args.num_attention_heads,
        "num_query_groups": args.num_query_groups,
        "max_position_embeddings": args.max_position_embeddings,
    }
    agree = {
        "kv_channels": args.kv_channels,
        "rotary_base": args.rotary_base,
        "norm_epsilon": args.norm_epsilon,
        "untie_embeddings_and_output_weights": args.untie_embeddings_and_output_weights or None,
        "add_qkv_bias": args.add_qkv_bias or None,
        "qk_layernorm": args.qk_layernorm or None,
    }
    return shape, agree
