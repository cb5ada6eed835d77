"""MindSpeed-LLM's `GeneralInstructionHandler`: its one Python template, `AlpacaTemplate`.

Without `--prompt-type` (MindSpeed refuses one for this handler) a record is
written as MindSpeed's `Prompter.generate_training_prompt` writes it:

    "\\n{system}\\n### Instruction:\\n{instruction}\\n{input}\\n### Response:\\n{output}\\n"

tokenized as one text with the tokenizer's own special tokens (`tokenizer(text)`:
Llama's BOS), the prompt up to `### Response:\\n` (tokenized alone, as MindSpeed
does) labelled -100. No EOS is trained unless `--append-eod` asks for it.
"""

from __future__ import annotations

from typing import Any

from atelier.llm.data.conversation import ALPACA_KEYS, RecordError

SYSTEM = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request. "
    "Please note that you need to think through your response logically and step by step."
)
RESPONSE = "### Response:"
IGNORE = -100


def general_prompts(record: Any, map_keys: dict[str, Any]) -> tuple[str, str]:
    """(the whole text, the prompt part that is masked) of one record."""
    if not isinstance(record, dict):
        raise RecordError(f"expected a JSON object, got {type(record).__name__}")
    keys = {**ALPACA_KEYS, **{k: v for k, v in map_keys.items() if k in ALPACA_KEYS}}
    values = {}
    for field, column in keys.items():
        value = record.get(column)
        if value is None and field == "query":
            value = ""
        if not isinstance(value, str):
            present = ", ".join(sorted(map(str, record))) or "none"
            raise RecordError(
                f"{column!r} must be text (keys present: {present}); "
                f'map it with --map-keys \'{{"{field}": "<column>"}}\''
            )
        values[field] = value
    whole = (
        f"\n{SYSTEM}\n### Instruction:\n{values['prompt']}\n{values['query']}\n"
        f"{RESPONSE}\n{values['response']}\n"
    )
    return whole, whole.rsplit(RESPONSE, 1)[0] + RESPONSE + "\n"


def general_ids(whole: list[int], prompt: list[int]) -> tuple[list[int], list[int]]:
    """(input_ids, labels): MindSpeed's `labels[:len(prompt)] = [-100] * len(prompt)`."""
    labels = list(whole)
    labels[: len(prompt)] = [IGNORE] * len(prompt)
    return list(whole), labels[: len(whole)]
