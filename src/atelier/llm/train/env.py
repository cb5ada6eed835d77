"""The platform guide's environment form of `3_training.sh`, for `atelier llm train` / `run`.

The guide's container scripts set variables instead of flags; each is read only when the
matching flag is absent, so a flag always wins (as `llm.data.env` does for preprocess).
Values are validated here with the same ranges as the flags, naming the variable.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from atelier.core.errors import AtelierError
from atelier.core.flags import POSITIVE_FLOAT, POSITIVE_INT, SEED, Float, Int

# variable -> (field, type); the first variable of a field that is set wins.
ENV_TO_FIELD: dict[str, tuple[str, Any]] = {
    "DATASET_PATH": ("data_path", str),
    "DATA_PATH": ("data_path", str),
    "TOKENIZER_PATH": ("tokenizer_name_or_path", str),
    "MODEL_PATH": ("load", str),
    "CKPT_LOAD_DIR": ("load", str),
    "CONVERT_MODEL_PATH": ("load", str),
    "MODEL_SAVE_PATH": ("save", str),
    "CKPT_SAVE_PATH": ("save", str),
    "OUTPUT_SAVE_DIR": ("save", str),
    "MBS": ("micro_batch_size", POSITIVE_INT),
    "GBS": ("global_batch_size", POSITIVE_INT),
    "TP": ("tensor_model_parallel_size", Int(1, 1024)),
    "PP": ("pipeline_model_parallel_size", Int(1, 1024)),
    "LR": ("lr", POSITIVE_FLOAT),
    "MIN_LR": ("min_lr", Float(0)),
    "SEQ_LEN": ("seq_length", Int(1, 1 << 24)),
    "TRAIN_ITERS": ("train_iters", POSITIVE_INT),
    "SEED": ("seed", SEED),
    "MODEL_NAME": ("model_name", str),
    "MODEL_TYPE": ("model_name", str),
}
RUN_TYPES = ("pretrain", "sft", "lora")
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off", "")


def _convert(var: str, text: str, kind: Any) -> Any:
    if kind is str:
        return text
    try:
        return kind(text)
    except Exception as e:  # argparse.ArgumentTypeError from core.flags
        raise AtelierError(f"{var}={text!r}: {e}") from None


def env_bool(var: str, env: Mapping[str, str]) -> bool:
    text = env.get(var, "").strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise AtelierError(f"{var}={env[var]!r}: use True or False")


def apply_env(values: dict[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Fill fields that are None from the environment; return the updated copy.

    Adds `run_type` (RUN_TYPE), `convert_mg2hf_env` (CONVERT_MG2HF) and computes
    train_iters from SN (samples) x EPOCH / GBS when TRAIN_ITERS is not set.
    """
    env = os.environ if environ is None else environ
    out = dict(values)
    from_env: set[str] = set()
    for var, (name, kind) in ENV_TO_FIELD.items():
        if out.get(name) is None and env.get(var):
            out[name] = _convert(var, env[var], kind)
            from_env.add(name)
    if out.get("train_iters") is None and out.get("train_samples") is None and env.get("SN"):
        samples = _convert("SN", env["SN"], POSITIVE_INT)
        epochs = _convert("EPOCH", env.get("EPOCH") or "1", POSITIVE_INT)
        gbs = out.get("global_batch_size")
        if gbs is None:
            raise AtelierError("SN is set but GBS is not: train iterations are SN x EPOCH / GBS")
        out["train_iters"] = math.ceil(samples * epochs / gbs)
    run_type = env.get("RUN_TYPE", "").strip().lower() or None
    if run_type is not None and run_type not in RUN_TYPES:
        raise AtelierError(f"RUN_TYPE={env['RUN_TYPE']!r}: use one of {', '.join(RUN_TYPES)}")
    out["run_type"] = run_type
    out["convert_mg2hf_env"] = env_bool("CONVERT_MG2HF", env) if "CONVERT_MG2HF" in env else False
    out["from_env"] = from_env
    return out
