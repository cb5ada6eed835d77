"""Megatron state-dict names, legacy and mcore, and the nested legacy container.

Roles: `embed`, `final_norm`, `output`, `head_copy` (the tied output-embedding copy
on the last stage of a multi-stage pipeline) and per layer `input_norm`, `qkv`,
`qkv_bias`, `proj`, `post_norm`, `fc1`, `fc2`. Layer numbers are local to a stage.

Reading accepts the spellings Megatron-LM and MindSpeed-LLM have used
(`input_norm`/`input_layernorm`, `final_norm`/`final_layernorm`, `encoder`/`transformer`,
TE-fused norms or separate ones); writing uses one spelling per format.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

LAYER_ROLES = ("input_norm", "qkv", "qkv_bias", "proj", "post_norm", "fc1", "fc2")

LEGACY: dict[str, str] = {
    "embed": "language_model.embedding.word_embeddings.weight",
    "final_norm": "language_model.encoder.final_norm.weight",
    "output": "language_model.output_layer.weight",
    "head_copy": "word_embeddings_for_head.weight",
    "input_norm": "language_model.encoder.layers.{i}.input_norm.weight",
    "qkv": "language_model.encoder.layers.{i}.self_attention.query_key_value.weight",
    "qkv_bias": "language_model.encoder.layers.{i}.self_attention.query_key_value.bias",
    "proj": "language_model.encoder.layers.{i}.self_attention.dense.weight",
    "post_norm": "language_model.encoder.layers.{i}.post_attention_norm.weight",
    "fc1": "language_model.encoder.layers.{i}.mlp.dense_h_to_4h.weight",
    "fc2": "language_model.encoder.layers.{i}.mlp.dense_4h_to_h.weight",
}

MCORE_LOCAL: dict[str, str] = {
    "embed": "embedding.word_embeddings.weight",
    "final_norm": "decoder.final_layernorm.weight",
    "output": "output_layer.weight",
    "head_copy": "output_layer.weight",
    "input_norm": "decoder.layers.{i}.input_layernorm.weight",
    "qkv": "decoder.layers.{i}.self_attention.linear_qkv.weight",
    "qkv_bias": "decoder.layers.{i}.self_attention.linear_qkv.bias",
    "proj": "decoder.layers.{i}.self_attention.linear_proj.weight",
    "post_norm": "decoder.layers.{i}.pre_mlp_layernorm.weight",
    "fc1": "decoder.layers.{i}.mlp.linear_fc1.weight",
    "fc2": "decoder.layers.{i}.mlp.linear_fc2.weight",
}

MCORE_TE: dict[str, str] = {
    **MCORE_LOCAL,
    "input_norm": "decoder.layers.{i}.self_attention.linear_qkv.layer_norm_weight",
    "post_norm": "decoder.layers.{i}.mlp.linear_fc1.layer_norm_weight",
}


def names_for(fmt: str, norms: str = "local") -> dict[str, str]:
    if fmt == "legacy":
        return LEGACY
    return MCORE_TE if norms == "te" else MCORE_LOCAL


# Older spellings, rewritten to the ones above before lookup.
_ALIASES = (
    (re.compile(r"^language_model\.transformer\."), "language_model.encoder."),
    (re.compile(r"\.input_layernorm\.weight$"), ".input_norm.weight"),
    (re.compile(r"\.post_attention_layernorm\.weight$"), ".post_attention_norm.weight"),
    (
        re.compile(r"^language_model\.encoder\.final_layernorm\."),
        "language_model.encoder.final_norm.",
    ),
)


def canonical_legacy_name(name: str) -> str:
    if not name.startswith("language_model."):
        return name
    for pattern, repl in _ALIASES:
        name = pattern.sub(repl, name)
    return name


def flatten(model: Mapping[str, Any], prefix: str = "") -> dict[str, torch.Tensor]:
    """Nested legacy containers -> dotted names; `_extra_state` entries are dropped."""
    flat: dict[str, torch.Tensor] = {}
    for key, value in model.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        elif isinstance(value, torch.Tensor):
            flat[name] = value
    return flat


def nest_legacy(flat: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Dotted legacy names -> the nested dict Megatron's legacy GPTModel saves.

    {'language_model': {'embedding': {'word_embeddings': {'weight'}},
    'encoder': {'layers.N...': t, 'final_norm.weight': t}, 'output_layer': {'weight'}},
    'word_embeddings_for_head': {'weight'}}
    """
    out: dict[str, Any] = {}
    for name, t in flat.items():
        if name.startswith("language_model.encoder."):
            enc = out.setdefault("language_model", {}).setdefault("encoder", {})
            enc[name.removeprefix("language_model.encoder.")] = t
            continue
        node = out
        *path, leaf = name.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = t
    return out


def detect_format(flat: Mapping[str, torch.Tensor]) -> tuple[str, str]:
    """(format, norms) of a flat state dict: legacy|mcore, te|local."""
    names = list(flat)
    if any(n.startswith(("decoder.", "embedding.", "output_layer.")) for n in names):
        norms = "te" if any(n.endswith("linear_qkv.layer_norm_weight") for n in names) else "local"
        return "mcore", norms
    return "legacy", "local"
