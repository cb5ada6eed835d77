"""Model families as data: Hugging Face key names plus config field names.

A family is a registry entry, never a branch in conversion code. The families here
share the Llama layout (RMSNorm, half-split rotary, GQA, SwiGLU) and differ only in
what their `config.json` says (architecture names, QKV bias, tied embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from atelier.core.errors import AtelierError

# Canonical per-layer tensor names used between readers and writers.
LAYER_PARTS = (
    "input_norm",
    "q",
    "k",
    "v",
    "q_bias",
    "k_bias",
    "v_bias",
    "o",
    "post_norm",
    "gate",
    "up",
    "down",
)

LLAMA_KEYS: dict[str, str] = {
    "embed": "model.embed_tokens.weight",
    "final_norm": "model.norm.weight",
    "lm_head": "lm_head.weight",
    "input_norm": "model.layers.{i}.input_layernorm.weight",
    "q": "model.layers.{i}.self_attn.q_proj.weight",
    "k": "model.layers.{i}.self_attn.k_proj.weight",
    "v": "model.layers.{i}.self_attn.v_proj.weight",
    "q_bias": "model.layers.{i}.self_attn.q_proj.bias",
    "k_bias": "model.layers.{i}.self_attn.k_proj.bias",
    "v_bias": "model.layers.{i}.self_attn.v_proj.bias",
    "o": "model.layers.{i}.self_attn.o_proj.weight",
    "post_norm": "model.layers.{i}.post_attention_layernorm.weight",
    "gate": "model.layers.{i}.mlp.gate_proj.weight",
    "up": "model.layers.{i}.mlp.up_proj.weight",
    "down": "model.layers.{i}.mlp.down_proj.weight",
}

# HF config field -> ModelMeta field, shared by the Llama-layout families.
LLAMA_CONFIG_MAP: dict[str, str] = {
    "num_hidden_layers": "num_layers",
    "hidden_size": "hidden_size",
    "intermediate_size": "ffn_hidden_size",
    "num_attention_heads": "num_heads",
    "num_key_value_heads": "num_groups",
    "vocab_size": "vocab_size",
    "rms_norm_eps": "norm_eps",
    "max_position_embeddings": "max_positions",
    "tie_word_embeddings": "tied",
}


@dataclass(frozen=True)
class Family:
    """What distinguishes one family: names, fixed architecture facts, config defaults."""

    name: str
    architectures: tuple[str, ...]
    model_types: tuple[str, ...]
    qkv_bias: bool = False
    keys: dict[str, str] = field(default_factory=lambda: LLAMA_KEYS)
    config_map: dict[str, str] = field(default_factory=lambda: LLAMA_CONFIG_MAP)
    # Written into a rebuilt config.json when no original config is at hand.
    config_defaults: dict[str, Any] = field(default_factory=dict)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "llama",
            ("LlamaForCausalLM",),
            ("llama",),
            config_defaults={
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "hidden_act": "silu",
                "attention_bias": False,
                "mlp_bias": False,
            },
        ),
        Family(
            "mistral",
            ("MistralForCausalLM",),
            ("mistral",),
            config_defaults={
                "architectures": ["MistralForCausalLM"],
                "model_type": "mistral",
                "hidden_act": "silu",
                "sliding_window": None,
            },
        ),
        Family(
            "qwen2",
            ("Qwen2ForCausalLM",),
            ("qwen2",),
            qkv_bias=True,
            config_defaults={
                "architectures": ["Qwen2ForCausalLM"],
                "model_type": "qwen2",
                "hidden_act": "silu",
                "use_sliding_window": False,
            },
        ),
        # Yi is the Llama architecture; early releases named it YiForCausalLM.
        Family(
            "yi",
            ("YiForCausalLM",),
            ("yi", "Yi"),
            config_defaults={
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "hidden_act": "silu",
                "attention_bias": False,
                "mlp_bias": False,
            },
        ),
    )
}


def supported_architectures() -> list[str]:
    return sorted({a for f in FAMILIES.values() for a in f.architectures})


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise AtelierError(
            f"unknown model family {name!r}; supported: {', '.join(sorted(FAMILIES))}"
        ) from None


def detect_family(config: dict[str, Any], where: str) -> Family:
    """The family of a Hugging Face `config.json` (architectures first, then model_type)."""
    archs = config.get("architectures") or []
    for fam in FAMILIES.values():
        if any(a in fam.architectures for a in archs):
            return fam
    mtype = config.get("model_type")
    for fam in FAMILIES.values():
        if mtype in fam.model_types:
            return fam
    raise AtelierError(
        f"{where}: unsupported architecture {archs or mtype!r}; supported: "
        f"{', '.join(supported_architectures())}"
    )
