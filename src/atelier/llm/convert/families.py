"""Model families as data: one table per family, the single source of truth.

Every tensor of a model is a `Part` row: its Hugging Face name(s), its Megatron names
(legacy, mcore with local norms, mcore with Transformer Engine norms), how its shape
follows from the model's sizes, and how tensor parallelism splits it (`Split`). The
architecture facts that are not tensors (norm kind and eps field, activation, QKV bias,
qk-norm, rotary kind and the scalings Megatron has args for, config field names) are
`Arch` fields. Readers, writers, the conversion plan and the TP slicing all walk the
table; no conversion code names a family or a tensor. Adding a family is one
`Family(...)` entry in `FAMILIES` (a new layer tensor is one more `Part` row).

Public API (stable; the trainer builds its decoder from it):

- `Split`: COLUMN (dim 0), ROW (dim 1), REPLICATED, QKV (q/k/v fused per query group,
  groups split over ranks), GATE_UP (fc1 = [gate_r; up_r] per rank), VOCAB (rows
  padded to Megatron's padded vocabulary, then split on dim 0); `Split.dim` is the
  dimension a kind shards (0, 1 or None).
- `Part`: `role`, `pieces` (canonical HF-layout piece keys, e.g. `("q", "k", "v")`),
  `hf` (HF name templates, one per piece, `{i}` = global layer number), `legacy`,
  `mcore`, `mcore_te` (Megatron name templates, `{i}` = layer number local to the
  pipeline stage), `split`, `when` (a `ModelMeta` flag the part depends on, or None),
  `piece_shapes(meta)` (HF shapes, one per piece), `shape(meta)` (the full, unsharded
  Megatron shape, unpadded) and `rank_shape(meta, tp, padded_vocab)`; `name(fmt, norms)`
  picks the Megatron name for `fmt` in {legacy, mcore} and `norms` in {local, te}.
- `Family`: `name`, `architectures`, `model_types`, `arch`, `layer_parts` (per-layer
  `Part`s in save order), `embed`, `final_norm`, `output`, `head_copy` (model parts),
  `config_map` (HF config field -> `ModelMeta` field), `config_defaults`;
  `parts_for(meta)` / `model_parts_for(meta)` give the parts present in one model.
- `FAMILIES`, `get_family(name)`, `detect_family(hf_config, where)`,
  `family_for_args(args)` (a checkpoint Atelier did not write).

The in-memory conversions built on the table are in `state_dicts.py`
(`hf_to_megatron_rank`, `source_to_megatron_rank`, `megatron_ranks_to_hf`, `reshard`,
`HFStateSource`, and `StateDictSource` from `megatron_state.py`);
`meta.meta_from_hf_config` / `meta.megatron_args` turn configs into a `ModelMeta` (sizes,
`tied`/`untied`, `qkv_bias`, `qk_norm`, rope) and back. All of these are exported by
`atelier.llm.convert`.

Megatron-core parameter names (mcore local) are what the trainer's modules are named:
`embedding.word_embeddings.weight`, `decoder.layers.N.input_layernorm.weight`,
`...self_attention.linear_qkv.weight` (+ `.bias`), `...self_attention.q_layernorm.weight`
/ `k_layernorm.weight` (qk-norm), `...self_attention.linear_proj.weight`,
`...pre_mlp_layernorm.weight`, `...mlp.linear_fc1.weight`, `...mlp.linear_fc2.weight`,
`decoder.final_layernorm.weight`, `output_layer.weight`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from atelier.core.errors import AtelierError

if TYPE_CHECKING:
    from atelier.llm.convert.meta import ModelMeta


class Split(enum.Enum):
    """How tensor parallelism divides a part over TP ranks."""

    COLUMN = "column"  # output features on dim 0
    ROW = "row"  # input features on dim 1
    REPLICATED = "replicated"  # every rank holds all of it (norms)
    QKV = "qkv"  # [q; k; v] fused per query group, each rank a contiguous run of groups
    GATE_UP = "gate_up"  # [gate_r; up_r] per rank
    VOCAB = "vocab"  # rows padded to the padded vocabulary, then dim 0

    @property
    def dim(self) -> int | None:
        """The dimension TP shards (1 row-parallel, 0 every column-like kind, None replicated)."""
        if self is Split.REPLICATED:
            return None
        return 1 if self is Split.ROW else 0


Shape = tuple[int, ...]


@dataclass(frozen=True)
class Part:
    """One Megatron tensor and the Hugging Face tensor(s) it is made of."""

    role: str
    pieces: tuple[str, ...]
    hf: tuple[str, ...]
    legacy: str | None  # None: Megatron's legacy GPTModel has no such parameter
    mcore: str
    split: Split
    piece_shapes: Callable[[ModelMeta], tuple[Shape, ...]]
    mcore_te: str | None = None  # None: same as `mcore`
    when: str | None = None  # a ModelMeta flag; the part exists only when it is true

    def name(self, fmt: str, norms: str = "local") -> str | None:
        if fmt == "legacy":
            return self.legacy
        if norms == "te" and self.mcore_te is not None:
            return self.mcore_te
        return self.mcore

    def present(self, meta: ModelMeta) -> bool:
        return self.when is None or bool(getattr(meta, self.when))

    def shape(self, meta: ModelMeta) -> Shape:
        """Full Megatron shape (fused pieces stacked on dim 0), unpadded."""
        shapes = self.piece_shapes(meta)
        if len(shapes) == 1:
            return shapes[0]
        return (sum(s[0] for s in shapes), *shapes[0][1:])

    def rank_shape(self, meta: ModelMeta, tp: int, padded_vocab: int | None = None) -> Shape:
        """Shape of one TP rank's shard."""
        full = self.shape(meta)
        if self.split is Split.REPLICATED:
            return full
        if self.split is Split.ROW:
            return (full[0], full[1] // tp, *full[2:])
        if self.split is Split.VOCAB:
            rows = padded_vocab if padded_vocab is not None else full[0]
            return (rows // tp, *full[1:])
        return (full[0] // tp, *full[1:])


@dataclass(frozen=True)
class Arch:
    """Architecture facts that are not tensors."""

    norm: str = "RMSNorm"  # Megatron's `normalization`
    norm_eps_field: str = "rms_norm_eps"  # the HF config field holding the epsilon
    activation: str = "silu"  # gated (SwiGLU): act(gate) * up
    qkv_bias: bool = False  # always (Qwen2); Llama may turn it on with `attention_bias`
    qk_norm: bool = False  # RMSNorm per head over head_dim on q and k, before rotary
    rope: str = "rotate_half"  # rotary over the two halves of each head (HF and Megatron)
    rope_scalings: tuple[str, ...] = ("llama3",)  # scalings with Megatron args


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


@dataclass(frozen=True)
class Family:
    """One family: how its config is read, its architecture facts and its tensor table."""

    name: str
    architectures: tuple[str, ...]
    model_types: tuple[str, ...]
    arch: Arch = field(default_factory=Arch)
    layer_parts: tuple[Part, ...] = LLAMA_LAYER
    embed: Part = EMBED
    final_norm: Part = FINAL_NORM
    output: Part = OUTPUT
    head_copy: Part = HEAD_COPY
    base_config_map: dict[str, str] = field(default_factory=lambda: LLAMA_CONFIG_MAP)
    # Written into a rebuilt config.json when no original config is at hand.
    config_defaults: dict[str, Any] = field(default_factory=dict)
    # The family a foreign checkpoint (no `atelier_family` in args) with these facts
    # is rebuilt as; one per (qkv_bias, qk_norm) combination.
    rebuild_from_args: bool = False
    # MindSpeed-LLM `convert_ckpt.py --model-type-hf` names that convert this family
    # (MindSpeed converts every Llama-layout model as `llama2`), plus friendly aliases.
    mindspeed_model_types: tuple[str, ...] = ("llama2",)

    def __post_init__(self) -> None:
        roles = {p.role for p in self.layer_parts}
        if self.arch.qk_norm != ({"q_norm", "k_norm"} <= roles):
            raise ValueError(f"family {self.name}: arch.qk_norm disagrees with its parts")

    @property
    def config_map(self) -> dict[str, str]:
        return {**self.base_config_map, self.arch.norm_eps_field: "norm_eps"}

    def parts_for(self, meta: ModelMeta) -> list[Part]:
        """The layer parts one model has (QKV bias only when it has one)."""
        return [p for p in self.layer_parts if p.present(meta)]

    def model_parts_for(self, meta: ModelMeta) -> list[Part]:
        """Embedding, final norm and (untied) output, in save order."""
        return [p for p in (self.embed, self.final_norm, self.output) if p.present(meta)]

    def hf_names(self) -> dict[str, str]:
        """Piece key -> HF name template, for every piece of every part."""
        out: dict[str, str] = {}
        for p in (self.embed, self.final_norm, self.output, *self.layer_parts):
            out.update(zip(p.pieces, p.hf, strict=True))
        return out


_LLAMA_DEFAULTS = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_act": "silu",
    "attention_bias": False,
    "mlp_bias": False,
}

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "llama",
            ("LlamaForCausalLM",),
            ("llama",),
            config_defaults=_LLAMA_DEFAULTS,
            rebuild_from_args=True,
            mindspeed_model_types=("llama2", "llama3", "llama", "yi"),
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
            mindspeed_model_types=("llama2", "mistral"),
        ),
        Family(
            "qwen2",
            ("Qwen2ForCausalLM",),
            ("qwen2",),
            arch=Arch(qkv_bias=True),
            config_defaults={
                "architectures": ["Qwen2ForCausalLM"],
                "model_type": "qwen2",
                "hidden_act": "silu",
                "use_sliding_window": False,
            },
            rebuild_from_args=True,
            mindspeed_model_types=("llama2", "qwen2", "qwen25", "qwen15"),
        ),
        Family(
            "qwen3",
            ("Qwen3ForCausalLM",),
            ("qwen3",),
            arch=Arch(qk_norm=True),
            layer_parts=QK_NORM_LAYER,
            config_defaults={
                "architectures": ["Qwen3ForCausalLM"],
                "model_type": "qwen3",
                "hidden_act": "silu",
                "attention_bias": False,
                "use_sliding_window": False,
            },
            rebuild_from_args=True,
            mindspeed_model_types=("qwen3",),  # MindSpeed's llama2 mapping has no q/k norms
        ),
        # Yi is the Llama architecture; early releases named it YiForCausalLM.
        Family(
            "yi",
            ("YiForCausalLM",),
            ("yi", "Yi"),
            config_defaults=_LLAMA_DEFAULTS,
            mindspeed_model_types=("llama2", "yi"),
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


def family_for_args(args: Any) -> Family:
    """The family of Megatron args: Atelier's own record, else the facts the args state."""
    name = getattr(args, "atelier_family", None)
    if name:
        return get_family(name)
    qkv_bias = bool(getattr(args, "add_qkv_bias", False))
    qk_norm = bool(getattr(args, "qk_layernorm", False))
    for fam in FAMILIES.values():
        if fam.rebuild_from_args and (fam.arch.qk_norm, fam.arch.qkv_bias) == (qk_norm, qkv_bias):
            return fam
    base = next(f for f in FAMILIES.values() if f.rebuild_from_args and f.arch.qk_norm == qk_norm)
    return base  # e.g. Llama with attention_bias: QKV bias is a per-model flag
