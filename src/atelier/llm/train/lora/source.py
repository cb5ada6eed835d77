"""Reading LoRA checkpoints: a full one as a base model, and where a LoRA run resumes.

A full LoRA checkpoint (saved without --lora-ckpt-filter, by Atelier or MindSpeed-LLM)
holds the base under `X.base_layer.*` names next to the adapters. `open_megatron` reads
such a folder as the converter's readers read any Megatron checkpoint (the base, renamed
back), keeping the adapters per TP rank in `lora_ranks`; any other folder is a plain
`MegatronSource`.

`prepare_lora_load` is `checkpoint.prepare_load` for a LoRA run: the base always comes
from `load` (a filtered LoRA checkpoint has no base), the adapters and the train state
from this run's own checkpoint in `save` when there is one (a resumed job), else from
`lora.load` (--lora-load), else they are fresh.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from atelier.core.errors import AtelierError
from atelier.llm.convert.megatron_state import StateDictSource
from atelier.llm.train.lora.module import is_adapter
from atelier.llm.train.lora.state import BASE, read_lora_ranks, split_lora_flat


class LoraCheckpointSource(StateDictSource):
    """The base model of a full LoRA checkpoint (mmap'd tensors, renamed), plus its adapters."""

    def __init__(self, load_dir: Path, it_dir: Path) -> None:
        from atelier.llm.convert.assets import ASSETS_DIRNAME
        from atelier.llm.convert.megatron_checkpoint import load_rank_file, rank_files
        from atelier.llm.convert.meta import meta_from_megatron_args

        files = rank_files(it_dir)
        first = load_rank_file(files[(0, 0)])
        self.args = first.get("args")
        if self.args is None:
            raise AtelierError(f"{files[(0, 0)]}: no 'args' inside")
        tp, ranks = read_lora_ranks(it_dir)
        split = [split_lora_flat(r) for r in ranks]
        meta = meta_from_megatron_args(self.args, str(files[(0, 0)]), torch.float32)
        super().__init__([b for b, _ in split], meta)
        meta.dtype = split[0][0][meta.fam.embed.name(self.layout.fmt, self.layout.norms)].dtype
        self.layout.iteration = first.get("iteration", 0)
        self.load_dir, self.it_dir = load_dir, it_dir
        self.lora_ranks = [a for _, a in split]
        self.lora_tp = tp
        assets = load_dir / ASSETS_DIRNAME
        self.assets_dir = assets if assets.is_dir() else None


def lora_kind(it_dir: Path) -> str | None:
    """'full' (base_layer names and adapters), 'adapters' (--lora-ckpt-filter) or None, from
    an iteration folder's first rank file."""
    from atelier.llm.convert.megatron_checkpoint import load_rank_file, rank_files
    from atelier.llm.convert.megatron_state import canonical_flat

    model = load_rank_file(rank_files(it_dir)[(0, 0)]).get("model")
    if not isinstance(model, dict):
        return None
    names = list(canonical_flat(model))
    if any(BASE in k for k in names):
        return "full"
    if names and all(is_adapter(k) for k in names):
        return "adapters"
    return None


def open_megatron(load_dir: Path) -> Any:
    """A reader of the Megatron checkpoint `load_dir` (a full LoRA one read as its base)."""
    from atelier.llm.convert.megatron_checkpoint import MegatronSource, iteration_dir

    it_dir = iteration_dir(Path(load_dir))
    kind = lora_kind(it_dir)
    if kind == "adapters":
        raise AtelierError(
            f"load {load_dir}: holds LoRA adapters only (saved with --lora-ckpt-filter); "
            "give the base model as --load and this folder as --lora-load"
        )
    if kind == "full":
        return LoraCheckpointSource(Path(load_dir), it_dir)
    return MegatronSource(load_dir)


def prepare_lora_load(cfg: Any, ckpt_step: int | None = None) -> Any:
    """`prepare_load` of a LoRA run (see the module doc). Returns the base's `LoadSource`,
    whose `state_from` names the LoRA checkpoint to resume adapters and train state from."""
    from atelier.llm.train.checkpoint.layout import (
        SaveRecord,
        check_save_dir,
        iter_dir_name,
        resumable_checkpoint,
    )
    from atelier.llm.train.checkpoint.load import LoadSource, resolve_load

    spec = cfg.lora
    if cfg.save is not None:
        check_save_dir(Path(cfg.save), "save")
    own = resumable_checkpoint(Path(cfg.save)) if cfg.save and ckpt_step is None else None
    if cfg.load is None:
        raise AtelierError("LoRA needs load: the base model to adapt (--load)")
    base = resolve_load(Path(cfg.load), ckpt_step=None if spec.load else ckpt_step)
    assert base is not None
    base.close()
    if base.it_dir is not None:
        cfg.load = base.it_dir
    lora_dir = own
    if lora_dir is None and spec.load is not None:
        lora_dir = _lora_iteration(Path(spec.load), ckpt_step, iter_dir_name)
    if lora_dir is None:
        return base
    spec.load = lora_dir  # the engine reads the adapters from exactly this folder
    from atelier.llm.convert.megatron_checkpoint import load_rank_file, rank_files

    files = rank_files(lora_dir)
    tp = max(t for t, _ in files) + 1
    first = load_rank_file(files[(0, 0)])
    args = first.get("args")
    base.state_from = LoadSource(
        kind="megatron",
        folder=lora_dir.parent,
        it_dir=lora_dir,
        iteration=int(first.get("iteration", 0) or 0),
        meta=base.meta,
        tp=tp,
        pp=1,
        fmt=base.fmt,
        norms=base.norms,
        padded_vocab=base.padded_vocab,
        args=args,
        record=SaveRecord.read(lora_dir),
        assets_dir=base.assets_dir,
        from_save=own is not None,
    )
    return base


def _lora_iteration(folder: Path, ckpt_step: int | None, iter_dir_name: Any) -> Path:
    from atelier.llm.convert.megatron_checkpoint import iteration_dir

    if not folder.is_dir():
        raise AtelierError(f"lora_load {folder}: no such folder; pass a LoRA run's --save folder")
    if ckpt_step is not None:
        it_dir = folder / iter_dir_name(ckpt_step)
        if not it_dir.is_dir():
            raise AtelierError(f"ckpt_step {ckpt_step}: {it_dir} does not exist")
        return it_dir
    try:
        return iteration_dir(folder)
    except AtelierError as e:
        raise AtelierError(str(e).replace("load_dir ", "lora_load ")) from None
