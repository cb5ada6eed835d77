"""Batch, learning-rate, weight-decay, optimizer and precision flags of `atelier llm train`.

Megatron's spellings and defaults, passed to `TrainConfig` fields of the same names; the
guide's environment (MBS, GBS, LR, MIN_LR, TRAIN_ITERS, SEED) fills the absent ones, so
the values come from `env.apply_env`, the rest straight from the flags.
"""

from __future__ import annotations

import argparse
from typing import Any

from atelier.core.flags import (
    FRACTION,
    NON_NEGATIVE_FLOAT,
    NON_NEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SEED,
    Float,
)


def add_schedule_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("schedule")
    g.add_argument("--micro-batch-size", type=POSITIVE_INT, default=None, help="[env MBS]")
    g.add_argument("--global-batch-size", type=POSITIVE_INT, default=None, help="[env GBS]")
    g.add_argument("--train-iters", type=POSITIVE_INT, default=None, help="[env TRAIN_ITERS]")
    g.add_argument("--train-samples", type=POSITIVE_INT, default=None)
    g.add_argument("--lr", type=POSITIVE_FLOAT, default=None, help="[env LR]")
    g.add_argument("--min-lr", type=NON_NEGATIVE_FLOAT, default=None, help="[env MIN_LR]")
    g.add_argument(
        "--lr-decay-style",
        choices=["constant", "linear", "cosine", "inverse-square-root", "WSD"],
        default="linear",
    )
    g.add_argument("--lr-warmup-iters", type=NON_NEGATIVE_INT, default=0)
    g.add_argument("--lr-warmup-fraction", type=FRACTION, default=None)
    g.add_argument("--lr-warmup-samples", type=NON_NEGATIVE_INT, default=0)
    g.add_argument("--lr-warmup-init", type=NON_NEGATIVE_FLOAT, default=0.0)
    g.add_argument("--lr-decay-iters", type=POSITIVE_INT, default=None)
    g.add_argument("--lr-decay-samples", type=POSITIVE_INT, default=None)
    g.add_argument(
        "--lr-wsd-decay-style",
        choices=["linear", "cosine", "exponential", "minus_sqrt"],
        default="exponential",
    )
    g.add_argument("--lr-wsd-decay-iters", type=POSITIVE_INT, default=None)
    g.add_argument("--lr-wsd-decay-samples", type=POSITIVE_INT, default=None)
    g.add_argument("--weight-decay", type=NON_NEGATIVE_FLOAT, default=0.01)
    g.add_argument("--start-weight-decay", type=NON_NEGATIVE_FLOAT, default=None)
    g.add_argument("--end-weight-decay", type=NON_NEGATIVE_FLOAT, default=None)
    g.add_argument(
        "--weight-decay-incr-style", choices=["constant", "linear", "cosine"], default="constant"
    )
    g.add_argument("--clip-grad", type=NON_NEGATIVE_FLOAT, default=1.0, help="0: no clipping")
    g.add_argument("--adam-beta1", type=Float(0, 1, hi_open=True), default=0.9)
    g.add_argument("--adam-beta2", type=Float(0, 1, hi_open=True), default=0.999)
    g.add_argument("--adam-eps", type=POSITIVE_FLOAT, default=1e-8)
    g.add_argument("--seed", type=SEED, default=None, help="default 1234 [env SEED]")
    g.add_argument("--bf16", action="store_true")
    g.add_argument("--fp16", action="store_true")
    g.add_argument("--initial-loss-scale", type=POSITIVE_FLOAT, default=2.0**32)
    g.add_argument("--min-loss-scale", type=POSITIVE_FLOAT, default=1.0)
    g.add_argument("--loss-scale-window", type=POSITIVE_INT, default=1000)
    g.add_argument("--hysteresis", type=POSITIVE_INT, default=2)


def schedule_fields(args: argparse.Namespace, values: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig fields of this group; `values`: the flags after `apply_env`."""
    return {
        "micro_batch_size": values["micro_batch_size"] or 1,
        "global_batch_size": values["global_batch_size"],
        "train_iters": values["train_iters"],
        "train_samples": values["train_samples"],
        "lr": values["lr"] if values["lr"] is not None else 1e-4,
        "min_lr": values["min_lr"] if values["min_lr"] is not None else 0.0,
        "lr_decay_style": args.lr_decay_style,
        "lr_warmup_iters": args.lr_warmup_iters,
        "lr_warmup_fraction": args.lr_warmup_fraction,
        "lr_warmup_samples": args.lr_warmup_samples,
        "lr_warmup_init": args.lr_warmup_init,
        "lr_decay_iters": args.lr_decay_iters,
        "lr_decay_samples": args.lr_decay_samples,
        "lr_wsd_decay_style": args.lr_wsd_decay_style,
        "lr_wsd_decay_iters": args.lr_wsd_decay_iters,
        "lr_wsd_decay_samples": args.lr_wsd_decay_samples,
        "weight_decay": args.weight_decay,
        "start_weight_decay": args.start_weight_decay,
        "end_weight_decay": args.end_weight_decay,
        "weight_decay_incr_style": args.weight_decay_incr_style,
        "clip_grad": args.clip_grad,
        "adam_beta1": args.adam_beta1,
        "adam_beta2": args.adam_beta2,
        "adam_eps": args.adam_eps,
        "seed": values["seed"] if values["seed"] is not None else 1234,
        "bf16": args.bf16,
        "fp16": args.fp16,
        "initial_loss_scale": args.initial_loss_scale,
        "min_loss_scale": args.min_loss_scale,
        "loss_scale_window": args.loss_scale_window,
        "hysteresis": args.hysteresis,
    }
