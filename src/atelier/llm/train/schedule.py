"""Learning-rate and weight-decay schedule, counted in samples as Megatron counts them.

The formulas are megatron-core's `OptimizerParamScheduler` (warmup, constant, linear,
cosine, inverse-square-root, WSD with its four anneal shapes; weight-decay increments) so a
run's lr sequence equals Megatron's; `tests/llm/train/test_schedule.py` checks it against
megatron-core itself. Like Megatron, steps are samples: the scheduler advances by the
global batch size after each optimizer step, and iteration 1 trains with the lr of step 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from atelier.core.errors import AtelierError
from atelier.llm.train.config import TrainConfig


@dataclass
class ParamScheduler:
    """Megatron's schedule as a value: `lr()`/`wd()` at `num_steps` (samples seen)."""

    max_lr: float
    min_lr: float
    init_lr: float
    lr_warmup_steps: float  # a fraction of the decay steps need not be whole (as Megatron)
    lr_decay_steps: int
    lr_decay_style: str
    start_wd: float
    end_wd: float
    wd_incr_steps: int
    wd_incr_style: str = "constant"
    wsd_decay_steps: int | None = None
    lr_wsd_decay_style: str | None = None
    num_steps: int = 0

    def lr(self) -> float:
        max_lr, min_lr, n = self.max_lr, self.min_lr, self.num_steps
        if self.lr_warmup_steps > 0 and n <= self.lr_warmup_steps:
            return self.init_lr + (max_lr - self.init_lr) * float(n) / float(self.lr_warmup_steps)
        if self.lr_decay_style == "constant":
            return max_lr
        if n > self.lr_decay_steps:
            return min_lr
        if self.lr_decay_style == "inverse-square-root":
            warmup = max(self.lr_warmup_steps, 1)
            return max(min_lr, max_lr * warmup**0.5 / (max(n, 1) ** 0.5))
        ratio = float(n - self.lr_warmup_steps) / float(self.lr_decay_steps - self.lr_warmup_steps)
        if self.lr_decay_style == "linear":
            coeff = 1.0 - ratio
        elif self.lr_decay_style == "cosine":
            coeff = 0.5 * (math.cos(math.pi * ratio) + 1.0)
        else:  # WSD: stable until the last wsd_decay_steps, then anneal
            assert self.wsd_decay_steps is not None
            anneal_start = self.lr_decay_steps - self.wsd_decay_steps
            if n <= anneal_start:
                coeff = 1.0
            else:
                r = float(n - anneal_start) / float(self.wsd_decay_steps)
                coeff = {
                    "linear": lambda: 1.0 - r,
                    "cosine": lambda: 0.5 * (math.cos(math.pi * r) + 1.0),
                    "exponential": lambda: 2.0 * math.pow(0.5, r) - 1.0,
                    "minus_sqrt": lambda: 1.0 - math.sqrt(r),
                }[self.lr_wsd_decay_style or "exponential"]()
        return min_lr + coeff * (max_lr - min_lr)

    def wd(self) -> float:
        if self.num_steps > self.wd_incr_steps or self.wd_incr_style == "constant":
            return self.end_wd
        ratio = float(self.num_steps) / float(self.wd_incr_steps)
        if self.wd_incr_style == "linear":
            coeff = ratio
        else:  # cosine
            coeff = 0.5 * (math.cos(math.pi * (1 - ratio)) + 1.0)
        return self.start_wd + coeff * (self.end_wd - self.start_wd)

    def apply(self, param_groups: list[dict[str, Any]]) -> None:
        """Write the current lr and weight decay into optimizer groups (wd_mult 0: no decay)."""
        lr, wd = self.lr(), self.wd()
        for group in param_groups:
            group["lr"] = lr
            group["weight_decay"] = wd * group.get("wd_mult", 1.0)

    def step(self, increment: int) -> None:
        self.num_steps += increment

    def state_dict(self) -> dict[str, Any]:
        return {"num_steps": self.num_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.num_steps = int(state["num_steps"])


def total_iterations(cfg: TrainConfig, global_batch_size: int) -> int:
    """Iterations of the run: train_iters, or train_samples rounded up to whole batches."""
    if cfg.train_iters is not None:
        return cfg.train_iters
    assert cfg.train_samples is not None
    return math.ceil(cfg.train_samples / global_batch_size)


def scheduler_from_config(cfg: TrainConfig, global_batch_size: int) -> ParamScheduler:
    """Megatron's `get_optimizer_param_scheduler`: iteration or sample based."""
    gbs = global_batch_size
    if cfg.train_iters is not None:
        decay = (cfg.lr_decay_iters or cfg.train_iters) * gbs
        wd_steps = cfg.train_iters * gbs
        wsd = cfg.lr_wsd_decay_iters * gbs if cfg.lr_wsd_decay_iters is not None else None
        warmup = (
            cfg.lr_warmup_fraction * decay
            if cfg.lr_warmup_fraction is not None
            else cfg.lr_warmup_iters * gbs
        )
    else:
        assert cfg.train_samples is not None
        decay = cfg.lr_decay_samples or cfg.train_samples
        wd_steps = cfg.train_samples
        wsd = cfg.lr_wsd_decay_samples
        warmup = (
            cfg.lr_warmup_fraction * decay
            if cfg.lr_warmup_fraction is not None
            else cfg.lr_warmup_samples
        )
    if cfg.lr_decay_style == "WSD" and wsd is None:
        raise AtelierError("lr_decay_style WSD needs lr_wsd_decay_iters (or _samples)")
    if warmup >= decay:
        raise AtelierError(
            f"lr warmup ({warmup / gbs:g} iterations) must be shorter than lr_decay_iters "
            f"({decay / gbs:g})"
        )
    start_wd = cfg.weight_decay if cfg.start_weight_decay is None else cfg.start_weight_decay
    end_wd = cfg.weight_decay if cfg.end_weight_decay is None else cfg.end_weight_decay
    return ParamScheduler(
        max_lr=cfg.lr,
        min_lr=cfg.min_lr,
        init_lr=cfg.lr_warmup_init,
        lr_warmup_steps=warmup,
        lr_decay_steps=decay,
        lr_decay_style=cfg.lr_decay_style,
        start_wd=start_wd,
        end_wd=end_wd,
        wd_incr_steps=wd_steps,
        wd_incr_style=cfg.weight_decay_incr_style,
        wsd_decay_steps=wsd,
        lr_wsd_decay_style=cfg.lr_wsd_decay_style,
    )
