"""The platform guide's environment-variable form of `preprocess`.

Its container scripts set these instead of flags; each is read only when the
matching flag is absent, so a flag always wins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from atelier.core.errors import AtelierError

ENV_TO_FIELD = {
    "ORIGINAL_TRAIN_DATA_PATH": "input",
    "TOKENIZER_PATH": "tokenizer_name_or_path",
    "PROCESSED_DATA_PREFIX": "output_prefix",
    "TOKENIZER_TYPE": "tokenizer_type",
    "SEQ_LEN": "seq_length",
    "PROMPT_TYPE": "prompt_type",
    "TEMPLATE_SOURCE": "template_source",
}
RUN_TYPES = ("pretrain", "sft", "lora")


def apply_env(values: dict[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Fill fields that are None from the environment; return the updated copy."""
    env = os.environ if environ is None else environ
    out = dict(values)
    for var, name in ENV_TO_FIELD.items():
        if out.get(name) is None and env.get(var):
            value: Any = env[var]
            if name == "seq_length":
                try:
                    value = int(value)
                except ValueError:
                    raise AtelierError(f"{var}={value!r}: must be an integer") from None
            out[name] = value
    run_type = env.get("RUN_TYPE")
    if out.get("handler_name") is None and run_type:
        if run_type not in RUN_TYPES:
            raise AtelierError(f"RUN_TYPE={run_type!r}: use one of {', '.join(RUN_TYPES)}")
        # sft/lora pick the instruction handler from the data's layout
        out["handler_name"] = "GeneralPretrainHandler" if run_type == "pretrain" else "auto"
    return out
