"""`atelier llm run`: the platform guide's whole job from one request.

preprocess when the dataset is missing, hf2mg when the converted weights are missing,
train (`run.run_training`), mg2hf; steps whose outputs exist are skipped, as the
platform's scripts do. Kept apart from `run.py`, which is one training run.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from atelier.core.errors import AtelierError
from atelier.core.log import get_logger
from atelier.llm.train.run import RunReport, TrainRequest, run_training

log = get_logger(__name__)


def _dataset_exists(prefix: str, instruction: bool) -> bool:
    if instruction:
        return Path(f"{prefix}_packed_input_ids_document.idx").is_file()
    return Path(f"{prefix}.idx").is_file() and Path(f"{prefix}.bin").is_file()


def _preprocess(req: TrainRequest, raw: str) -> None:
    from atelier.llm.data.preprocess import PreprocessConfig, preprocess
    from atelier.llm.data.tokenizer import TokenizerSpec

    if len(req.data_path) != 1:
        raise AtelierError(
            "--data-path: a blend cannot be preprocessed in one step; give one prefix"
        )
    prefix = req.data_path[0]
    if req.is_instruction:
        output, handler = prefix, "AlpacaStyleInstructionHandler"
    else:
        if not prefix.endswith("_text_document"):
            raise AtelierError(
                f"--data-path {prefix}: preprocess writes <prefix>_text_document; give a data "
                "path ending in _text_document to have it preprocessed"
            )
        output, handler = prefix.removesuffix("_text_document"), "GeneralPretrainHandler"
    if req.tokenizer is None:
        raise AtelierError("--tokenizer-name-or-path is required to preprocess --raw-data-path")
    report = preprocess(
        PreprocessConfig(
            input=raw,
            output_prefix=output,
            tokenizer=TokenizerSpec(type=req.tokenizer_type, name_or_path=req.tokenizer),
            handler_name=handler if not req.is_instruction else "auto",
            append_eod=not req.is_instruction,
            prompt_type=req.config.get("extra_args", {}).get("prompt_type")
            or os.environ.get("PROMPT_TYPE"),
        )
    )
    log.info("preprocess: %s", "; ".join(report.lines()))


def run_pipeline(req: TrainRequest, raw_data: str | None, converted: Path | None) -> RunReport:
    """preprocess -> hf2mg -> train -> mg2hf, each skipped when its output exists."""
    from atelier.llm.convert import Hf2MgOptions, hf2mg
    from atelier.llm.train.checkpoint.layout import read_tracker
    from atelier.llm.train.data import parse_blend

    steps: list[str] = []
    raw = raw_data or os.environ.get("ORIGINAL_TRAIN_DATA_PATH")
    prefixes = parse_blend(req.data_path)[0]
    missing = [p for p in prefixes if not _dataset_exists(p, req.is_instruction)]
    if missing:
        if raw is None:
            raise AtelierError(
                f"--data-path {missing[0]}: dataset not found (no .bin/.idx); give "
                "--raw-data-path (or ORIGINAL_TRAIN_DATA_PATH) to preprocess it first"
            )
        _preprocess(req, raw)
        steps.append(f"preprocess: {raw} -> {req.data_path[0]}")
    else:
        steps.append("preprocess: skipped (dataset exists)")
    hf = Path(os.environ["MODEL_PATH"]) if os.environ.get("MODEL_PATH") else req.load
    target = converted or (
        Path(os.environ["CONVERT_MODEL_PATH"]) if os.environ.get("CONVERT_MODEL_PATH") else None
    )
    if hf is not None and (hf / "config.json").is_file():
        target = target or hf.parent / f"{hf.name}_mcore"
        if read_tracker(target) is None:
            tp = int(req.config.get("tensor_model_parallel_size", 1))
            pp = int(req.config.get("pipeline_model_parallel_size", 1))
            hf2mg(
                Hf2MgOptions(
                    load_dir=hf,
                    save_dir=target,
                    tp=tp,
                    pp=pp,  # the run's stages, as the guide converts (any layout loads)
                    num_layer_list=req.config.get("num_layer_list"),
                    make_vocab_size_divisible_by=int(
                        req.config.get("make_vocab_size_divisible_by", 128)
                    ),
                    tokenizer_model=Path(req.tokenizer) if req.tokenizer else None,
                )
            )
            steps.append(f"hf2mg: {hf} -> {target} (T={tp}, P={pp})")
        else:
            steps.append(f"hf2mg: skipped ({target} exists)")
        req = dataclasses.replace(req, load=target, hf_cfg_dir=req.hf_cfg_dir or hf)
    if not req.wants_hf:
        req = dataclasses.replace(req, convert_mindspeed=True)
    report = run_training(req)
    report.lines_ = steps + report.lines_
    return report
