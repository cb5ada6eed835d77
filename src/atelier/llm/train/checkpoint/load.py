"""What `load` names, and what a resume restores beyond the weights.

`load` may be a Megatron checkpoint (from hf2mg, Megatron-LM, MindSpeed-LLM or an earlier
`atelier llm train`; the latest iteration or `ckpt_step`) or a Hugging Face folder. The
engine reads the weights (any TP, resharded in memory through the converter's sources);
this module decides which folder that is (a checkpoint of this run in `save` first) and,
when `atelier llm train` wrote it, restores `train_state/` for an exact resume.
"""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from atelier.core.errors import AtelierError
from atelier.core.log import get_logger
from atelier.llm.convert.megatron_checkpoint import (
    iteration_dir,
)
from atelier.llm.convert.meta import ModelMeta
from atelier.llm.train.checkpoint.layout import (
    TRAIN_STATE,
    SaveRecord,
    check_save_dir,
    iter_dir_name,
    resumable_checkpoint,
)
from atelier.llm.train.checkpoint.ranks import Ranks
from atelier.llm.train.checkpoint.train_state import load_train_state

log = get_logger(__name__)


@dataclass
class LoadSource:
    """A checkpoint to start from, opened lazily (nothing but metadata read yet)."""

    kind: str  # "megatron" | "huggingface"
    folder: Path  # the folder as given
    it_dir: Path | None  # Megatron: the iteration folder holding mp_rank_*
    iteration: int  # 0 for Hugging Face folders
    meta: ModelMeta
    tp: int
    pp: int
    fmt: str
    norms: str
    padded_vocab: int
    args: argparse.Namespace | None
    record: SaveRecord | None = None  # present when atelier llm train wrote it
    assets_dir: Path | None = None  # config/tokenizer files to carry into an HF export
    from_save: bool = False  # this run's own checkpoint, found in `save`
    source: Any = field(default=None, repr=False)
    # LoRA: the checkpoint adapters and train state resume from (this one holds the base)
    state_from: LoadSource | None = None

    @property
    def has_train_state(self) -> bool:
        return (
            self.record is not None
            and self.it_dir is not None
            and (self.it_dir / TRAIN_STATE).is_dir()
        )

    @property
    def consumed_train_samples(self) -> int:
        if self.record is not None:
            return self.record.consumed_train_samples
        return int(getattr(self.args, "consumed_train_samples", 0) or 0)

    def close(self) -> None:
        if self.source is not None:
            self.source.close()


@contextlib.contextmanager
def _as_load():
    """The converter's readers name their parameter `load_dir`; here it is `load`."""
    try:
        yield
    except AtelierError as e:
        raise AtelierError(str(e).replace("load_dir ", "load ")) from None


def _open_megatron(folder: Path, it_dir: Path) -> LoadSource:
    from atelier.llm.train.lora.source import open_megatron

    with _as_load():
        src = open_megatron(it_dir)  # a full LoRA checkpoint reads as its base
    lay = src.layout
    iteration = lay.iteration if isinstance(lay.iteration, int) else 0
    assets = folder / "hf_assets"
    return LoadSource(
        kind="megatron",
        folder=folder,
        it_dir=it_dir,
        iteration=int(iteration),
        meta=src.meta,
        tp=lay.tp,
        pp=lay.pp,
        fmt=lay.fmt,
        norms=lay.norms,
        padded_vocab=lay.padded_vocab,
        args=src.args,
        record=SaveRecord.read(it_dir),
        assets_dir=assets if assets.is_dir() else None,
        source=src,
    )


def _open_hf(folder: Path) -> LoadSource:
    from atelier.llm.convert.hf_checkpoint import HFSource

    with _as_load():
        src = HFSource(folder)
    return LoadSource(
        kind="huggingface",
        folder=folder,
        it_dir=None,
        iteration=0,
        meta=src.meta,
        tp=1,
        pp=1,
        fmt="huggingface",
        norms="",
        padded_vocab=src.meta.vocab_size,
        args=None,
        assets_dir=folder,
        source=src,
    )


