"""LoRA checkpoints on disk: merged by mg2hf, or written as a PEFT adapter folder.

MindSpeed-LLM's `convert_ckpt` spelling (`--lora-load`, `--lora-r`, `--lora-alpha`,
`--lora-target-modules`, `--save-lora-to-hf`) and behaviour:

- adapters saved with the base (`X.base_layer.weight` next to `X.lora_A/B`) are merged
  from `load_dir` itself; adapters saved apart (`--lora-ckpt-filter`) come from
  `lora_load`, merged onto the plain `X.weight` of `load_dir` (a full LoRA folder given
  as `lora_load` lends its adapters and the modules it trained fully: the base is
  `load_dir`);
- each folder's iteration is found like Megatron's (`latest_checkpointed_iteration.txt`,
  `iter_*/`, or `mp_rank_*` directly); with the same TP x PP grid each rank is merged on
  its own (layer numbers local to each stage in both), else (another grid, or a Hugging
  Face `load_dir`) per projection after gathering the adapters as for the PEFT export;
- r, alpha and the targets default to the LoRA run's args (`lora_r`, `lora_alpha`,
  `lora_target_modules`, which MindSpeed and Atelier save), else MindSpeed's 16 and 32
  and the linears the adapters sit on. A rank that disagrees with the tensors is an error.

Unlike MindSpeed's merge, a base bias (`base_layer.bias`, Qwen2's QKV bias) is kept, and
the sum is done in fp32 and rounded once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from atelier.core.errors import AtelierError
from atelier.core.log import get_logger
from atelier.llm.convert.families import Family, family_for_args
from atelier.llm.convert.hf_checkpoint import HFSource, hf_plan
from atelier.llm.convert.lora import (
    Adapters,
    LoraSpec,
    exportable_adapters,
    merge_weight,
    merged_rank,
    split_lora_state,
)
from atelier.llm.convert.lora_peft import hf_adapters, peft_adapter_config, peft_state_dict
from atelier.llm.convert.megatron_checkpoint import (
    TRACKER,
    MegatronSource,
    iteration_dir,
    load_rank_file,
    rank_files,
)
from atelier.llm.convert.megatron_state import canonical_flat
from atelier.llm.convert.meta import ModelMeta, meta_from_megatron_args
from atelier.llm.convert.names import detect_format
from atelier.llm.convert.source import CheckpointSource, vocab_rows

log = get_logger(__name__)
DEFAULT_R, DEFAULT_ALPHA = 16, 32.0  # MindSpeed-LLM's defaults


@dataclass(frozen=True)
class LoraOptions:
    """What mg2hf does with LoRA adapters; None fields default to the run's args."""

    load: Path | None = None  # lora_load: a LoRA checkpoint saved apart; None: in load_dir
    r: int | None = None
    alpha: float | None = None
    target_modules: tuple[str, ...] = ()
    save_to_hf: bool = False  # write a PEFT adapter folder instead of a merged model

    def given(self) -> str | None:
        """The first LoRA parameter set (for 'given but nothing to merge')."""
        for name, value in (
            ("lora_load", self.load),
            ("lora_r", self.r),
            ("lora_alpha", self.alpha),
            ("lora_target_modules", self.target_modules),
            ("save_lora_to_hf", self.save_to_hf),
        ):
            if value:
                return name
        return None


class _RankFiles:
    """A Megatron checkpoint folder's rank files and args, without reading the model."""

    def __init__(self, folder: Path, param: str) -> None:
        if not folder.is_dir():
            raise AtelierError(f"{param} {folder}: not a folder")
        try:
            self.it_dir = iteration_dir(folder)
        except AtelierError as e:
            raise AtelierError(str(e).replace("load_dir", param, 1)) from None
        self.folder, self.param = folder, param
        self.files = rank_files(self.it_dir)
        self.tp, self.pp = _grid(self.files)
        self._first = load_rank_file(self.files[(0, 0)])
        self.args = self._first.get("args")

    def state(self, key: tuple[int, int]) -> tuple[str, dict[str, torch.Tensor]]:
        path = self.files[key]
        ckpt = self._first if key == (0, 0) else load_rank_file(path)
        model = ckpt.get("model", ckpt.get("model0"))  # model0: a virtual-pipeline chunk
        if not isinstance(model, dict):
            raise AtelierError(f"{path}: no 'model' state dict inside")
        return str(path), canonical_flat(model)

    def adapters(self, key: tuple[int, int]) -> Adapters:
        where, flat = self.state(key)
        return split_lora_state(flat, where)[1]

    def exportable(self, key: tuple[int, int]) -> Adapters:
        where, flat = self.state(key)
        return exportable_adapters(flat, where, _arg(self.args, "lora_modules_to_save") or ())


def _arg(args: Any, name: str) -> Any:
    return getattr(args, name, None) if args is not None else None


