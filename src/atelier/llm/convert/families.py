"""Model families as data: one table per family, the single source of truth.

Every tensor of a model is a `Part` row: its Hugging Face name(s), its Megatron names
(legacy, mcore with local norms, mcore with Transformer Engine norms), how its shape
follows from the model's sizes, and how tensor parallelism splits it (`Split`). The
architecture facts that are not tensors (norm kind and eps field, activation, QKV bias,
qk-norm, rotary kind and the scalings Megatron has args for, config field names) are
`Arch` fields. Readers, writers, the conversion plan and the TP slicing all walk the
table; no conversion code names a family or a tensor. Adding a family is one
`Family(...)` entry in `FAMILIES` (a new layer tensor is one more `Part` row).

Where each piece is: the row types (`Split`, `Part`, `Arch`) in `parts.py`, the rows of
the Llama layout every family uses today in `llama_layout.py`, and here each family's
entry (its rows, config map and facts) with the look-ups; `FAMILIES` is the one table.

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

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from atelier.core.errors import AtelierError
from atelier.llm.convert.llama_layout import (
    EMBED,
    FINAL_NORM,
    HEAD_COPY,
    LLAMA_CONFIG_MAP,
    LLAMA_LAYER,
    OUTPUT,
    QK_NORM_LAYER,
)
from atelier.llm.convert.parts import Arch, Part, Split

if TYPE_CHECKING:
    from atelier.llm.convert.meta import ModelMeta

# The public API listed above (Split, Part and Arch are defined in parts.py).
__all__ = [
    "FAMILIES",
    "Arch",
    "Family",
    "Part",
    "Split",
    "detect_family",
    "family_for_args",
    "get_family",
    "supported_architectures",
]


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
