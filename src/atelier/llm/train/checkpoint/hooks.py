"""The checkpoint side of a run, plugged into the engine's loop through `TrainHooks`.

- `on_start`: restore what the loaded checkpoint holds beyond weights (optimizer, master
  weights, scheduler, loss scale, RNG, iteration and consumed samples); the engine has
  already read the weights from `cfg.load` (which `load.prepare_load` pointed at the right
  iteration folder).
- `after_step`: save every `save_interval` iterations.
- `on_end`: save the last iteration (Megatron saves on exit too), unless just saved.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from atelier.core.log import get_logger
from atelier.llm.train.checkpoint.args import checkpoint_args
from atelier.llm.train.checkpoint.layout import check_no_foreign_iterations
from atelier.llm.train.checkpoint.load import LoadSource, resume_state
from atelier.llm.train.checkpoint.ranks import Ranks
from atelier.llm.train.checkpoint.save import SaveRequest, save_checkpoint
from atelier.llm.train.hooks import TrainHooks, TrainState

log = get_logger(__name__)


def loop_state(state: TrainState) -> dict[str, Any]:
    """The engine's state beyond weights and optimizer, as a resume needs it."""
    return {
        "iteration": state.iteration,
        "consumed_train_samples": state.consumed_train_samples,
        "consumed_valid_samples": state.consumed_valid_samples,
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict() if state.scaler is not None else None,
    }


class CheckpointHooks(TrainHooks):
    """Resume on start, save on interval and at the end. `src` comes from `prepare_load`."""

    def __init__(
        self, src: LoadSource | None, save: Path | None = None, tokenizer: str | None = None
    ) -> None:
        self.src = src
        self.save = save
        self.tokenizer = tokenizer
        self.last_saved: Path | None = None
        self.last_saved_iteration: int | None = None
        self.trained = False  # a run resumed at its last iteration has nothing new to save

    def _ranks(self, state: TrainState) -> Ranks:
        return Ranks.from_mesh(state.env.mesh)

    def on_start(self, state: TrainState) -> None:
        cfg = state.cfg
        if self.src is not None:
            src = self.src.state_from or self.src  # LoRA: adapters' checkpoint, not the base
            # finetune / no_load_* describe `load`; this run's own checkpoint resumes exactly
            own = src.from_save
            resumed = resume_state(
                src,
                state.model,
                state.optimizer,
                self._ranks(state),
                finetune=cfg.finetune and not own,
                no_load_optim=cfg.no_load_optim and not own,
                no_load_rng=cfg.no_load_rng and not own,
                device_type=state.env.device.type,
            )
            state.iteration = resumed.iteration
            state.consumed_train_samples = resumed.consumed_train_samples
            loop = resumed.loop_state
            if loop is not None:
                state.consumed_valid_samples = loop["consumed_valid_samples"]
                state.scheduler.load_state_dict(loop["scheduler"])
                if state.scaler is not None and loop.get("scaler") is not None:
                    state.scaler.load_state_dict(loop["scaler"])
            if resumed.iteration and state.env.is_main:
                log.info(
                    "continuing at iteration %d (%d samples consumed)",
                    resumed.iteration,
                    resumed.consumed_train_samples,
                )
        if self.save is not None:
            check_no_foreign_iterations(self.save, state.iteration, state.total_iters, "save")

    def save_now(self, state: TrainState) -> Path:
        assert self.save is not None
        from atelier.llm.train.parallelize import param_dtype

        cfg = state.cfg
        dtype = param_dtype(cfg)
        meta = dataclasses.replace(state.meta, dtype=dtype)
        args = checkpoint_args(
            meta,
            tp=state.env.tp,
            pp=state.env.pp,
            layer_list=state.pipeline.spec.layer_list if state.pipeline is not None else None,
            divisible_by=cfg.make_vocab_size_divisible_by,
            seq_length=cfg.seq_length,
            iteration=state.iteration,
            consumed_train_samples=state.consumed_train_samples,
            consumed_valid_samples=state.consumed_valid_samples,
            config=cfg,
        )
        args.data_parallel_size = state.env.dp
        args.world_size = state.env.world_size
        args.global_batch_size = state.global_batch_size
        args.train_iters = state.total_iters
        req = SaveRequest(
            save_dir=self.save,
            iteration=state.iteration,
            consumed_train_samples=state.consumed_train_samples,
            args=args,
            dtype=dtype,
            meta=meta,
            loop_state=loop_state(state),
            keep=cfg.save_total_limit,
            device_type=state.env.device.type,
            lora=cfg.lora,
            base_dtype=state.meta.dtype,  # the loaded checkpoint's: frozen tensors keep it
        )
        ranks = self._ranks(state)
        self.last_saved = save_checkpoint(req, state.model, state.optimizer, ranks)
        self.last_saved_iteration = state.iteration
        if ranks.rank == 0:
            self._carry_assets()
        return self.last_saved

    def _carry_assets(self) -> None:
        """Config and tokenizer files into `save/hf_assets/` once, as hf2mg does, so that
        `mg2hf save` (and CONVERT_MG2HF) writes a complete folder from the save alone."""
        from atelier.core.atomic import atomic_dir
        from atelier.llm.convert.assets import ASSETS_DIRNAME, copy_assets, copy_tokenizer

        assert self.save is not None
        dest = self.save / ASSETS_DIRNAME
        origin = self.src.assets_dir if self.src is not None else None
        if dest.exists() or (origin is None and self.tokenizer is None):
            return
        if origin is not None and origin.resolve() == dest.resolve():
            return
        with atomic_dir(dest) as tmp:
            if origin is not None:
                copy_assets(origin, tmp)
            if self.tokenizer is not None:
                copy_tokenizer(Path(self.tokenizer), tmp)

    def after_step(self, state: TrainState) -> None:
        self.trained = True
        every = state.cfg.save_interval
        if self.save is not None and every and state.iteration % every == 0:
            self.save_now(state)

    def on_end(self, state: TrainState, reason: str) -> None:
        if self.save is not None and self.trained and self.last_saved_iteration != state.iteration:
            self.save_now(state)
