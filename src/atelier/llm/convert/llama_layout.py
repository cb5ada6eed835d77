"""The Llama layout's rows: every tensor of a Llama-style decoder as a `Part`.

Llama, Mistral, Qwen2, Qwen3 and Yi share these rows (Qwen3 adds the q/k norms); a
`Family` in `families.py` picks its layer rows and config map from here. Each row names
the tensor in Hugging Face, Megatron legacy, mcore local and mcore TE spellings, with its
shape rule and TP split: the single place those names are written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from atelier.llm.convert.parts import Part, Shape, Split

if TYPE_CHECKING:
    from atelier.llm.convert.meta import ModelMeta


# --- shape rules --------------------------------------------------------------------------


def _h(m: ModelMeta) -> tuple[Shape, ...]:
    return ((m.hidden_size,),)


def _d(m: ModelMeta) -> tuple[Shape, ...]:
    return ((m.head_dim,),)


def _qkv(m: ModelMeta) -> tuple[Shape, ...]:
    h, q, kv = m.hidden_size, m.num_heads * m.head_dim, m.num_groups * m.head_dim
    return ((q, h), (kv, h), (kv, h))


def _qkv_bias(m: ModelMeta) -> tuple[Shape, ...]:
    q, kv = m.num_heads * m.head_dim, m.num_groups * m.head_dim
    return ((q,), (kv,), (kv,))


def _proj(m: ModelMeta) -> tuple[Shape, ...]:
    return ((m.hidden_size, m.num_heads * m.head_dim),)


def _gate_up(m: ModelMeta) -> tuple[Shape, ...]:
    return ((m.ffn_hidden_size, m.hidden_size),) * 2


def _down(m: ModelMeta) -> tuple[Shape, ...]:
    return ((m.hidden_size, m.ffn_hidden_size),)


def _vocab(m: ModelMeta) -> tuple[Shape, ...]:
    return ((m.vocab_size, m.hidden_size),)


# --- the Llama-layout table ---------------------------------------------------------------

_HF = "model.layers.{i}."
_LEG = "language_model.encoder.layers.{i}."
_MC = "decoder.layers.{i}."

EMBED = Part(
    "embed",
    ("embed",),
    ("model.embed_tokens.weight",),
    "language_model.embedding.word_embeddings.weight",
    "embedding.word_embeddings.weight",
    Split.VOCAB,
    _vocab,
)
FINAL_NORM = Part(
    "final_norm",
    ("final_norm",),
    ("model.norm.weight",),
    "language_model.encoder.final_norm.weight",
    "decoder.final_layernorm.weight",
    Split.REPLICATED,
    _h,
)
OUTPUT = Part(
    "output",
    ("lm_head",),
    ("lm_head.weight",),
    "language_model.output_layer.weight",
    "output_layer.weight",
    Split.VOCAB,
    _vocab,
    when="untied",
)
# Tied embeddings with P > 1: the last stage keeps a copy of the embedding for the head.
HEAD_COPY = Part(
    "head_copy",
    ("embed",),
    ("model.embed_tokens.weight",),
    "word_embeddings_for_head.weight",
    "output_layer.weight",
    Split.VOCAB,
    _vocab,
)

INPUT_NORM = Part(
    "input_norm",
    ("input_norm",),
    (_HF + "input_layernorm.weight",),
    _LEG + "input_norm.weight",
    _MC + "input_layernorm.weight",
    Split.REPLICATED,
    _h,
    mcore_te=_MC + "self_attention.linear_qkv.layer_norm_weight",
)
QKV = Part(
    "qkv",
    ("q", "k", "v"),
    tuple(_HF + f"self_attn.{x}_proj.weight" for x in "qkv"),
    _LEG + "self_attention.query_key_value.weight",
    _MC + "self_attention.linear_qkv.weight",
    Split.QKV,
    _qkv,
)
QKV_BIAS = Part(
    "qkv_bias",
    ("q_bias", "k_bias", "v_bias"),
    tuple(_HF + f"self_attn.{x}_proj.bias" for x in "qkv"),
    _LEG + "self_attention.query_key_value.bias",
    _MC + "self_attention.linear_qkv.bias",
    Split.QKV,
    _qkv_bias,
    when="qkv_bias",
)
Q_NORM = Part(
    "q_norm",
    ("q_norm",),
    (_HF + "self_attn.q_norm.weight",),
    None,
    _MC + "self_attention.q_layernorm.weight",
    Split.REPLICATED,
    _d,
)
K_NORM = Part(
    "k_norm",
    ("k_norm",),
    (_HF + "self_attn.k_norm.weight",),
    None,
    _MC + "self_attention.k_layernorm.weight",
    Split.REPLICATED,
    _d,
)
PROJ = Part(
    "proj",
    ("o",),
    (_HF + "self_attn.o_proj.weight",),
    _LEG + "self_attention.dense.weight",
    _MC + "self_attention.linear_proj.weight",
    Split.ROW,
    _proj,
)
POST_NORM = Part(
    "post_norm",
    ("post_norm",),
    (_HF + "post_attention_layernorm.weight",),
    _LEG + "post_attention_norm.weight",
    _MC + "pre_mlp_layernorm.weight",
    Split.REPLICATED,
    _h,
    mcore_te=_MC + "mlp.linear_fc1.layer_norm_weight",
)
FC1 = Part(
    "fc1",
    ("gate", "up"),
    (_HF + "mlp.gate_proj.weight", _HF + "mlp.up_proj.weight"),
    _LEG + "mlp.dense_h_to_4h.weight",
    _MC + "mlp.linear_fc1.weight",
    Split.GATE_UP,
    _gate_up,
)
FC2 = Part(
    "fc2",
    ("down",),
    (_HF + "mlp.down_proj.weight",),
    _LEG + "mlp.dense_4h_to_h.weight",
    _MC + "mlp.linear_fc2.weight",
    Split.ROW,
    _down,
)

LLAMA_LAYER: tuple[Part, ...] = (INPUT_NORM, QKV, QKV_BIAS, PROJ, POST_NORM, FC1, FC2)
# Qwen3: per-head RMSNorm on q and k (megatron-core `qk_layernorm`).
QK_NORM_LAYER: tuple[Part, ...] = (
    INPUT_NORM,
    QKV,
    QKV_BIAS,
    Q_NORM,
    K_NORM,
    PROJ,
    POST_NORM,
    FC1,
    FC2,
)

# HF config field -> ModelMeta field, shared by the Llama-layout families (the norm
# epsilon's field comes from `Arch.norm_eps_field`; `head_dim` is read where present,
# else hidden / heads, as transformers does).
LLAMA_CONFIG_MAP: dict[str, str] = {
    "num_hidden_layers": "num_layers",
    "hidden_size": "hidden_size",
    "intermediate_size": "ffn_hidden_size",
    "num_attention_heads": "num_heads",
    "num_key_value_heads": "num_groups",
    "vocab_size": "vocab_size",
    "max_position_embeddings": "max_positions",
    "tie_word_embeddings": "tied",
}
