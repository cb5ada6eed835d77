"""The `args` Namespace a training checkpoint carries, as Megatron-LM saves it.

The model fields are exactly what hf2mg writes (`convert.meta.megatron_args`), so mg2hf,
Megatron-LM and MindSpeed-LLM build the same model from it; the run's training settings
(batch sizes, learning-rate schedule, consumed samples) are added under Megatron's names,
as Megatron's own checkpoints hold them (`--use-checkpoint-args` reads them back).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from atelier.llm.convert.meta import ModelMeta, megatron_args
from atelier.llm.convert.sharding import padded_vocab_size

# TrainConfig fields that are not Megatron arguments, or that the model fields already cover.
_SKIP = {"data", "extra_args", "nproc_per_node", "device", "compile", "convert_mg2hf", "lora"}


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def checkpoint_args(
    meta: ModelMeta,
    *,
    tp: int,
    pp: int = 1,
    layer_list: list[int] | None = None,
    divisible_by: int = 128,
    seq_length: int | None = None,
    iteration: int = 1,
    consumed_train_samples: int = 0,
    consumed_valid_samples: int = 0,
    config: Any | None = None,
) -> argparse.Namespace:
    """Model args as hf2mg writes them, plus the run's settings from `config` (a TrainConfig).

    With `config=None`, iteration 1 and no consumed samples the result equals hf2mg's args,
    which is what makes an untrained save byte-identical to hf2mg's files.
    """
    args = megatron_args(
        meta,
        tp=tp,
        pp=pp,
        layer_list=layer_list or [meta.num_layers // pp] * pp,
        padded_vocab=padded_vocab_size(meta.vocab_size, divisible_by, tp),
        divisible_by=divisible_by,
        fmt="mcore",
        norms="local",
        seq_length=seq_length,
    )
    if config is not None:
        model_fields = set(vars(args))
        for f in dataclasses.fields(config):
            if f.name in _SKIP or f.name in model_fields:
                continue
            setattr(args, f.name, _plain(getattr(config, f.name)))
        for key, value in getattr(config, "extra_args", {}).items():
            if key not in model_fields:
                setattr(args, key, _plain(value))
        if getattr(config, "lora", None) is not None:  # MindSpeed's args.lora_* names
            for key, value in config.lora.megatron_args().items():
                setattr(args, key, value)
    args.iteration = iteration
    args.consumed_train_samples = consumed_train_samples
    args.consumed_valid_samples = consumed_valid_samples
    return args
