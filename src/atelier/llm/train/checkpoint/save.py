"""Saving one iteration: every rank writes into one temporary folder, renamed when all are done.

Order of events, so that a crash at any point leaves `latest` naming a complete folder:
1. rank 0 creates `SAVE/.iter_N.*.partial` (core.atomic) and tells every rank its name;
2. each (tp, pp) cell's first data-parallel rank streams its Megatron rank file, every rank
   writes its share of `train_state/` (torch.distributed.checkpoint), rank 0 the marker;
3. all ranks agree that every write succeeded, then rank 0 renames the folder to `iter_N`;
4. rank 0 rewrites `latest_checkpointed_iteration.txt` (atomically) and prunes old
   iterations (`save_total_limit`), deleting only folders that carry Atelier's marker.
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from atelier.core.atomic import atomic_dir
from atelier.core.errors import AtelierError
from atelier.core.log import get_logger
from atelier.llm.convert.meta import ModelMeta, dtype_name
from atelier.llm.train.checkpoint.layout import (
    TRAIN_STATE,
    SaveRecord,
    iter_dir_name,
    prune,
    write_tracker,
)
from atelier.llm.train.checkpoint.rank_file import (
    rank_file_path,
    rank_file_tensors,
    write_rank_file,
)
from atelier.llm.train.checkpoint.ranks import Ranks
from atelier.llm.train.checkpoint.shards import TP_DIM
from atelier.llm.train.checkpoint.train_state import save_train_state

log = get_logger(__name__)


@dataclass
class SaveRequest:
    """One save: where, which iteration, and what the engine hands over."""

    save_dir: Path
    iteration: int
    consumed_train_samples: int
    args: argparse.Namespace  # Megatron args for the rank files (see checkpoint.args)
    dtype: torch.dtype  # dtype of the rank files (the run's params dtype)
    meta: ModelMeta
    loop_state: dict[str, Any]
    keep: int | None = None  # save_total_limit
    device_type: str = "cpu"
    tp_dim: str = TP_DIM
    lora: Any = None  # a LoraSpec: MindSpeed's LoRA names (and --lora-ckpt-filter)
    base_dtype: torch.dtype | None = None  # LoRA: dtype of the frozen base as loaded


def _needs_master(model: torch.nn.Module, dtype: torch.dtype) -> bool:
    return any(p.dtype != dtype for p in model.parameters())


def save_checkpoint(
    req: SaveRequest, model: torch.nn.Module, optimizer: torch.optim.Optimizer, ranks: Ranks
) -> Path:
    """Collective: call on every rank. Returns the final iteration folder."""
    final = req.save_dir / iter_dir_name(req.iteration)
    stack = contextlib.ExitStack()
    tmp: Path | None = None
    error: BaseException | None = None
    if ranks.rank == 0:
        try:
            existing = SaveRecord.read(final) if final.exists() else None
            if final.exists() and existing is None:
                raise AtelierError(
                    f"save {req.save_dir}: {final.name}/ exists and was not written by atelier "
                    "llm train; it is left as it is and this iteration is not saved"
                )
            tmp = stack.enter_context(atomic_dir(final, overwrite=final.exists()))
        except BaseException as e:
            error = e
    tmp = ranks.broadcast(tmp)
    if tmp is not None:
        try:
            dtypes = None
            if req.lora is not None:
                from atelier.llm.train.lora.save import lora_rank_file_tensors

                tensors, dtypes = lora_rank_file_tensors(model, req, ranks.pp)
            else:
                tensors = rank_file_tensors(model, req.meta, ranks.pp)
            path = rank_file_path(tmp, ranks) if ranks.writes_rank_file else None
            write_rank_file(
                path,
                tensors,
                args=req.args,
                iteration=req.iteration,
                dtype=req.dtype,
                tp_dim=req.tp_dim,
                dtypes=dtypes,
            )
            save_train_state(
                tmp / TRAIN_STATE,
                model,
                optimizer,
                req.loop_state,
                ranks,
                save_master=_needs_master(model, req.dtype),
                device_type=req.device_type,
            )
            if ranks.rank == 0:
                SaveRecord(
                    iteration=req.iteration,
                    consumed_train_samples=req.consumed_train_samples,
                    tp=ranks.tp,
                    pp=ranks.pp,
                    dp=ranks.dp,
                    world_size=ranks.world,
                    params_dtype=dtype_name(req.dtype),
                ).write(tmp)
        except BaseException as e:
            error = e
    ok = ranks.all_true(error is None and tmp is not None)
    if ranks.rank == 0:
        if ok:
            stack.close()  # the rename: iter_N appears complete, or not at all
            write_tracker(req.save_dir, req.iteration)
            if req.keep:
                for p in prune(req.save_dir, req.keep, protect=req.iteration):
                    log.info("removed old checkpoint %s (save_total_limit %d)", p, req.keep)
        else:
            failure = error or RuntimeError("another rank failed while saving")
            stack.__exit__(type(failure), failure, failure.__traceback__)
    ranks.barrier()
    if not ok:
        if error is not None:
            raise error
        raise AtelierError(
            f"save {final}: another rank failed while saving; the previous checkpoint "
            "stays the latest"
        )
    if ranks.rank == 0:
        log.info("saved checkpoint iteration %d to %s", req.iteration, final)
    return final
