"""The Hugging Face folder a training run writes at the end (CONVERT_MG2HF, --convert-mg2hf).

Where it goes (an explicit folder, or MindSpeed's `<hf_save_dir or save>/mg2hf_iteration<N>`)
and how: mg2hf of the latest checkpoint in `save`, or, for a LoRA run, the adapters merged
into the run's base model. Apart from `run.py` because it is conversion, not training.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atelier.llm.train.run import TrainRequest


def hf_target(req: TrainRequest, iteration: int) -> Path | None:
    """The folder the export of `iteration` goes to; None when the run exports nothing."""
    if req.convert_mg2hf is not None:
        return req.convert_mg2hf
    if req.convert_mindspeed:
        base = req.hf_save_dir or req.save
        assert base is not None
        return base / f"mg2hf_iteration{iteration}"
    return None


def lora_export(req: TrainRequest, save: Path) -> Any:
    """mg2hf's LoRA options for a LoRA run: merge the adapters saved in `save` into the
    run's base model (`req.load`), with the run's r, alpha and targets; None otherwise."""
    from atelier.llm.convert.lora_checkpoint import LoraOptions

    spec = req.config.get("lora")
    if spec is None:
        return None
    return LoraOptions(
        load=save, r=spec.r, alpha=spec.alpha, target_modules=tuple(spec.target_modules)
    )


def export_hf(req: TrainRequest, save: Path, out: Path, lora: Any = None) -> Path:
    """The latest checkpoint in `save` as a complete Hugging Face folder; a LoRA run's
    (`lora`: `lora_export`) with W + (alpha / r) B A merged into the base of `req.load`."""
    from atelier.llm.convert import mg2hf

    if lora is not None:
        assert req.load is not None  # a LoRA run always has its base in --load
    mg2hf(
        save if lora is None else req.load,
        out,
        hf_config_dir=req.hf_cfg_dir,
        tokenizer_model=Path(req.tokenizer) if req.tokenizer else None,
        lora=lora,
    )
    return out
