"""Training checkpoints in Megatron's layout, with what an exact resume needs beside them.

- `prepare_load` / `resolve_load` / `resume_state`: start from hf2mg output, a Megatron or
  Atelier checkpoint (latest or a given iteration) or a Hugging Face folder (the engine
  reads and reshards the weights); restore optimizer, scheduler, RNG and data position.
- `hooks.CheckpointHooks`: the engine's `TrainHooks` doing all of it during `train()`
  (imported from its module: it needs the engine's loop).
- `save_checkpoint`: every rank into one temporary folder, renamed when all are done, then
  `latest_checkpointed_iteration.txt`; old iterations pruned (only Atelier's own).
See docs/llm-train.md, "Checkpoints".
"""

from atelier.llm.train.checkpoint.args import checkpoint_args
from atelier.llm.train.checkpoint.layout import (
    check_no_foreign_iterations,
    check_save_dir,
    saved_iterations,
)
from atelier.llm.train.checkpoint.load import (
    LoadSource,
    Resumed,
    prepare_load,
    resolve_load,
    resume_state,
)
from atelier.llm.train.checkpoint.ranks import Ranks
from atelier.llm.train.checkpoint.save import SaveRequest, save_checkpoint

__all__ = [
    "LoadSource",
    "Ranks",
    "Resumed",
    "SaveRequest",
    "check_no_foreign_iterations",
    "check_run_fits",
    "check_save_dir",
    "check_shape_agrees",
    "checkpoint_args",
    "load_weights",
    "prepare_load",
    "resolve_load",
    "resume_state",
    "save_checkpoint",
    "saved_iterations",
]