def resolve_spec(opts: LoraOptions, args: Any) -> LoraSpec:
    """Flags first, then the LoRA run's args, then MindSpeed's defaults."""
    r = opts.r or _arg(args, "lora_r") or DEFAULT_R
    alpha = opts.alpha or _arg(args, "lora_alpha") or DEFAULT_ALPHA
    targets = opts.target_modules or tuple(_arg(args, "lora_target_modules") or ())
    return LoraSpec(int(r), float(alpha), tuple(targets))


class LoraMergedSource(MegatronSource):
    """A Megatron checkpoint read with its LoRA adapters merged, rank by rank, layer by layer."""

    def __init__(self, load_dir: Path, opts: LoraOptions) -> None:
        self._lora = _RankFiles(opts.load, "lora_load") if opts.load is not None else None
        self._opts = opts
        self._spec: LoraSpec | None = None
        super().__init__(load_dir)
        log.info(
            "merging LoRA adapters (r=%d, alpha=%g, %s) from %s",
            self.spec.r,
            self.spec.alpha,
            " ".join(self.spec.target_modules) or "every linear they sit on",
            self._lora.folder if self._lora else load_dir,
        )

    @property
    def spec(self) -> LoraSpec:
        if self._spec is None:
            run_args = self._lora.args if self._lora is not None else self.args
            self._spec = resolve_spec(self._opts, run_args)
        return self._spec

    def _fam(self) -> Family:
        return family_for_args(self.args)

    def _model_state(self, key, ckpt, path):
        flat = super()._model_state(key, ckpt, path)
        if self._lora is None:
            return merged_rank(flat, self.spec, self._fam(), str(path))
        awhere, aflat = self._lora.state(key)
        return merged_rank(flat, self.spec, self._fam(), str(path), aflat, awhere)


def _grid(files: dict[tuple[int, int], Path]) -> tuple[int, int]:
    return max(k[0] for k in files) + 1, max(k[1] for k in files) + 1


def _is_hf_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and not (folder / TRACKER).is_file()


