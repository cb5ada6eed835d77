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
from atelier.llm.convert.meta import ModelMeta
from atelier.llm.convert.torch_stream import StreamingTorchFile, TensorSlot
from atelier.llm.train.checkpoint.ranks import Ranks
from atelier.llm.train.checkpoint.shards import TP_DIM, tp_local, tp_local_shape
from atelier.llm.train.stages import shift_layer

CHECKPOINT_VERSION = 3.0
# Wrappers that prefix parameter names (torch.compile, activation checkpointing, FSDP1).
_WRAPPER = re.compile(r"(?:^|\.)(?:_orig_mod|_checkpoint_wrapped_module|_fsdp_wrapped_module)\.")


def megatron_name(fqn: str) -> str:
    """A model's parameter name without the prefixes wrappers add."""
    while True:
        new = _WRAPPER.sub(lambda m: "." if m.group(0).startswith(".") else "", fqn)
        if new == fqn:
            return fqn
        fqn = new


def rank_file_names(
    meta: ModelMeta,
    pp_size: int = 1,
    *,
    num_layers: int | None = None,
    first: bool = True,
    last: bool = True,
) -> list[str]:
    """Megatron (mcore, local norms) names of one rank file, in hf2mg's order (the table's).

    A pipeline stage's file holds `num_layers` layers numbered from 0, the embedding on
    the first stage only, the final norm and output layer (or the tied copy) on the last.
    """
    fam = meta.fam
    names = [fam.embed.mcore] if first else []
    for i in range(meta.num_layers if num_layers is None else num_layers):
        names += [p.mcore.format(i=i) for p in fam.parts_for(meta)]
    if last:
        names.append(fam.final_norm.mcore)
        if not meta.tied:
            names.append(fam.output.mcore)
        elif pp_size > 1:
            names.append(fam.head_copy.mcore)
    return names


def rank_file_tensors(
    model: torch.nn.Module, meta: ModelMeta, pp_size: int = 1
) -> list[tuple[str, torch.Tensor]]:
    """(Megatron name, parameter) of every tensor of the model's rank file, in file order.

    With tied embeddings and one pipeline stage Megatron keeps no output weight (the head
    reads the embedding), so a tied `output_layer.weight` in the model is left out, as
    hf2mg does. Any other difference between the model and the family table is a bug.
    """
    layers = getattr(model, "layer_ids", None)  # a pipeline stage (train.stages)
    have: dict[str, torch.Tensor] = {}
    for fqn, t in model.state_dict(keep_vars=True).items():
        name = megatron_name(fqn)
        if layers is not None:
            name = shift_layer(name, -layers.start)  # rank files number layers per stage
        if not name.endswith("._extra_state") and isinstance(t, torch.Tensor):
            have[name] = t
    if layers is None:
        names = rank_file_names(meta, pp_size)
    else:
        names = rank_file_names(
            meta, pp_size, num_layers=len(layers), first=model.first, last=model.last
        )
    if meta.tied and pp_size == 1:
        have.pop(meta.fam.output.mcore, None)
    missing = [n for n in names if n not in have]
    extra = sorted(set(have) - set(names))
    if missing or extra:
        raise RuntimeError(
            f"bug: model parameters differ from the {meta.family} table: missing "
            f"{missing[:3]}, unexpected {extra[:3]}"
        )
    return [(n, have[n]) for n in names]


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
    dtypes: Mapping[str, torch.dtype] | None = None,
) -> None:
    """Gather each tensor to its TP-local form and stream it into `path`.

    Every rank calls this with the same tensors (the gathers are collectives); only ranks
    given a `path` write. `dtypes` overrides `dtype` per tensor name (LoRA).
    """
    tensors = list(tensors)
    kinds = [(dtypes or {}).get(name, dtype) for name, _ in tensors]
    slots = [
        TensorSlot(str(k), tp_local_shape(t, tp_dim), kinds[k]) for k, (_, t) in enumerate(tensors)
    ]
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
    for (_, t), kind in zip(tensors, kinds, strict=True):
        local = tp_local(t, tp_dim).to(device="cpu", dtype=kind)
        if out is not None:
            out.write(local)
        del local
    if out is not None:
        out.close()