def resolve_load(
    load: Path | None, *, save: Path | None = None, ckpt_step: int | None = None
) -> LoadSource | None:
    """The checkpoint a run starts from.

    A `save` folder holding a checkpoint this trainer wrote wins over `load`: a job that
    was preempted and started again with the same command resumes where it stopped.
    """
    if save is not None and ckpt_step is None:
        mine = resumable_checkpoint(save)
        if mine is not None:
            if load is None or mine.parent.resolve() != load.resolve():
                log.info("resuming from %s (the latest checkpoint in save)", mine)
            src = _open_megatron(save, mine)
            src.from_save = True
            return src
    if load is None:
        return None
    if not load.exists():
        raise AtelierError(
            f"load {load}: no such folder; pass the folder hf2mg wrote, a Megatron "
            "checkpoint or a Hugging Face model folder"
        )
    if not load.is_dir():
        raise AtelierError(f"load {load}: is a file; pass the checkpoint folder")
    if not any(load.iterdir()):
        raise AtelierError(
            f"load {load}: the folder is empty; convert the model there first "
            "(atelier llm convert hf2mg --save-dir ...) or point load at it"
        )
    if (load / "config.json").is_file():
        if ckpt_step is not None:
            raise AtelierError(f"ckpt_step {ckpt_step}: load {load} is a Hugging Face folder")
        return _open_hf(load)
    if ckpt_step is not None:
        it_dir = load / iter_dir_name(ckpt_step)
        if not it_dir.is_dir():
            have = sorted(p.name for p in load.glob("iter_*"))
            raise AtelierError(
                f"ckpt_step {ckpt_step}: {it_dir} does not exist; saved iterations: "
                f"{', '.join(have) or 'none'}"
            )
    else:
        with _as_load():
            it_dir = iteration_dir(load)
    return _open_megatron(load, it_dir)


def prepare_load(cfg: Any, ckpt_step: int | None = None) -> LoadSource | None:
    """Decide what the run starts from and point `cfg.load` at exactly that folder.

    A checkpoint of this run in `cfg.save` wins (a preempted job started again with the
    same command resumes); `ckpt_step` picks an iteration of `cfg.load`. Checks that the
    save folder is writable before any training happens. A LoRA run (`cfg.lora`) takes
    its base from `load` and its adapters from `save` or `lora.load` (`lora.source`).
    """
    if getattr(cfg, "lora", None) is not None:
        from atelier.llm.train.lora.source import prepare_lora_load

        return prepare_lora_load(cfg, ckpt_step)
    if cfg.save is not None:
        check_save_dir(Path(cfg.save), "save")
    src = resolve_load(
        Path(cfg.load) if cfg.load is not None else None,
        save=Path(cfg.save) if cfg.save is not None else None,
        ckpt_step=ckpt_step,
    )
    if src is not None:
        src.close()  # the engine opens it again; here only its metadata mattered
        if src.it_dir is not None:
            cfg.load = src.it_dir
    return src


@dataclass
class Resumed:
    """Where a run continues: the iteration, samples consumed so far, the engine's state."""

    iteration: int
    consumed_train_samples: int
    loop_state: dict[str, Any] | None  # None: start the loop fresh at `iteration`


def resume_state(
    src: LoadSource,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ranks: Ranks,
    *,
    finetune: bool = False,
    no_load_optim: bool = False,
    no_load_rng: bool = False,
    device_type: str = "cpu",
) -> Resumed:
    """After `load_weights`: restore what an exact resume needs, as far as `src` holds it.

    `finetune` keeps the weights only and starts at iteration 0 (Megatron's --finetune). A
    checkpoint without Atelier's `train_state/` (hf2mg, Megatron-LM) starts at its
    iteration with a fresh optimizer, as Megatron does with --no-load-optim.
    """
    if finetune:
        return Resumed(0, 0, None)
    if not src.has_train_state:
        if src.kind == "megatron" and src.iteration and ranks.rank == 0:
            log.info(
                "%s holds weights only (no train_state/): continuing at iteration %d with a "
                "fresh optimizer",
                src.it_dir,
                src.iteration,
            )
        return Resumed(src.iteration, src.consumed_train_samples, None)
    assert src.record is not None and src.it_dir is not None
    rec = src.record
    if not no_load_optim and rec.tp != ranks.tp:
        raise AtelierError(
            f"{src.it_dir}: saved with TP={rec.tp}, this run has TP={ranks.tp}; the optimizer "
            "state follows the TP layout, so pass no_load_optim (--no-load-optim) to continue "
            "with these weights and a fresh optimizer, or finetune"
        )
    if not no_load_optim and rec.pp != ranks.pp:
        raise AtelierError(
            f"{src.it_dir}: saved with PP={rec.pp}, this run has PP={ranks.pp}; the optimizer "
            "state follows the pipeline layout, so pass no_load_optim (--no-load-optim) to "
            "continue with these weights and a fresh optimizer, or finetune"
        )
    load_rng = not no_load_rng
    if load_rng and rec.world_size != ranks.world:
        if ranks.rank == 0:
            log.info(
                "RNG state not restored: saved by %d ranks, this run has %d",
                rec.world_size,
                ranks.world,
            )
        load_rng = False
    loop = load_train_state(
        src.it_dir / TRAIN_STATE,
        model,
        None if no_load_optim else optimizer,
        ranks,
        load_rng=load_rng,
        device_type=device_type,
    )
    # Megatron's --no-load-optim skips the scheduler too; iteration and samples still count
    return Resumed(rec.iteration, rec.consumed_train_samples, None if no_load_optim else loop)
