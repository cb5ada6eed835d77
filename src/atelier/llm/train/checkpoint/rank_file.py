"""Megatron rank files from a training model: the same bytes hf2mg writes for the same weights.

Each (tp, pp) cell's first data-parallel rank writes `mp_rank_XX[_YYY]/model_optim_rng.pt`
= {'args', 'checkpoint_version': 3.0, 'iteration', 'model'} with the streaming writer hf2mg
uses (`convert.torch_stream`): the object is pickled with tensor placeholders, then each
tensor is gathered over the data-parallel dimension and appended, one at a time. Tensors go
in hf2mg's order (embedding, each layer's parts in the family's order, final norm, output),
so a checkpoint of untrained weights is byte-identical to hf2mg's, which a test checks.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from atelier.llm.convert.megatron_checkpoint import RANK_FILES, rank_dir_name
from atelier.llm.convert.names import LAYER_ROLES, MCORE_LOCAL
from atelier.llm.convert.torch_stream import StreamingTorchFile, TensorSlot
from atelier.llm.train.checkpoint.ranks import Ranks
from atelier.llm.train.checkpoint.shards import TP_DIM, tp_local, tp_local_shape

CHECKPOINT_VERSION = 3.0
# Wrappers that prefix parameter names (torch.compile, activation checkpointing, FSDP1).
_WRAPPER = re.compile(r"(?:^|\.)(?:_orig_mod|_checkpoint_wrapped_module|_fsdp_wrapped_module)\.")
_LAYER = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")
_ROLE_SUFFIX = [MCORE_LOCAL[r].split("{i}.", 1)[1] for r in LAYER_ROLES]


def megatron_name(fqn: str) -> str:
    """A model's parameter name without the prefixes wrappers add."""
    while True:
        new = _WRAPPER.sub(lambda m: "." if m.group(0).startswith(".") else "", fqn)
        if new == fqn:
            return fqn
        fqn = new


def _order_key(name: str, position: int) -> tuple[int, int, int, int]:
    """hf2mg's order: embedding, layers (parts in LAYER_ROLES order), final norm, output."""
    if name.startswith("embedding."):
        return (0, 0, 0, position)
    m = _LAYER.match(name)
    if m:
        rest = m.group(2)
        role = _ROLE_SUFFIX.index(rest) if rest in _ROLE_SUFFIX else len(_ROLE_SUFFIX)
        return (1, int(m.group(1)), role, position)
    if name.startswith("decoder."):
        return (2, 0, 0, position)
    return (3, 0, 0, position)


def _part(name: str) -> str:
    """The name with its layer number removed; embedding and output share one vocab shape."""
    if name in ("embedding.word_embeddings.weight", "output_layer.weight"):
        return "vocab"
    return _LAYER.sub(r"decoder.layers.{i}.\2", name)


def rank_file_tensors(
    model: torch.nn.Module, *, tied: bool, pp_size: int = 1
) -> list[tuple[str, torch.Tensor]]:
    """(Megatron name, parameter or buffer) in rank-file order.

    With tied embeddings and one pipeline stage Megatron keeps no output weight (the head
    reads the embedding), so a tied `output_layer.weight` is left out, as hf2mg does.
    """
    items: Mapping[str, torch.Tensor] = model.state_dict(keep_vars=True)
    named = []
    for pos, (fqn, t) in enumerate(items.items()):
        name = megatron_name(fqn)
        if name.endswith("._extra_state") or not isinstance(t, torch.Tensor):
            continue
        if tied and pp_size == 1 and name == "output_layer.weight":
            continue
        named.append((_order_key(name, pos), name, t))
    return [(name, t) for _, name, t in sorted(named, key=lambda x: x[0])]


def rank_file_path(it_dir: Path, ranks: Ranks) -> Path:
    return it_dir / rank_dir_name(ranks.tp_rank, ranks.pp_rank, ranks.pp) / RANK_FILES[0]


def write_rank_file(
    path: Path | None,
    tensors: Iterable[tuple[str, torch.Tensor]],
    *,
    args: argparse.Namespace,
    iteration: int,
    dtype: torch.dtype,
    tp_dim: str = TP_DIM,
) -> None:
    """Gather each tensor to its TP-local form and stream it into `path`.

    Every rank calls this with the same tensors (the gathers are collectives); only ranks
    given a `path` write.
    """
    tensors = list(tensors)
    shapes: dict[tuple[str, tuple[int, ...]], tuple[int, ...]] = {}
    slots = []
    for k, (name, t) in enumerate(tensors):
        shape = tp_local_shape(t, tp_dim)
        # One shape object per part, shared across layers, as hf2mg's plan has it: pickle
        # memoizes by identity, so this is what makes the bytes equal, not just the values.
        shape = shapes.setdefault((_part(name), shape), shape)
        slots.append(TensorSlot(str(k), shape, dtype))
    out = None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        model = {name: slot for (name, _), slot in zip(tensors, slots, strict=True)}
        obj = {
            "args": args,
            "checkpoint_version": CHECKPOINT_VERSION,
            "iteration": iteration,
            "model": model,
        }
        out = StreamingTorchFile(path, obj, slots)
    for _, t in tensors:
        local = tp_local(t, tp_dim).to(device="cpu", dtype=dtype)
        if out is not None:
            out.write(local)
        del local
    if out is not None:
        out.close()
