"""What training hooks receive and implement: the live state, per-step and eval metrics.

`loop.train` drives a run; checkpoints (`train.checkpoint`), metrics (`train.metrics`)
and signals (`train.signals`) are `TrainHooks` subclasses that only need these types, so
they live apart from the loop and its heavy set-up: `on_start` restores a saved state
into the live objects, `on_step`/`on_eval` receive metrics, `after_step` may save,
`should_stop` asks to end after the current step, `on_end` runs once with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from atelier.llm.convert.meta import ModelMeta
from atelier.llm.train.config import TrainConfig
from atelier.llm.train.loss import DynamicLossScaler
from atelier.llm.train.model.args import ModelArgs
from atelier.llm.train.parallelize import ParallelEnv
from atelier.llm.train.schedule import ParamScheduler


@dataclass
class TrainState:
    """The live objects of a run; hooks read and restore them."""

    cfg: TrainConfig
    env: ParallelEnv
    meta: ModelMeta
    model_args: ModelArgs
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: ParamScheduler
    scaler: DynamicLossScaler | None
    global_batch_size: int
    total_iters: int
    iteration: int = 0
    consumed_train_samples: int = 0
    consumed_valid_samples: int = 0
    start_time: float = field(default_factory=time.monotonic)
    pipeline: Any = None  # train.pipeline.Pipeline when pipeline_model_parallel_size > 1


@dataclass
class StepMetrics:
    iteration: int
    consumed_samples: int
    lm_loss: float
    lr: float
    grad_norm: float
    loss_scale: float | None
    skipped: bool
    tokens: int  # tokens processed by this step (global batch x seq length)
    step_time_s: float
    tokens_per_s: float
    trained_tokens: int


@dataclass
class EvalMetrics:
    iteration: int
    lm_loss: float
    perplexity: float


class TrainHooks:
    """No-op hooks; subclass (train.checkpoint, the CLI) and override what you need."""

    def on_start(self, state: TrainState) -> None:
        pass

    def on_step(self, state: TrainState, metrics: StepMetrics) -> None:
        pass

    def on_eval(self, state: TrainState, metrics: EvalMetrics) -> None:
        pass

    def after_step(self, state: TrainState) -> None:
        pass

    def should_stop(self, state: TrainState) -> bool:
        return False

    def on_end(self, state: TrainState, reason: str) -> None:
        pass


class HookList(TrainHooks):
    """Several hooks called in order (logging, then checkpointing, then signals)."""

    def __init__(self, hooks: Sequence[TrainHooks]) -> None:
        self.hooks = list(hooks)

    def on_start(self, state: TrainState) -> None:
        for h in self.hooks:
            h.on_start(state)

    def on_step(self, state: TrainState, metrics: StepMetrics) -> None:
        for h in self.hooks:
            h.on_step(state, metrics)

    def on_eval(self, state: TrainState, metrics: EvalMetrics) -> None:
        for h in self.hooks:
            h.on_eval(state, metrics)

    def after_step(self, state: TrainState) -> None:
        for h in self.hooks:
            h.after_step(state)

    def should_stop(self, state: TrainState) -> bool:
        return any([h.should_stop(state) for h in self.hooks])

    def on_end(self, state: TrainState, reason: str) -> None:
        for h in self.hooks:
            h.on_end(state, reason)
