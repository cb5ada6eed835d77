"""`train(cfg, hooks)`: the training loop, with everything else plugged in through hooks.

The loop owns the run: set-up (weights, process group, model, optimizer, schedule), the
steps and evaluations (`step.py`: the numerics of one step) and when to stop. Checkpoints,
logging, TensorBoard and signals live in `train.checkpoint` and the CLI, which implement
`TrainHooks` (`hooks.py`): `on_start` restores a saved state into the live objects,
`on_step`/`on_eval` receive metrics, `after_step` may save, `should_stop` asks to end
after the current step (every rank agrees through one all-reduce), `on_end` runs once
with the reason the run ended.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from atelier.core.errors import AtelierError
from atelier.core.log import get_logger
from atelier.llm.convert.meta import ModelMeta
from atelier.llm.convert.sharding import check_tensor_parallel
from atelier.llm.convert.source import CheckpointSource
from atelier.llm.train.config import TrainConfig
from atelier.llm.train.hooks import EvalMetrics, HookList, StepMetrics, TrainHooks, TrainState
from atelier.llm.train.loss import DynamicLossScaler
from atelier.llm.train.model.args import args_from_meta
from atelier.llm.train.optim import build_optimizer
from atelier.llm.train.parallelize import ParallelEnv, build_model, init_parallel
from atelier.llm.train.schedule import scheduler_from_config, total_iterations
from atelier.llm.train.step import BatchSource, evaluate, next_train_batches, train_step

# The loop's public names, importable from here as the docs and callers use them
# (`from atelier.llm.train.loop import HookList, TrainHooks, setup, train`).
__all__ = [
    "BatchSource",
    "EvalMetrics",
    "HookList",
    "StepMetrics",
    "TrainHooks",
    "TrainResult",
    "TrainState",
    "batch_sizes",
    "check_shape",
    "default_data",
    "evaluate",
    "next_train_batches",
    "open_source",
    "result_summary",
    "setup",
    "train",
    "train_step",
]

log = get_logger(__name__)


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


def _oom(cfg: TrainConfig) -> AtelierError:
    return AtelierError(
        f"out of device memory at micro_batch_size {cfg.micro_batch_size}: lower "
        "micro_batch_size (keep global_batch_size) or set recompute_granularity full"
    )


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
