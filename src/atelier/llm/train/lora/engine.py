"""The engine's LoRA step of `parallelize.build_model`: which adapters a rank starts from."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from atelier.core.errors import AtelierError
from atelier.llm.train.lora.module import is_adapter
from atelier.llm.train.lora.state import rank_state, read_lora_ranks


def lora_rank_state(
    state: dict[str, torch.Tensor],
    params: Mapping[str, torch.Tensor],
    cfg: Any,
    env: Any,
    source: Any,
) -> dict[str, torch.Tensor]:
    """This rank's tensors for the LoRA model: the base rank state renamed, adapters from
    `cfg.lora.load` (--lora-load, or this run's own checkpoint when resuming), else from a
    full LoRA checkpoint given as `load`, else fresh. `params` are the (meta) parameters
    of the wrapped, TP-parallelised model; a DTensor's shape is the whole tensor's."""
    spec = cfg.lora
    names = list(params)
    for module in spec.modules_to_save:
        if not any(spec.trains_fully(n) and module in n.split(".") for n in names):
            raise AtelierError(
                f"lora_modules_to_save {module}: this model has no such module (e.g. "
                "word_embeddings, output_layer; a model with tied embeddings has no "
                "output_layer)"
            )
    shapes = {n: tuple(p.shape) for n, p in params.items() if is_adapter(n)}
    saved = None
    if spec.load is not None:
        saved = (spec.load, *read_lora_ranks(Path(spec.load)))
    elif getattr(source, "lora_ranks", None):
        saved = (source.it_dir, source.lora_tp, source.lora_ranks)
    return rank_state(state, shapes, spec, tp=env.tp, rank=env.tp_rank, seed=cfg.seed, saved=saved)
