"""What a LoRA run adapts, in MindSpeed-LLM's argument names (`args.lora_*`).

MindSpeed enables LoRA when `--lora-target-modules` is non-empty and hands these values to
PEFT's `LoraConfig` (r, lora_alpha, target_modules, dropout 0, bias "none"): scaling is
alpha / r, A is Kaiming-uniform (a = sqrt(5)) and B zero, adapters are kept in fp32.
No torch here: the CLI and `TrainConfig` import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atelier.core.errors import AtelierError

COLUMN_PARALLEL = ("linear_qkv", "linear_fc1")  # A replicated, B split by rows over TP
ROW_PARALLEL = ("linear_proj", "linear_fc2")  # A split by columns over TP, B replicated
TARGETS = ("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2")  # MindSpeed's usual set
ADAPTER = "default"  # PEFT's adapter name, part of every adapter tensor's name


@dataclass
class LoraSpec:
    """One LoRA run: which Megatron linears get adapters, their rank and scale, and where
    earlier adapters come from (`load`, MindSpeed's --lora-load)."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = TARGETS
    modules_to_save: tuple[str, ...] = ()  # trained fully (e.g. word_embeddings, output_layer)
    load: Path | None = None  # a LoRA checkpoint (adapters [+ modules_to_save], train state)
    ckpt_filter: bool = False  # save only adapter tensors (+ modules_to_save)

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    def check(self) -> None:
        if self.r < 1:
            raise AtelierError(f"lora_r {self.r}: must be at least 1")
        if not self.alpha > 0:
            raise AtelierError(f"lora_alpha {self.alpha}: must be above 0")
        if not 0.0 <= self.dropout < 1.0:
            raise AtelierError(f"lora_dropout {self.dropout}: must be in [0, 1)")
        if not self.target_modules:
            raise AtelierError(f"lora_target_modules: give at least one of {', '.join(TARGETS)}")
        bad = [t for t in self.target_modules if t not in TARGETS]
        if bad:
            raise AtelierError(
                f"lora_target_modules {bad[0]}: not a linear of this model; use any of "
                f"{', '.join(TARGETS)}"
            )
        wrapped = set(self.target_modules) & set(self.modules_to_save)
        if wrapped:
            raise AtelierError(
                f"lora_modules_to_save {sorted(wrapped)[0]}: also a LoRA target; a module is "
                "either adapted or trained fully"
            )

    def is_target(self, module: str) -> bool:
        """`module` is a dotted module path; its last component names the linear."""
        return module.rpartition(".")[2] in self.target_modules

    def trains_fully(self, param: str) -> bool:
        """A parameter of a module named in modules_to_save (any component of its path)."""
        return any(part in self.modules_to_save for part in param.split(".")[:-1])

    def megatron_args(self) -> dict[str, Any]:
        """What MindSpeed records in a LoRA checkpoint's args (read by its convert_ckpt)."""
        return {
            "lora_r": self.r,
            "lora_alpha": self.alpha,
            "lora_dropout": self.dropout,
            "lora_target_modules": list(self.target_modules),
            "lora_modules_to_save": list(self.modules_to_save) or None,
            "lora_load": str(self.load) if self.load is not None else None,
            "lora_ckpt_filter": self.ckpt_filter,
        }
