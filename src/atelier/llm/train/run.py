"""One training job from a typed request: the CLI's `train` and `run` call these.

`run_training`: tokenizer -> DataSpec -> TrainConfig, the checkpoint to start from
(`checkpoint.prepare_load`: a checkpoint of this run in `save` is resumed), processes
(`launch`), hooks (metrics, checkpoints, preemption), then the Hugging Face export.
The Hugging Face export after training is `hf_export.py`; the platform guide's whole job
(preprocess, hf2mg, train, mg2hf: `atelier llm run`) is `whole_job.run_pipeline`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atelier.core.errors import AtelierError
from atelier.llm.train.checkpoint.load import LoadSource
from atelier.llm.train.multinode import NodeSpec


@dataclass
class TrainRequest:
    """Everything the CLI collected; `config` holds TrainConfig fields by name."""

    data_path: list[str]
    config: dict[str, Any]
    split: str = "969,30,1"
    seq_length: int | None = None
    is_instruction: bool = False
    pad_to_seq_length: bool = True
    reset_position_ids: bool = False
    reset_attention_mask: bool = False
    eod_mask_loss: bool = False
    tokenizer_type: str = "PretrainedFromHF"
    tokenizer: str | None = None
    tokenizer_use_fast: bool = True
    data_cache_path: str | None = None
    load: Path | None = None
    save: Path | None = None
    ckpt_step: int | None = None
    convert_mg2hf: Path | None = None  # an explicit folder
    convert_mindspeed: bool = False  # <hf_save_dir or save>/mg2hf_iteration<N>
    hf_save_dir: Path | None = None
    hf_cfg_dir: Path | None = None
    shape: dict[str, int | None] = field(default_factory=dict)
    agree: dict[str, Any] = field(default_factory=dict)
    vocab_size: int | None = None
    node: NodeSpec | None = None  # this node of a multi-node run started without torchrun

    @property
    def wants_hf(self) -> bool:
        return self.convert_mg2hf is not None or self.convert_mindspeed


@dataclass
class RunReport:
    lines_: list[str] = field(default_factory=list)
    iterations: int = 0
    stop_reason: str = ""
    checkpoint: Path | None = None
    hf_dir: Path | None = None
    losses: list[float] = field(default_factory=list)

    def lines(self) -> list[str]:
        return self.lines_


# --- checks that need the checkpoint's metadata ------------------------------------------


def check_agrees(agree: dict[str, Any], src: LoadSource) -> None:
    """Architecture flags given on the command line must describe the loaded checkpoint."""
    m = src.meta
    have = {
        "kv_channels": m.head_dim,
        "rotary_base": m.rope_theta,
        "norm_epsilon": m.norm_eps,
        "untie_embeddings_and_output_weights": not m.tied,
        "add_qkv_bias": m.qkv_bias,
        "qk_layernorm": bool(getattr(m.fam.arch, "qk_norm", False)),
    }
    where = src.it_dir or src.folder
    for name, given in agree.items():
        if given is not None and given != have[name]:
            flag = "--" + name.replace("_", "-")
            raise AtelierError(
                f"{flag} {given} differs from the checkpoint's {have[name]} ({where}); drop "
                "it or load the checkpoint of that model"
            )


def _tokenizer(req: TrainRequest, src: LoadSource | None):
    from atelier.llm.convert.assets import has_tokenizer
    from atelier.llm.data.tokenizer import TokenizerSpec, load_tokenizer

    path = req.tokenizer
    if path is None and src is not None and src.assets_dir and has_tokenizer(src.assets_dir):
        path = str(src.assets_dir)
    if path is None:
        raise AtelierError(
            "--tokenizer-name-or-path is required (or TOKENIZER_PATH): the data's "
            "end-of-document and pad ids come from it"
        )
    spec = TokenizerSpec(
        type=req.tokenizer_type, name_or_path=path, use_fast=req.tokenizer_use_fast
    )
    return path, load_tokenizer(spec)


def build_config(req: TrainRequest, src: LoadSource | None):
    """The TrainConfig of this request, its DataSpec included."""
    from atelier.llm.train.config import TrainConfig
    from atelier.llm.train.data import DataSpec

    if req.seq_length is None:
        raise AtelierError("--seq-length is required (or SEQ_LEN)")
    tok_path, tok = _tokenizer(req, src)
    eod = tok.eod if tok.eod is not None else tok.eos
    if eod is None:
        raise AtelierError(f"--tokenizer-name-or-path {tok_path}: the tokenizer has no EOS token")
    spec = DataSpec(
        data_path=req.data_path,
        split=req.split,
        seq_length=req.seq_length,
        seed=req.config.get("seed", 1234),
        is_instruction=req.is_instruction,
        pad_to_seq_length=req.pad_to_seq_length,
        reset_position_ids=req.reset_position_ids,
        reset_attention_mask=req.reset_attention_mask,
        eod_mask_loss=req.eod_mask_loss,
        eod_id=eod,
        pad_id=tok.pad,
        data_cache_path=req.data_cache_path,
    )
    _check_data_exists(spec)
    extra = dict(req.config.get("extra_args", {}))
    if req.vocab_size is not None:
        extra["vocab_size"] = req.vocab_size
    values = {**req.config, "extra_args": extra}
    cfg = TrainConfig(
        data=spec,
        seq_length=req.seq_length,
        load=src.it_dir if src is not None and src.it_dir is not None else req.load,
        save=req.save,
        **{k: v for k, v in req.shape.items()},
        **values,
    )
    cfg.check()
    return cfg, tok_path


def _check_data_exists(spec) -> None:
    """Open every prefix's index now (cheap), so a missing dataset is one line before any
    process starts; the engine checks token ids against the vocabulary when it builds them."""
    from atelier.llm.train.data.instruction import open_instruction
    from atelier.llm.train.data.pretrain import open_pretraining

    prefixes = spec.blend[0]
    if spec.is_instruction:
        open_instruction(prefixes[0])
    else:
        for prefix in prefixes:
            open_pretraining(prefix)


# --- the job ----------------------------------------------------------------------------


def _rank_main(cfg, src: LoadSource | None, tokenizer: str | None) -> dict[str, Any]:
    """What every rank runs; rank 0's return value comes back to the launcher."""
    from atelier.llm.train.checkpoint.hooks import CheckpointHooks
    from atelier.llm.train.hooks import HookList
    from atelier.llm.train.loop import train
    from atelier.llm.train.metrics import MetricsHooks
    from atelier.llm.train.signals import StopOnSignal

    ckpt = CheckpointHooks(src, Path(cfg.save) if cfg.save else None, tokenizer=tokenizer)
    stop = StopOnSignal()
    result = train(cfg, HookList([MetricsHooks(), ckpt, stop]))
    return {
        "iterations": result.iterations,
        "steps": len(result.losses),
        "losses": result.losses,
        "stop_reason": result.stop_reason,
        "signal": stop.name,
        "saved": str(ckpt.last_saved) if ckpt.last_saved else None,
    }


