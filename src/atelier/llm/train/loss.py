"""The training loss, normalised by the trained tokens of the global batch, and fp16 scaling.

Each micro-batch contributes sum(cross-entropy x loss_mask) / N, where N is the number of
trained tokens in the whole global batch (all micro-batches of all data-parallel ranks,
all-reduced before the first backward). Gradients are then summed over micro-batches and
ranks, so the update equals one pass over the global batch: SFT is exact under any DP size
and micro-batching. (Megatron averages per micro-batch instead, which weighs short
micro-batches more; see docs/llm-train.md.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def masked_token_loss_sum(
    logits: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor
) -> torch.Tensor:
    """Sum of fp32 cross-entropy over tokens where loss_mask is 1."""
    ce = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none"
    )
    return (ce * loss_mask.reshape(-1).float()).sum()


def global_token_count(loss_masks: list[torch.Tensor], group: object | None) -> torch.Tensor:
    """Trained tokens over all micro-batches of every data-parallel rank (one all-reduce)."""
    import torch.distributed as dist

    count = torch.stack([m.float().sum() for m in loss_masks]).sum()
    if group is not None and dist.get_world_size(group) > 1:
        dist.all_reduce(count, group=group)
    return count.clamp(min=1.0)


@dataclass
class DynamicLossScaler:
    """Megatron's DynamicGradScaler: halve on overflow (after `hysteresis` hits), grow x2
    after `growth_interval` clean steps."""

    scale: float
    min_scale: float = 1.0
    growth_interval: int = 1000
    hysteresis: int = 2
    growth_tracker: int = 0
    hysteresis_tracker: int = 2

    def update(self, found_inf: bool) -> None:
        if found_inf:
            self.growth_tracker = 0
            self.hysteresis_tracker -= 1
            if self.hysteresis_tracker <= 0:
                self.scale = max(self.scale * 0.5, self.min_scale)
        else:
            self.growth_tracker += 1
            if self.growth_tracker == self.growth_interval:
                self.growth_tracker = 0
                self.hysteresis_tracker = self.hysteresis
                self.scale *= 2.0

    def state_dict(self) -> dict[str, float | int]:
        return {
            "scale": self.scale,
            "growth_tracker": self.growth_tracker,
            "hysteresis_tracker": self.hysteresis_tracker,
        }

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.scale = float(state["scale"])
        self.growth_tracker = int(state["growth_tracker"])
        self.hysteresis_tracker = int(state["hysteresis_tracker"])


def unscale_and_check(params: list[torch.Tensor], scale: float, world_size: int) -> bool:
    """Divide gradients by the loss scale; True if any rank saw inf/nan (one all-reduce)."""
    import torch.distributed as dist

    flag: torch.Tensor | None = None
    for p in params:
        if p.grad is None:
            continue
        g = p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad
        g.mul_(1.0 / scale)
        bad = (~torch.isfinite(g)).any().float()
        flag = bad if flag is None else torch.maximum(flag, bad)
    assert flag is not None
    if dist.is_initialized() and world_size > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())
