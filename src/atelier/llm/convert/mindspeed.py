"""MindSpeed-LLM `convert_ckpt.py` semantics that differ from Atelier's own defaults.

Read from MindSpeed-LLM 2.0.0 (`mindspeed_llm/tasks/checkpoint/loader_hf.py`,
`loader_mg.py`, `saver.py`, `models.py`):

* `--model-type-hf` picks a mapping in `configs/checkpoint/model_cfg.json`; every
  Llama-layout model (Llama 2/3, Mistral, Qwen 1.5/2/2.5, Yi) is converted as `llama2`.
  Which names convert which Atelier family is data in the family table
  (`Family.mindspeed_model_types`).
* hf -> mg: `--params-dtype` defaults to fp16 and `--make-vocab-size-divisible-by` to 1
  (the HF loader's defaults); without `--use-mcore-models` the legacy layout is written.
* mg -> hf: the Megatron weights are loaded into a model of `--params-dtype` (default
  fp16 again), then copied into the original Hugging Face model, loaded from
  `--save-dir` in its `config.json` `torch_dtype` when that is float16 / bfloat16 and in
  float32 otherwise; the result is saved to `SAVE/mg2hf/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from atelier.core.errors import AtelierError
from atelier.llm.convert.families import FAMILIES, Family

# MindSpeed-LLM 2.0.0's `--model-type-hf` choices (convert_ckpt.py).
MINDSPEED_MODEL_TYPES = (
    "baichuan",
    "baichuan2",
    "llama2",
    "mixtral",
    "chatglm3",
    "gemma",
    "gemma2",
    "bloom",
    "bloom_3b",
    "qwen",
    "internlm2",
    "deepseek2",
    "minicpm",
    "minicpm3",
    "minicpm-moe",
    "deepseek2-lite",
    "qwen2-moe",
    "phi3.5",
    "phi3.5-moe",
    "hunyuan",
)


def known_model_types() -> list[str]:
    return sorted({t for f in FAMILIES.values() for t in f.mindspeed_model_types})


def check_model_type(model_type: str | None, fam: Family, where: str) -> None:
    """`--model-type-hf NAME` must be one that converts `fam` (the model actually read)."""
    if model_type is None or model_type in fam.mindspeed_model_types:
        return
    known = known_model_types()
    if model_type not in known:
        what = (
            "a MindSpeed-LLM model type Atelier does not convert"
            if (model_type in MINDSPEED_MODEL_TYPES)
            else "unknown"
        )
        raise AtelierError(
            f"--model-type-hf {model_type}: {what}; Atelier converts Llama-layout models: "
            f"{', '.join(known)}"
        )
    raise AtelierError(
        f"--model-type-hf {model_type}: {where} is a {fam.name} model; use one of "
        f"{', '.join(fam.mindspeed_model_types)}"
    )


def hf_save_dtype(config_dir: Path | None) -> torch.dtype | None:
    """The dtype MindSpeed's mg -> hf saver writes: the original config's `torch_dtype`
    when float16 / bfloat16, else float32 (`from_pretrained`'s default); None without
    a config. Newer transformers write the same field as `dtype`, read too."""
    if config_dir is None or not (config_dir / "config.json").is_file():
        return None
    from atelier.llm.convert.hf_checkpoint import read_json

    config = read_json(config_dir / "config.json")
    name = config.get("torch_dtype", config.get("dtype"))  # `dtype` since transformers 4.56
    return {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(str(name), torch.float32)


class CastSource:
    """A `CheckpointSource` whose tensors pass through `dtype` (MindSpeed's intermediate
    Megatron model of `--params-dtype`), so values round exactly as they do there."""

    def __init__(self, inner: Any, dtype: torch.dtype) -> None:
        self._inner, self._dtype = inner, dtype
        self.meta = inner.meta
        self.assets_dir = inner.assets_dir

    def _cast(self, t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None or t.dtype == self._dtype:
            return t
        return t.to(self._dtype)

    def embed(self) -> torch.Tensor:
        return self._cast(self._inner.embed())  # type: ignore[return-value]

    def final_norm(self) -> torch.Tensor:
        return self._cast(self._inner.final_norm())  # type: ignore[return-value]

    def lm_head(self) -> torch.Tensor | None:
        return self._cast(self._inner.lm_head())

    def layer(self, i: int) -> dict[str, torch.Tensor]:
        return {k: self._cast(v) for k, v in self._inner.layer(i).items()}  # type: ignore[misc]

    def close(self) -> None:
        self._inner.close()
