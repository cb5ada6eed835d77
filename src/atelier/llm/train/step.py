"""One optimizer step and one evaluation over this rank's micro-batches of a global batch.

The numerics of a step: the globally normalised loss (trained tokens counted over DP),
gradient accumulation over GBS / (MBS x DP) micro-batches or the pipeline schedule,
TP partial-gradient sums, the fp16 loss scale, clipping, AdamW and the Megatron schedule;
evaluation is the token-weighted validation loss. `loop.train` calls these; the bench
drives them directly to time steps.
"""

from __future__ import annotations

import math
import time
from typing import Protocol

import torch
import torch.distributed as dist

from atelier.llm.train.hooks import EvalMetrics, StepMetrics, TrainState
from atelier.llm.train.loss import global_token_count, masked_token_loss_sum, unscale_and_check
from atelier.llm.train.optim import clip_gradients
from atelier.llm.train.parallelize import sum_tp_partial_grads

Batch = dict[str, torch.Tensor]  # tokens, labels, loss_mask [, position_ids, segment_ids]


class BatchSource(Protocol):
    """Micro-batches in Megatron's sampler order.

    `micro_batches(split, consumed, mbs, gbs, dp_rank, dp_size)` returns this rank's
    gbs / (mbs x dp_size) micro-batches of the global batch that starts after `consumed`
    samples of `split` ("train" or "valid"): micro-batch j holds samples
    consumed + j*mbs*dp_size + dp_rank*mbs + [0, mbs). `has_split(split)` says whether the
    split has samples (a 949,50,1 split may leave valid empty).
    """

    def micro_batches(
        self, split: str, consumed: int, mbs: int, gbs: int, dp_rank: int, dp_size: int
    ) -> list[Batch]: ...

    def has_split(self, split: str) -> bool: ...


def _to_device(b: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in b.items()}


def _forward_loss(model: torch.nn.Module, b: Batch) -> torch.Tensor:
    logits = model(b["tokens"], b.get("position_ids"), b.get("segment_ids"))
    return masked_token_loss_sum(logits, b["labels"], b["loss_mask"])


def next_train_batches(state: TrainState, data: BatchSource) -> list[Batch]:
    """This rank's micro-batches of the next global batch."""
    return data.micro_batches(
        "train",
        state.consumed_train_samples,
        state.cfg.micro_batch_size,
        state.global_batch_size,
        state.env.dp_rank,
        state.env.dp,
    )


def train_step(state: TrainState, batches: list[Batch]) -> StepMetrics:
    """One optimizer step over this rank's micro-batches of a global batch."""
    cfg, env, model = state.cfg, state.env, state.model
    t0 = time.perf_counter()
    batches = [_to_device(b, env.device) for b in batches]
    dp_group = env.mesh["dp"].get_group()
    count = global_token_count([b["loss_mask"] for b in batches], dp_group)
    params = [p for g in state.optimizer.param_groups for p in g["params"]]
    scale = state.scaler.scale if state.scaler else 1.0
    loss_sum = torch.zeros((), device=env.device)
    state.scheduler.apply(state.optimizer.param_groups)
    lr = state.optimizer.param_groups[0]["lr"]
    if state.pipeline is not None:  # the schedule runs forward and backward of every stage
        loss_sum = state.pipeline.forward_backward(batches, count, scale)
    else:
        for b in batches:
            loss = _forward_loss(model, b) / count
            (loss * scale if state.scaler else loss).backward()
            loss_sum += loss.detach()
    sum_tp_partial_grads(model, env)
    skipped = False
    if state.scaler:
        skipped = unscale_and_check(params, scale, env.world_size)
        state.scaler.update(skipped)
    norm = clip_gradients(params, cfg.clip_grad, env.world_size, env.pp)
    if not skipped:
        state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    if env.dp > 1:
        dist.all_reduce(loss_sum, group=dp_group)
    state.scheduler.step(state.global_batch_size)
    state.iteration += 1
    state.consumed_train_samples += state.global_batch_size
    # The one host sync of a step (metrics are reported per step).
    lm_loss, grad_norm, trained = torch.stack([loss_sum, norm.float(), count]).tolist()
    dt = time.perf_counter() - t0
    tokens = state.global_batch_size * cfg.seq_length
    return StepMetrics(
        iteration=state.iteration,
        consumed_samples=state.consumed_train_samples,
        lm_loss=lm_loss,
        lr=lr,
        grad_norm=grad_norm,
        loss_scale=scale if state.scaler else None,
        skipped=skipped,
        tokens=tokens,
        step_time_s=dt,
        tokens_per_s=tokens / dt if dt > 0 else 0.0,
        trained_tokens=int(trained),
    )


@torch.no_grad()
def evaluate(state: TrainState, data: BatchSource) -> EvalMetrics:
    """Validation loss over eval_iters global batches of the valid split (token-weighted)."""
    cfg, env = state.cfg, state.env
    total = torch.zeros((), device=env.device)
    count = torch.zeros((), device=env.device)
    state.model.eval()
    for _ in range(cfg.eval_iters):
        batches = data.micro_batches(
            "valid",
            state.consumed_valid_samples,
            cfg.micro_batch_size,
            state.global_batch_size,
            env.dp_rank,
            env.dp,
        )
        batches = [_to_device(b, env.device) for b in batches]
        if state.pipeline is not None:
            total += state.pipeline.loss_sum(batches)
        for b in batches:
            if state.pipeline is None:
                total += _forward_loss(state.model, b)
            count += b["loss_mask"].float().sum()
        state.consumed_valid_samples += state.global_batch_size
    state.model.train()
    both = torch.stack([total, count])
    if env.dp > 1:
        dist.all_reduce(both, group=env.mesh["dp"].get_group())
    loss = float(both[0] / both[1].clamp(min=1.0))
    return EvalMetrics(state.iteration, loss, math.exp(min(loss, 80.0)))
