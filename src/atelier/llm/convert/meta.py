"""The shape of a model, independent of where it is stored.

`ModelMeta` is what every reader must produce and every writer needs: sizes, the
rotary setup and the dtype. It is built from a Hugging Face `config.json` or from
the `args` Namespace in a Megatron `model_optim_rng.pt`, and turned back into both.
The original `config.json` rides along in the Megatron args (`atelier_hf_config`)
so that mg2hf can restore fields Megatron has no name for (token ids, sliding window).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from typing import Any

import torch

from atelier.core.errors import AtelierError
from atelier.llm.convert.families import Family, detect_family, family_for_args, get_family

DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def parse_dtype(name: str, where: str) -> torch.dtype:
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise AtelierError(f"{where}: unknown dtype {name!r}; use bf16, fp16 or fp32") from None


@dataclass
class ModelMeta:
    """Sizes and settings of a Llama-layout model; `fam` is its tensor table."""

    family: str
    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_heads: int
    num_groups: int
    head_dim: int
    vocab_size: int
    tied: bool
    qkv_bias: bool
    rope_theta: float
    norm_eps: float
    max_positions: int
    dtype: torch.dtype
    rope_scaling: dict[str, Any] | None = None
    hf_config: dict[str, Any] = field(default_factory=dict)

    @property
    def fam(self) -> Family:
        return get_family(self.family)

    @property
    def qk_norm(self) -> bool:
        return self.fam.arch.qk_norm

    @property
    def untied(self) -> bool:
        return not self.tied

    def num_parameters(self) -> int:
        """Unpadded parameter count, as Hugging Face would report it."""
        fam = self.fam
        layer = sum(torch.Size(p.shape(self)).numel() for p in fam.parts_for(self))
        model = sum(torch.Size(p.shape(self)).numel() for p in fam.model_parts_for(self))
        return self.num_layers * layer + model


def _rope(config: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """rope_theta and scaling, wherever this transformers version put them."""
    params = config.get("rope_parameters") or {}
    theta = config.get("rope_theta", params.get("rope_theta", 10000.0))
    scaling = config.get("rope_scaling")
    if scaling is None and params.get("rope_type", "default") != "default":
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
    return float(theta), scaling


def meta_from_hf_config(
    config: dict[str, Any], where: str = "config.json", dtype: torch.dtype | None = None
) -> ModelMeta:
    """Sizes of a Hugging Face `config.json` (a dict); errors name `where`.

    `dtype` defaults to the config's `torch_dtype` / `dtype` (float32 when it has none).
    """
    fam = detect_family(config, where)
    if dtype is None:
        stored = config.get("torch_dtype") or config.get("dtype") or "float32"
        dtype = parse_dtype(str(stored), f"{where}: torch_dtype")
    values: dict[str, Any] = {}
    for hf_name, meta_name in fam.config_map.items():
        if hf_name in config and config[hf_name] is not None:
            values[meta_name] = config[hf_name]
    for required in ("num_layers", "hidden_size", "ffn_hidden_size", "num_heads", "vocab_size"):
        if required not in values:
            hf_name = next(k for k, v in fam.config_map.items() if v == required)
            raise AtelierError(
                f"{where}: field {hf_name!r} is missing; is this a {fam.name} config.json?"
            )
    values.setdefault("num_groups", values["num_heads"])
    values.setdefault("tied", False)
    values.setdefault("norm_eps", 1e-6)
    values.setdefault("max_positions", 4096)
    head_dim = config.get("head_dim") or values["hidden_size"] // values["num_heads"]
    theta, scaling = _rope(config)
    qkv_bias = fam.arch.qkv_bias or bool(config.get("attention_bias", False))
    return ModelMeta(
        family=fam.name,
        head_dim=int(head_dim),
        qkv_bias=qkv_bias,
        rope_theta=theta,
        rope_scaling=scaling,
        dtype=dtype,
        hf_config=dict(config),
        **values,
    )


def hf_config_from_meta(meta: ModelMeta) -> dict[str, Any]:
    """A config.json for `meta`: the original one when known, else rebuilt from defaults."""
    fam = meta.fam
    config = dict(meta.hf_config) if meta.hf_config else dict(fam.config_defaults)
    for hf_name, meta_name in fam.config_map.items():
        config[hf_name] = getattr(meta, meta_name)
    if not meta.hf_config:
        config["head_dim"] = meta.head_dim
        config["rope_theta"] = meta.rope_theta
        if meta.rope_scaling:
            config["rope_scaling"] = meta.rope_scaling
    config["torch_dtype"] = dtype_name(meta.dtype)
    if "dtype" in config:
        config["dtype"] = dtype_name(meta.dtype)
    return config


def megatron_args(
    meta: ModelMeta,
    *,
    tp: int,
    pp: int,
    layer_list: list[int],
    padded_vocab: int,
    divisible_by: int,
    fmt: str,
    norms: str,
    seq_length: int | None = None,
) -> argparse.Namespace:
    """The `args` Namespace Megatron-LM / MindSpeed-LLM need to build this model."""
    dt, arch = meta.dtype, meta.fam.arch
    scaling = meta.rope_scaling or {}
    llama3 = "llama3" in arch.rope_scalings and (
        scaling.get("rope_type", scaling.get("type")) == "llama3"
    )
    return argparse.Namespace(
        num_layers=meta.num_layers,
        hidden_size=meta.hidden_size,
        ffn_hidden_size=meta.ffn_hidden_size,
        num_attention_heads=meta.num_heads,
        kv_channels=meta.head_dim,
        group_query_attention=meta.num_groups != meta.num_heads,
        num_query_groups=meta.num_groups,
        seq_length=seq_length or meta.max_positions,
        max_position_embeddings=meta.max_positions,
        padded_vocab_size=padded_vocab,
        vocab_size=meta.vocab_size,
        true_vocab_size=meta.vocab_size,
        make_vocab_size_divisible_by=divisible_by,
        position_embedding_type="rope",
        use_rotary_position_embeddings=True,
        rotary_base=meta.rope_theta,
        rotary_percent=1.0,
        use_rope_scaling=llama3,
        rope_scaling_type="llama3" if llama3 else None,
        rope_scaling_factor=scaling.get("factor", 1.0),
        low_freq_factor=scaling.get("low_freq_factor"),
        high_freq_factor=scaling.get("high_freq_factor"),
        rope_scaling_original_max_position_embeddings=scaling.get(
            "original_max_position_embeddings"
        ),
        normalization=arch.norm,
        norm_epsilon=meta.norm_eps,
        swiglu=arch.activation == "silu",
        qk_layernorm=meta.qk_norm,
        untie_embeddings_and_output_weights=not meta.tied,
        add_qkv_bias=meta.qkv_bias,
        add_bias_linear=False,
        disable_bias_linear=True,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        num_layer_list=",".join(map(str, layer_list)) if len(set(layer_list)) > 1 else None,
        params_dtype=dt,
        bf16=dt == torch.bfloat16,
        fp16=dt == torch.float16,
        model_type="GPT",
        use_mcore_models=fmt == "mcore",
        use_legacy_models=fmt == "legacy",
        transformer_impl="transformer_engine" if norms == "te" else "local",
        iteration=1,
        consumed_train_samples=0,
        consumed_valid_samples=0,
        atelier_family=meta.family,
        atelier_format=fmt,
        atelier_mcore_norms=norms,
        atelier_hf_config=json.dumps(meta.hf_config) if meta.hf_config else None,
    )


def meta_from_megatron_args(args: Any, where: str, dtype: torch.dtype) -> ModelMeta:
    """Rebuild `ModelMeta` from Megatron args; the embedded HF config wins where present."""
    hf_raw = getattr(args, "atelier_hf_config", None)
    if hf_raw:
        meta = meta_from_hf_config(json.loads(hf_raw), where, dtype)
        meta.vocab_size = int(getattr(args, "true_vocab_size", None) or meta.vocab_size)
        return meta

    def need(name: str) -> Any:
        value = getattr(args, name, None)
        if value is None:
            raise AtelierError(
                f"{where}: args.{name} is missing; this is not a GPT checkpoint "
                "written by Megatron-LM, MindSpeed-LLM or Atelier"
            )
        return value

    heads = int(need("num_attention_heads"))
    hidden = int(need("hidden_size"))
    groups = heads
    if getattr(args, "group_query_attention", False):
        groups = int(need("num_query_groups"))
    family = family_for_args(args).name
    scaling = None
    if getattr(args, "use_rope_scaling", False) or getattr(args, "rope_scaling_type", None):
        scaling = {
            "rope_type": "llama3",
            "factor": args.rope_scaling_factor,
            "low_freq_factor": getattr(args, "low_freq_factor", None) or 1.0,
            "high_freq_factor": getattr(args, "high_freq_factor", None) or 4.0,
            "original_max_position_embeddings": getattr(
                args, "rope_scaling_original_max_position_embeddings", None
            )
            or 8192,
        }
    vocab = (
        getattr(args, "true_vocab_size", None)
        or getattr(args, "vocab_size", None)
        or need("padded_vocab_size")
    )
    return ModelMeta(
        family=family,
        num_layers=int(need("num_layers")),
        hidden_size=hidden,
        ffn_hidden_size=int(need("ffn_hidden_size")),
        num_heads=heads,
        num_groups=groups,
        head_dim=int(getattr(args, "kv_channels", None) or hidden // heads),
        vocab_size=int(vocab),
        tied=not getattr(args, "untie_embeddings_and_output_weights", False),
        qkv_bias=bool(getattr(args, "add_qkv_bias", False)),
        rope_theta=float(getattr(args, "rotary_base", 10000)),
        norm_eps=float(getattr(args, "norm_epsilon", 1e-5)),
        max_positions=int(
            getattr(args, "max_position_embeddings", None) or getattr(args, "seq_length", 4096)
        ),
        dtype=dtype,
        rope_scaling=scaling,
    )
