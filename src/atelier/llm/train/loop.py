"""`train(cfg, hooks)`: the training loop, with everything else plugged in through hooks.

The loop owns the numerics: micro-batches of the global batch (gradient accumulation =
GBS / (MBS x DP)), the globally normalised loss, clipping, AdamW, the Megatron schedule,
the fp16 loss scale and evaluation. Checkpoints, logging, TensorBoard and signals live in
`train.checkpoint` and the CLI, which implement `TrainHooks`: `on_start` restores a saved
state into the live objects, `on_step`/`on_eval` receive metrics, `after_step` may save,
`should_stop` asks to end after the current step (every rank agrees through one
all-reduce), `on_end` runs once with the reason the run ended.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist

from atelier.core.errors import AtelierError
from atelier.core.log import get_logger
from atelier.llm.convert.meta import ModelMeta
from atelier.llm.convert.sharding import check_tensor_parallel
from atelier.llm.convert.source import CheckpointSource
from atelier.llm.train.config import TrainConfig
from atelier.llm.train.loss import (
    DynamicLossScaler,
    global_token_count,
    masked_token_loss_sum,
    unscale_and_check,
)
from atelier.llm.train.model.args import ModelArgs, args_from_meta
from atelier.llm.train.optim import build_optimizer, clip_gradients
from atelier.llm.train.parallelize import (
    ParallelEnv,
    build_model,
    init_parallel,
    sum_tp_partial_grads,
)
from atelier.llm.train.schedule import ParamScheduler, scheduler_from_config, total_iterations

log = get_logger(__name__)

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


@dataclass
class TrainResult:
    iterations: int
    consumed_samples: int
    losses: list[float]
    grad_norms: list[float]
    lrs: list[float]
    evals: list[EvalMetrics]
    stop_reason: str  # done | exit_interval | exit_duration | hook
    elapsed_s: float


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


def open_source(cfg: TrainConfig) -> CheckpointSource:
    """The weights to start from: `load` (Megatron checkpoint or HF folder) or random init."""
    from atelier.llm.convert.hf_checkpoint import HFSource
    from atelier.llm.train.lora.source import open_megatron
    from atelier.llm.train.model.weights import RandomSource

    if cfg.load is not None:
        load = Path(cfg.load)
        if not load.is_dir():
            raise AtelierError(f"load {load}: not a folder")
        if not any(load.iterdir()):
            raise AtelierError(f"load {load}: the folder is empty; give a checkpoint folder")
        if (load / "config.json").is_file():
            return HFSource(load)
        return open_megatron(load)  # (a full LoRA checkpoint reads as its base model)
    shape = {
        "num_layers": cfg.num_layers,
        "hidden_size": cfg.hidden_size,
        "ffn_hidden_size": cfg.ffn_hidden_size,
        "num_attention_heads": cfg.num_attention_heads,
    }
    missing = [k for k, v in shape.items() if v is None]
    if missing:
        raise AtelierError(
            f"no load checkpoint and no model shape: give load, or {', '.join(missing)}"
        )
    vocab = cfg.extra_args.get("vocab_size")
    if vocab is None:
        raise AtelierError("a model from scratch needs the vocabulary size (vocab_size)")
    heads = int(shape["num_attention_heads"])  # type: ignore[arg-type]
    meta = ModelMeta(
        family="llama",
        num_layers=int(shape["num_layers"]),  # type: ignore[arg-type]
        hidden_size=int(shape["hidden_size"]),  # type: ignore[arg-type]
        ffn_hidden_size=int(shape["ffn_hidden_size"]),  # type: ignore[arg-type]
        num_heads=heads,
        num_groups=cfg.num_query_groups or heads,
        head_dim=int(shape["hidden_size"]) // heads,  # type: ignore[arg-type]
        vocab_size=int(vocab),
        tied=False,
        qkv_bias=False,
        rope_theta=float(cfg.extra_args.get("rotary_base", 10000.0)),
        norm_eps=float(cfg.extra_args.get("norm_epsilon", 1e-5)),
        max_positions=cfg.max_position_embeddings or cfg.seq_length,
        dtype=torch.float32,
    )
    return RandomSource(meta, cfg.seed)


def check_shape(cfg: TrainConfig, meta: ModelMeta) -> None:
    """Shape fields given in the config must agree with the checkpoint; seq fits positions."""
    pairs = {
        "num_layers": meta.num_layers,
        "hidden_size": meta.hidden_size,
        "ffn_hidden_size": meta.ffn_hidden_size,
        "num_attention_heads": meta.num_heads,
        "num_query_groups": meta.num_groups,
        "max_position_embeddings": meta.max_positions,
    }
    for name, have in pairs.items():
        given = getattr(cfg, name)
        if given is not None and given != have:
            raise AtelierError(f"{name} {given} disagrees with the checkpoint's {name} {have}")
    if cfg.seq_length > meta.max_positions:
        raise AtelierError(
            f"seq_length {cfg.seq_length} is longer than the model's max position embeddings "
            f"({meta.max_positions}); use seq_length <= {meta.max_positions}"
        )


def batch_sizes(cfg: TrainConfig, dp: int) -> tuple[int, int]:
    """(global batch size, micro-batches per step) with GBS = MBS x DP x accumulation."""
    gbs = cfg.global_batch_size or cfg.micro_batch_size * dp
    if gbs % (cfg.micro_batch_size * dp):
        raise AtelierError(
            f"global_batch_size {gbs} is not divisible by micro_batch_size "
            f"{cfg.micro_batch_size} x data-parallel size {dp} = {cfg.micro_batch_size * dp}"
        )
    return gbs, gbs // (cfg.micro_batch_size * dp)


def _to_device(b: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in b.items()}


def _forward_loss(model: torch.nn.Module, b: Batch) -> torch.Tensor:
    logits = model(b["tokens"], b.get("position_ids"), b.get("segment_ids"))
    return masked_token_loss_sum(logits, b["labels"], b["loss_mask"])


def _oom(cfg: TrainConfig) -> AtelierError:
    return AtelierError(
        f"out of device memory at micro_batch_size {cfg.micro_batch_size}: lower "
        "micro_batch_size (keep global_batch_size) or set recompute_granularity full"
    )


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


def _agree(flag: bool, env: ParallelEnv) -> bool:
    """True on every rank if it is True on any (so all ranks stop at the same step)."""
    if env.world_size == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def setup(cfg: TrainConfig) -> TrainState:
    """Process group, model (weights from `cfg.load`), optimizer, schedule: iteration 0."""
    cfg.check()
    source = open_source(cfg)
    try:
        meta = source.meta
        check_shape(cfg, meta)  # before any process group: bad input fails fast, alone
        if cfg.pipeline_model_parallel_size > 1:
            from atelier.llm.train.pipeline import check_pipeline

            check_pipeline(cfg, meta.num_layers)
        check_tensor_parallel(
            cfg.tensor_model_parallel_size, meta.num_heads, meta.num_groups, meta.ffn_hidden_size
        )
        env = init_parallel(cfg)
        gbs, micro_batches = batch_sizes(cfg, env.dp)
        args = args_from_meta(meta, tp=env.tp, divisible_by=cfg.make_vocab_size_divisible_by)
        torch.manual_seed(cfg.seed)
        pipeline = None
        if env.pp > 1:
            from atelier.llm.train.pipeline import build_pipeline

            model, pipeline = build_pipeline(args, source, cfg, env, micro_batches)
        else:
            model = build_model(args, source, cfg, env)
    finally:
        source.close()
    if cfg.sequence_parallel:
        log.warning("sequence_parallel: accepted; activations are not split over TP here")
    scaler = None
    if cfg.fp16:
        scaler = DynamicLossScaler(
            cfg.initial_loss_scale, cfg.min_loss_scale, cfg.loss_scale_window, cfg.hysteresis
        )
        scaler.hysteresis_tracker = cfg.hysteresis
    return TrainState(
        cfg=cfg,
        env=env,
        meta=meta,
        model_args=args,
        model=model,
        optimizer=build_optimizer(model, cfg),
        scheduler=scheduler_from_config(cfg, gbs),
        scaler=scaler,
        global_batch_size=gbs,
        total_iters=total_iterations(cfg, gbs),
        pipeline=pipeline,
    )


def default_data(state: TrainState) -> BatchSource:
    """The datasets of `cfg.data` (train.data), sized for this run as Megatron sizes them."""
    from atelier.llm.train.batches import datasets_for_run

    cfg = state.cfg
    if cfg.data is None:
        raise AtelierError("no training data: give data (a DataSpec with data_path)")
    if cfg.data.seq_length != cfg.seq_length:
        raise AtelierError(
            f"data seq_length {cfg.data.seq_length} differs from seq_length {cfg.seq_length}"
        )
    return datasets_for_run(
        cfg.data,
        vocab_size=state.meta.vocab_size,
        global_batch_size=state.global_batch_size,
        total_iters=state.total_iters,
        eval_interval=cfg.eval_interval,
        eval_iters=cfg.eval_iters,
    )


def train(
    cfg: TrainConfig, hooks: TrainHooks | None = None, data: BatchSource | None = None
) -> TrainResult:
    """Run training to train_iters/train_samples, an exit condition or a hook's stop."""
    hooks = hooks or TrainHooks()
    state = setup(cfg)
    data = data or default_data(state)
    hooks.on_start(state)
    losses: list[float] = []
    norms: list[float] = []
    lrs: list[float] = []
    evals: list[EvalMetrics] = []
    reason = "done"
    start = time.monotonic()
    state.model.train()
    while state.iteration < state.total_iters:
        batches = next_train_batches(state, data)
        try:
            metrics = train_step(state, batches)
        except torch.OutOfMemoryError:
            raise _oom(cfg) from None
        losses.append(metrics.lm_loss)
        norms.append(metrics.grad_norm)
        lrs.append(metrics.lr)
        hooks.on_step(state, metrics)
        if (
            cfg.eval_iters > 0
            and state.iteration % cfg.eval_interval == 0
            and data.has_split("valid")
        ):
            evals.append(evaluate(state, data))
            hooks.on_eval(state, evals[-1])
        hooks.after_step(state)
        if cfg.exit_interval and state.iteration % cfg.exit_interval == 0:
            reason = "exit_interval"
        elif cfg.exit_duration_in_mins is not None and _agree(
            (time.monotonic() - start) / 60.0 > cfg.exit_duration_in_mins, state.env
        ):
            reason = "exit_duration"
        elif _agree(hooks.should_stop(state), state.env):
            reason = "hook"
        if reason != "done":
            break
    hooks.on_end(state, reason)
    return TrainResult(
        iterations=state.iteration,
        consumed_samples=state.consumed_train_samples,
        losses=losses,
        grad_norms=norms,
        lrs=lrs,
        evals=evals,
        stop_reason=reason,
        elapsed_s=time.monotonic() - start,
    )


def result_summary(result: TrainResult) -> dict[str, Any]:
    return {
        "iterations": result.iterations,
        "consumed_samples": result.consumed_samples,
        "final_loss": result.losses[-1] if result.losses else None,
        "stop_reason": result.stop_reason,
    }