def run_training(req: TrainRequest) -> RunReport:
    from atelier.llm.train.checkpoint.layout import resumable_checkpoint
    from atelier.llm.train.checkpoint.load import prepare_load
    from atelier.llm.train.hf_export import export_hf, hf_target, lora_export
    from atelier.llm.train.launch import launch, under_torchrun

    if req.wants_hf and req.save is None:
        raise AtelierError(
            "--convert-mg2hf / CONVERT_MG2HF needs --save (the Hugging Face folder is "
            "written from the last checkpoint)"
        )
    fresh = req.save is None or resumable_checkpoint(req.save) is None
    if fresh and req.convert_mg2hf is not None and _non_empty(req.convert_mg2hf):
        raise AtelierError(
            f"--convert-mg2hf {req.convert_mg2hf}: the folder is not empty; choose a new one"
        )
    probe = _ProbeConfig(load=req.load, save=req.save, lora=req.config.get("lora"))
    src = prepare_load(probe, req.ckpt_step)
    if src is not None:
        src.source = None  # closed; keep the request picklable for spawned ranks
        check_agrees(req.agree, src)
    cfg, tokenizer = build_config(req, src)
    if cfg.nproc_per_node > 1 and not under_torchrun():
        from atelier.llm.train.signals import spawn_forwarder

        spawn_forwarder()
    out = launch(_rank_main, (cfg, src, tokenizer), cfg.nproc_per_node, node=req.node)
    report = RunReport(iterations=out["iterations"], stop_reason=out["stop_reason"])
    report.losses = out["losses"]
    report.checkpoint = Path(out["saved"]) if out["saved"] else None
    last = f"final lm loss {out['losses'][-1]:.6f}" if out["losses"] else "no step trained"
    report.lines_.append(
        f"trained {out['steps']} iterations to iteration {out['iterations']}, {last}"
    )
    where = (
        f"checkpoint saved to {report.checkpoint}"
        if report.checkpoint
        else "no --save given, nothing saved"
    )
    if out["signal"]:
        report.lines_.append(
            f"stopped by {out['signal']} after iteration {out['iterations']}; {where}"
            + ("; run the same command to resume" if report.checkpoint else "")
        )
        return report
    if report.checkpoint:
        report.lines_.append(where)
    target = hf_target(req, out["iterations"])
    if target is not None and req.save is not None:
        if _non_empty(target) and out["steps"] == 0:
            report.lines_.append(f"Hugging Face model: skipped, {target} exists")
            report.hf_dir = target
            return report
        if _non_empty(target):
            raise AtelierError(
                f"{target}: exists and is not empty, so the Hugging Face model was not written; "
                f"the checkpoint is in {req.save}: atelier llm convert mg2hf --load-dir "
                f"{req.save} --save-dir NEW_FOLDER"
            )
        report.hf_dir = export_hf(req, req.save, target, lora_export(req, req.save))
        report.lines_.append(f"Hugging Face model written to {report.hf_dir}")
    return report


def _non_empty(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


@dataclass
class _ProbeConfig:
    """The fields `prepare_load` reads, before the full TrainConfig can be built."""

    load: Path | None = None
    save: Path | None = None
    lora: Any = None  # a LoraSpec; prepare_load resolves its `load` folder in place
