"""The part of a checkpoint only a resuming run needs, as a torch.distributed.checkpoint folder.

`iter_N/train_state/` holds the optimizer state (sharded exactly as the run holds it, so a
run with another data-parallel size reshards it on load), the fp32 master weights when the
rank files hold bf16/fp16 copies, each rank's RNG state, and the engine's loop state (LR
scheduler, loss scaler, iteration, consumed samples) as one opaque blob. Optimizer and
model entries go through `get_state_dict`/`set_state_dict`, which understand FSDP2 and
DTensor parameters.
"""

from __future__ import annotations

import contextlib
import pickle
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from atelier.core.errors import AtelierError
from atelier.llm.train.checkpoint.ranks import Ranks
from atelier.llm.train.checkpoint.rng import capture_rng, restore_rng

LOOP_KEY = "loop"


def _rng_key(rank: int) -> str:
    return f"rng_rank{rank:05d}"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """DCP warns that one process 'assumes the intent' of a single-process save; it is."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to")
        yield


def _dcp():
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    return dcp, get_state_dict, set_state_dict


def _options(model: torch.nn.Module, ranks: Ranks):
    """Frozen parameters (a LoRA base) are not training state: the rank files hold them
    exactly, so they are neither saved nor expected here. Pipeline stages hold different
    parameters: their optimizer param groups are keyed by parameter name (DCP's flattened
    form), never by position, which would collide."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    frozen = any(not p.requires_grad for p in model.parameters())
    return StateDictOptions(
        ignore_frozen_params=True,
        strict=not frozen,
        flatten_optimizer_state_dict=ranks.pp > 1,
    )


def save_train_state(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loop_state: dict[str, Any],
    ranks: Ranks,
    *,
    save_master: bool,
    device_type: str = "cpu",
) -> None:
    """Collective: every rank calls it; DCP writes each rank's shards once."""
    dcp, get_state_dict, _ = _dcp()
    model_sd, optim_sd = get_state_dict(model, optimizer, options=_options(model, ranks))
    state: dict[str, Any] = {
        "optimizer": optim_sd,
        LOOP_KEY: pickle.dumps(loop_state),
        _rng_key(ranks.rank): pickle.dumps(capture_rng(device_type)),
    }
    if save_master:
        state["model"] = model_sd
    with _quiet():
        dcp.save(state, checkpoint_id=str(folder), no_dist=not ranks.distributed)


@dataclass
class TrainStateInfo:
    """What a `train_state/` folder holds, read from its metadata alone."""

    has_master: bool
    rng_ranks: set[int]


def read_info(folder: Path) -> TrainStateInfo:
    from torch.distributed.checkpoint import FileSystemReader

    try:
        keys = FileSystemReader(str(folder)).read_metadata().state_dict_metadata.keys()
    except Exception as e:  # a torn or foreign folder: say which
        raise AtelierError(f"{folder}: not a readable training-state folder ({e})") from None
    rng = {int(k.removeprefix("rng_rank")) for k in keys if k.startswith("rng_rank")}
    return TrainStateInfo(has_master=any(k.startswith("model.") for k in keys), rng_ranks=rng)


def load_train_state(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    ranks: Ranks,
    *,
    load_rng: bool,
    device_type: str = "cpu",
) -> dict[str, Any]:
    """Restore what `save_train_state` wrote; returns the engine's loop state.

    `optimizer=None` (no_load_optim) restores neither optimizer state nor master weights;
    the RNG is restored only when `load_rng` and this rank's state was saved.
    """
    dcp, get_state_dict, set_state_dict = _dcp()
    info = read_info(folder)
    state: dict[str, Any] = {LOOP_KEY: b""}
    rng_key = _rng_key(ranks.rank)
    want_rng = load_rng and ranks.rank in info.rng_ranks
    if want_rng:
        state[rng_key] = b""
    model_sd = optim_sd = None
    if optimizer is not None:
        model_sd, optim_sd = get_state_dict(model, optimizer, options=_options(model, ranks))
        state["optimizer"] = optim_sd
        if info.has_master:
            state["model"] = model_sd
    with _quiet():
        dcp.load(state, checkpoint_id=str(folder), no_dist=not ranks.distributed)
    if optimizer is not None:
        set_state_dict(
            model,
            optimizer,
            model_state_dict=state["model"] if info.has_master else {},
            optim_state_dict=state["optimizer"],
            options=_options(model, ranks),
        )
    if want_rng:
        restore_rng(pickle.loads(state[rng_key]), device_type)
    return pickle.loads(state[LOOP_KEY])
