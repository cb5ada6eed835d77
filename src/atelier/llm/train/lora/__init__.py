"""LoRA fine-tuning in MindSpeed-LLM's layout (megatron-core wrapped by PEFT).

`spec.LoraSpec` (no torch) says what to adapt; `module.LoraLinear` is the wrapped linear
(`X.base_layer`, `X.lora_A.default`, `X.lora_B.default`); `state` turns rank state dicts
into the wrapped names and back, initialises or reads the adapters at any TP, and picks
what a LoRA checkpoint holds; `source` reads a full LoRA checkpoint as a base model.
See docs/llm-train.md, "LoRA".
"""

from atelier.llm.train.lora.spec import COLUMN_PARALLEL, ROW_PARALLEL, TARGETS, LoraSpec

__all__ = ["COLUMN_PARALLEL", "ROW_PARALLEL", "TARGETS", "LoraSpec"]
