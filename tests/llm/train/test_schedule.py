"""The lr/wd sequence equals megatron-core's OptimizerParamScheduler, step by step."""

from __future__ import annotations

import pytest

from atelier.llm.train.config import TrainConfig
from atelier.llm.train.schedule import scheduler_from_config

CASES = [
    {"lr_decay_style": "constant", "lr_warmup_iters": 3},
    {"lr_decay_style": "linear", "lr_warmup_iters": 2, "min_lr": 1e-5},
    {"lr_decay_style": "cosine", "lr_warmup_fraction": 0.13, "min_lr": 1e-6, "lr_decay_iters": 15},
    {"lr_decay_style": "inverse-square-root", "lr_warmup_iters": 4},
    {"lr_decay_style": "WSD", "lr_wsd_decay_iters": 6, "lr_wsd_decay_style": "exponential"},
    {"lr_decay_style": "WSD", "lr_wsd_decay_iters": 5, "lr_wsd_decay_style": "minus_sqrt"},
    {"lr_decay_style": "WSD", "lr_wsd_decay_iters": 5, "lr_wsd_decay_style": "cosine"},
    {
        "lr_decay_style": "cosine",
        "start_weight_decay": 0.0,
        "end_weight_decay": 0.1,
        "weight_decay_incr_style": "cosine",
        "lr_warmup_init": 1e-6,
        "lr_warmup_iters": 2,
    },
]


class _Groups:
    def __init__(self) -> None:
        self.param_groups = [{"wd_mult": 1.0}, {"wd_mult": 0.0}]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["lr_decay_style"])
def test_lr_sequence_equals_megatron(case: dict) -> None:
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    gbs, iters = 8, 20
    cfg = TrainConfig(train_iters=iters, global_batch_size=gbs, lr=3e-4, **case)
    cfg.check()
    ours = scheduler_from_config(cfg, gbs)
    opt = _Groups()
    ref = OptimizerParamScheduler(
        opt,
        init_lr=ours.init_lr,
        max_lr=cfg.lr,
        min_lr=cfg.min_lr,
        lr_warmup_steps=ours.lr_warmup_steps,
        lr_decay_steps=ours.lr_decay_steps,
        lr_decay_style=cfg.lr_decay_style,
        start_wd=ours.start_wd,
        end_wd=ours.end_wd,
        wd_incr_steps=ours.wd_incr_steps,
        wd_incr_style=cfg.weight_decay_incr_style,
        wsd_decay_steps=ours.wsd_decay_steps,
        lr_wsd_decay_style=ours.lr_wsd_decay_style,
    )
    mine = _Groups()
    for _ in range(iters + 3):
        ours.apply(mine.param_groups)
        for a, b in zip(mine.param_groups, opt.param_groups, strict=True):
            assert a["lr"] == b["lr"]
            assert a["weight_decay"] == b["weight_decay"]
        ours.step(gbs)
        ref.step(gbs)