def _hf_layout_adapters(
    files: _RankFiles, spec: LoraSpec, meta: ModelMeta
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """A LoRA checkpoint's adapters per Hugging Face weight (fused ones split exactly)."""
    stages, fmt, norms = _adapter_stages(files)
    return hf_adapters(stages, spec, meta, fmt, norms, str(files.it_dir))[0]


def _adapter_stages(files: _RankFiles) -> tuple[list[list[Adapters]], str, str]:
    """Every rank's adapters, by stage then TP rank, and their names' format."""
    stages = [[files.exportable((t, p)) for t in range(files.tp)] for p in range(files.pp)]
    if not stages[0][0]:
        raise AtelierError(
            f"{files.param} {files.folder}: holds no LoRA adapters ({files.files[(0, 0)]}); "
            "pass the LoRA checkpoint"
        )
    fmt, norms = detect_format({m + ".weight": t for m, t in stages[0][0].a.items()})
    return stages, fmt, norms


class LoraMergedPiecesSource:
    """A base with a LoRA run's adapters merged per Hugging Face projection, W + (alpha/r) B A.

    For bases the adapters' rank files do not line up with: the Hugging Face folder a run
    loaded, or a Megatron checkpoint of another TP x PP than the LoRA save. The adapters
    are gathered into HF pieces as for the PEFT export (the sum is the same as merging
    per TP rank, bit for bit in the tests).
    """

    def __init__(self, base: CheckpointSource, load_dir: Path, opts: LoraOptions) -> None:
        assert opts.load is not None
        self.base = base
        files = _RankFiles(opts.load, "lora_load")
        self.spec = resolve_spec(opts, files.args)
        self._pairs = _hf_layout_adapters(files, self.spec, self.meta)
        shapes = dict(hf_plan(self.meta))
        for name, (a, b) in self._pairs.items():
            if [b.shape[0], a.shape[1]] != shapes.get(name):
                raise AtelierError(
                    f"lora_load {opts.load}: the adapters of {name} give a "
                    f"[{b.shape[0]}, {a.shape[1]}] update but load_dir {load_dir} has "
                    f"{shapes.get(name)}; pass the base model the LoRA run was trained on"
                )
        log.info(
            "merging LoRA adapters (r=%d, alpha=%g) from %s into %s per projection",
            self.spec.r,
            self.spec.alpha,
            opts.load,
            load_dir,
        )

    @property
    def meta(self) -> ModelMeta:
        return self.base.meta

    @property
    def assets_dir(self) -> Path | None:
        return self.base.assets_dir

    def layer(self, i: int) -> dict[str, torch.Tensor]:
        pieces = self.base.layer(i)
        for part in self.meta.fam.parts_for(self.meta):
            for piece, template in zip(part.pieces, part.hf, strict=True):
                pair = self._pairs.get(template.format(i=i))
                if pair is not None:
                    pieces[piece] = merge_weight(pieces[piece], *pair, self.spec.scale)
        return pieces

    def embed(self) -> torch.Tensor:
        return self.base.embed()

    def final_norm(self) -> torch.Tensor:
        return self.base.final_norm()

    def lm_head(self) -> torch.Tensor | None:
        return self.base.lm_head()

    def vocab_rows(self, which: str, start: int, stop: int) -> torch.Tensor:
        return vocab_rows(self.base, which, start, stop)

    def close(self) -> None:
        self.base.close()


def open_source(
    load_dir: Path, opts: LoraOptions | None
) -> MegatronSource | LoraMergedPiecesSource:
    """The mg2hf reader: plain, or with the adapters of `load_dir` / `opts.load` merged
    (per TP rank when the LoRA save has the base's TP x PP grid, as MindSpeed merges;
    per projection onto a Hugging Face base folder or a base of another grid).

    A checkpoint whose adapters nobody asked to merge is merged when its args record
    the run's r and alpha; without them it is an error naming the flags, as is a LoRA
    flag with no adapters anywhere.
    """
    if opts is not None and opts.load is not None:
        if _is_hf_folder(load_dir):
            return LoraMergedPiecesSource(HFSource(load_dir), load_dir, opts)
        if opts.load.resolve() != load_dir.resolve():
            if _grid(_RankFiles(opts.load, "lora_load").files) != _grid(
                rank_files(iteration_dir(load_dir))
            ):
                return LoraMergedPiecesSource(MegatronSource(load_dir), load_dir, opts)
            return LoraMergedSource(load_dir, opts)
        opts = dataclasses.replace(opts, load=None)  # a full LoRA folder given twice
    if opts is not None and opts.given() and _is_hf_folder(load_dir):
        raise AtelierError(
            f"{opts.given()} given but load_dir {load_dir} is a Hugging Face folder; pass "
            "lora_load LORA_DIR with the LoRA checkpoint to merge into it"
        )
    files = _RankFiles(load_dir, "load_dir")
    own = files.adapters((0, 0))
    if not own:
        if opts is not None and opts.given():
            raise AtelierError(
                f"{opts.given()} given but load_dir {load_dir} holds no LoRA adapters "
                f"({files.files[(0, 0)]}); pass lora_load LORA_DIR with the LoRA checkpoint"
            )
        return MegatronSource(load_dir)
    where = str(files.files[(0, 0)])
    _base_or_error(files, where)
    if opts is None:
        if _arg(files.args, "lora_r") is None or _arg(files.args, "lora_alpha") is None:
            raise AtelierError(
                f"{where}: holds LoRA adapters (e.g. {own.modules()[0]}) and its args do not "
                "record the run's lora_r / lora_alpha; pass lora_r R lora_alpha A to merge "
                "them, or save_lora_to_hf to export them"
            )
        opts = LoraOptions()
    return LoraMergedSource(load_dir, opts)


def _base_or_error(files: _RankFiles, where: str) -> None:
    """A folder of adapters only cannot be a base: say what to pass instead."""
    _, flat = files.state((0, 0))
    base, _ = split_lora_state(flat, where)
    if not any(".layers." in n and not n.endswith("_extra_state") for n in base):
        raise AtelierError(
            f"load_dir {files.folder}: holds only LoRA adapters (saved with "
            "--lora-ckpt-filter); pass the base checkpoint as load_dir and this folder as "
            "lora_load"
        )


def adapter_meta(files: _RankFiles, base: _RankFiles | None) -> ModelMeta:
    """Model sizes for splitting fused adapters: the LoRA run's args, else the base's."""
    for f in (files, base):
        if f is not None and f.args is not None:
            return meta_from_megatron_args(f.args, str(f.files[(0, 0)]), torch.float32)
    raise AtelierError(
        f"{files.files[(0, 0)]}: no 'args' inside; Atelier needs the args Megatron saves "
        "with every checkpoint to split the fused adapters"
    )


def peft_adapter(
    load_dir: Path, opts: LoraOptions, base_model: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(adapter_model.safetensors tensors, adapter_config.json) of a LoRA checkpoint.

    Adapters come from `opts.load`, else `load_dir`; `base_model` (the config's
    `base_model_name_or_path`) defaults to the original model's `_name_or_path` when the
    checkpoint recorded its Hugging Face config.
    """
    import json

    base: _RankFiles | None = None
    if opts.load is None or opts.load.resolve() == load_dir.resolve():
        files = _RankFiles(load_dir, "load_dir")
    else:
        files = _RankFiles(opts.load, "lora_load")
        if _is_hf_folder(load_dir):
            base_model = base_model or str(load_dir)
        else:
            base = _RankFiles(load_dir, "load_dir")
    spec = resolve_spec(opts, files.args)
    meta = adapter_meta(files, base)
    stages, fmt, norms = _adapter_stages(files)
    pairs, targets = hf_adapters(stages, spec, meta, fmt, norms, str(files.it_dir))
    state = peft_state_dict(pairs)
    if base_model is None:
        recorded = json.loads(getattr(files.args, "atelier_hf_config", None) or "{}")
        base_model = recorded.get("_name_or_path") or None
    return state, peft_adapter_config(spec, targets, base_model)
