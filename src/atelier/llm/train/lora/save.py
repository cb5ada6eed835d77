"""What a LoRA run's rank file holds, in MindSpeed-LLM's names (see `state.rank_file_entries`)."""

from __future__ import annotations

from typing import Any

import torch

from atelier.llm.train.checkpoint.rank_file import megatron_name, rank_file_names
from atelier.llm.train.lora.state import rank_file_entries


def lora_rank_file_tensors(
    model: torch.nn.Module, req: Any, pp_size: int = 1
) -> tuple[list[tuple[str, torch.Tensor]], dict[str, torch.dtype]]:
    """(name, parameter) in file order and per-tensor dtypes for `save.SaveRequest` `req`."""
    have = {
        megatron_name(fqn): t
        for fqn, t in model.state_dict(keep_vars=True).items()
        if not fqn.endswith("._extra_state") and isinstance(t, torch.Tensor)
    }
    return rank_file_entries(
        have,
        rank_file_names(req.meta, pp_size),
        req.lora,
        dtype=req.dtype,
        base_dtype=req.base_dtype or req.dtype,
    )
