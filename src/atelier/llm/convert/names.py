"""Megatron state-dict spellings and the nested legacy container.

The names themselves (legacy, mcore local, mcore TE) are columns of the family table
(`families.Part`); this module only knows the container shapes and the older spellings.
Layer numbers are local to a stage.

Reading accepts the spellings Megatron-LM and MindSpeed-LLM have used
(`input_norm`/`input_layernorm`, `final_norm`/`final_layernorm`, `encoder`/`transformer`,
TE-fused norms or separate ones); writing uses one spelling per format.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from atelier.llm.convert.llama_layout import INPUT_NORM

# A TE-fused input norm marks TE naming (the table's mcore_te column).
_TE_NORM = re.compile(re.escape(str(INPUT_NORM.mcore_te)).replace(r"\{i\}", r"\d+") + "$")

# Older legacy spellings, rewritten to the table's legacy names before lookup.
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
        norms = "te" if any(_TE_NORM.search(n) for n in names) else "local"
        return "mcore", norms
    return "legacy", "local"
