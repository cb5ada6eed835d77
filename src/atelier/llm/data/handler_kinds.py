"""`--handler-name`s: MindSpeed-LLM's names -> the kind of data, and what each writes.

A name MindSpeed has but Atelier does not implement is refused with one line saying why
and what to use instead (MindSpeed itself silently falls back to pretraining).
"""

from __future__ import annotations

from atelier.core.errors import AtelierError

HANDLERS = {
    "GeneralPretrainHandler": "pretrain",
    "GeneralInstructionHandler": "alpaca",
    "AlpacaStyleInstructionHandler": "alpaca",
    "SharegptStyleInstructionHandler": "sharegpt",
    "AlpacaStylePairwiseHandler": "alpaca_pairwise",
    "SharegptStylePairwiseHandler": "sharegpt_pairwise",
    "PPOAlpacaStyleInstructionHandler": "alpaca_ppo",
    "AlpacaStyleProcessRewardHandler": "process_reward",
}
# MindSpeed-LLM handlers Atelier does not implement, and why (one line each).
REFUSED_HANDLERS = {
    "LlamaFactoryInstructionHandler": "it reads a LLaMA-Factory dataset_info.json registry; "
    "use AlpacaStyleInstructionHandler or SharegptStyleInstructionHandler with --map-keys",
    "HunyuanInstructionHandler": "it needs the Hunyuan tokenizer's own chat template",
    "R1AlpacaStyleInstructionHandler": "R1 (GRPO) prompt data is not supported yet",
    "R1SharegptStyleInstructionHandler": "R1 (GRPO) prompt data is not supported yet",
    "AlpacaPretrainHandler": "use GeneralPretrainHandler on a text column",
    "BelleMultiTurnInstructionHandler": "use SharegptStyleInstructionHandler",
    "MOSSMultiTurnHandler": "use SharegptStyleInstructionHandler",
    "MOSSInstructionHandler": "use SharegptStyleInstructionHandler",
    "LeetcodePythonInstructionHandler": "use AlpacaStyleInstructionHandler with --map-keys",
    "StackOverflowPythonPretrainHandler": "use GeneralPretrainHandler on a text column",
}
INSTRUCTION_KEYS = ("input_ids", "attention_mask", "labels")
# Output keys per handler kind, in MindSpeed's order (its `args.json_keys`).
OUTPUT_KEYS = {
    "alpaca": INSTRUCTION_KEYS,
    "sharegpt": INSTRUCTION_KEYS,
    "alpaca_pairwise": (
        "chosen_input_ids",
        "chosen_labels",
        "rejected_input_ids",
        "rejected_labels",
    ),
    "sharegpt_pairwise": (
        "chosen_input_ids",
        "chosen_labels",
        "rejected_input_ids",
        "rejected_labels",
    ),
    "alpaca_ppo": ("input_ids", "attention_mask"),
    "process_reward": ("input_ids", "labels", "attention_mask"),
}
SFT_KINDS = ("alpaca", "sharegpt")  # the kinds --pack and --append-eod apply to


def handler_kind(name: str) -> str:
    if name in REFUSED_HANDLERS:
        raise AtelierError(f"--handler-name {name}: not supported: {REFUSED_HANDLERS[name]}")
    if name not in HANDLERS:
        raise AtelierError(f"--handler-name {name}: unknown; known: {', '.join(HANDLERS)}")
    return HANDLERS[name]
