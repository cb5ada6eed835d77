"""Run as one process or under gloo (RANK... set): the engine with checkpoint hooks.

Usage: worker.py OUT LOAD TP JOB...   where JOB is one of
  bytes:SAVE            save the model straight after loading, at iteration 1 (hf2mg's bytes)
  train:SAVE:ITERS[:KILL_AT[:CKPT_STEP[:LOAD]]]
                        train to ITERS saving every 2 iterations; kill -9 (or SIGTERM when
                        KILL_AT is negative) after iteration |KILL_AT| (0: never); start from
                        iteration CKPT_STEP of LOAD (default: the worker's LOAD; 0: latest)
Writes OUT.<rank> = JSON {job: losses or {}}.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))

from atelier.llm.train.batches import SampleBatches, pretraining_samples
from atelier.llm.train.checkpoint import (
    Ranks,
    SaveRequest,
    checkpoint_args,
    prepare_load,
    save_checkpoint,
)
from atelier.llm.train.checkpoint.hooks import CheckpointHooks
from atelier.llm.train.config import TrainConfig
from atelier.llm.train.loop import HookList, TrainHooks, setup, train
from atelier.llm.train.signals import StopOnSignal
from tests.llm.train.parity import config as parity_config

SEQ = 16


def config(load: Path, tp: int, **kw) -> TrainConfig:
    """The parity tests' run, smaller, saving every 2 iterations, hf2mg's vocab padding."""
    base = dict(
        seq_length=SEQ,
        global_batch_size=4,
        train_iters=4,
        clip_grad=1.0,
        tensor_model_parallel_size=tp,
        save_interval=2,
        log_interval=1,
        make_vocab_size_divisible_by=128,
    )
    return parity_config(load, **{**base, **kw})


def data(vocab: int) -> SampleBatches:
    g = torch.Generator().manual_seed(0)
    return SampleBatches(
        {"train": pretraining_samples(torch.randint(0, vocab, (64, SEQ + 1), generator=g))}
    )


class KillAt(TrainHooks):
    def __init__(self, iteration: int) -> None:
        self.iteration = abs(iteration)
        self.signal = signal.SIGKILL if iteration > 0 else signal.SIGTERM

    def on_step(self, state, metrics) -> None:  # before saving, as a preemption would
        if state.iteration == self.iteration:
            os.kill(os.getpid(), self.signal)


class Losses(TrainHooks):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_step(self, state, metrics) -> None:
        self.losses.append(metrics.lm_loss)


def main() -> None:
    out, load, tp, *jobs = sys.argv[1:]
    results = {}
    for job in jobs:
        kind, save, *rest = job.split(":")
        if kind == "bytes":
            cfg = config(Path(load), int(tp))
            state = setup(cfg)
            args = checkpoint_args(state.meta, tp=int(tp))
            req = SaveRequest(Path(save), 1, 0, args, state.meta.dtype, state.meta, {})
            save_checkpoint(req, state.model, state.optimizer, Ranks.from_mesh(state.env.mesh))
            results[job] = {}
            continue
        iters, kill_at, step = [*map(int, rest[:3]), 0, 0, 0][:3]
        start = Path(rest[3]) if len(rest) > 3 else Path(load)
        cfg = config(start, int(tp), train_iters=iters, save=Path(save))
        src = prepare_load(cfg, ckpt_step=step or None)
        losses = Losses()
        stop = StopOnSignal()
        hooks = [losses, CheckpointHooks(src, cfg.save), stop]
        if kill_at:
            hooks.insert(0, KillAt(kill_at))
        result = train(cfg, HookList(hooks), data(src.meta.vocab_size))
        results[job] = {
            "losses": losses.losses,
            "stop": result.stop_reason,
            "it": result.iterations,
        }
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    Path(f"{out}.{rank}").write_text(json.dumps(results))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
