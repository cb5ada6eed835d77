"""hf2mg: a Hugging Face folder -> a TP/PP-sharded Megatron checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from atelier.core.errors import AtelierError
from atelier.llm.convert.assets import (
    ASSETS_DIRNAME,
    check_tokenizer_fits,
    copy_assets,
    copy_tokenizer,
)
from atelier.llm.convert.hf_checkpoint import HFSource
from atelier.llm.convert.megatron_checkpoint import MegatronLayout
from atelier.llm.convert.megatron_writer import MegatronTarget, write_megatron
from atelier.llm.convert.output_dir import check_save_dir, writing

FORMATS = ("legacy", "mcore")
NORMS = ("te", "local")


@dataclass
class Hf2MgOptions:
    load_dir: Path
    save_dir: Path
    tp: int = 1
    pp: int = 1
    num_layer_list: list[int] | None = None
    make_vocab_size_divisible_by: int = 128
    fmt: str = "mcore"
    mcore_norms: str = "local"
    params_dtype: torch.dtype | None = None
    tokenizer_model: Path | None = None
    true_vocab_size: int | None = None
    overwrite: bool = False
    layers_per_virtual_stage: int | None = None  # VPP chunks of this many layers


def check_format(fmt: str, norms: str) -> None:
    if fmt not in FORMATS:
        raise AtelierError(f"fmt {fmt!r}: use one of {', '.join(FORMATS)}")
    if norms not in NORMS:
        raise AtelierError(f"mcore_norms {norms!r}: use one of {', '.join(NORMS)}")


def hf2mg(opts: Hf2MgOptions) -> MegatronLayout:
    """Convert, streaming: each output rank file is written as soon as it is complete."""
    check_format(opts.fmt, opts.mcore_norms)
    if opts.make_vocab_size_divisible_by < 1:
        raise AtelierError("make_vocab_size_divisible_by must be at least 1")
    save = check_save_dir(opts.save_dir, opts.load_dir, opts.overwrite, "hf2mg")
    source = HFSource(opts.load_dir, opts.true_vocab_size)
    tok = opts.tokenizer_model
    tok_dir = (tok if tok.is_dir() else tok.parent) if tok else opts.load_dir
    check_tokenizer_fits(
        tok_dir, source.meta.vocab_size, f"the embedding of {opts.load_dir} (vocab size)"
    )
    target = MegatronTarget(
        tp=opts.tp,
        pp=opts.pp,
        layer_list=opts.num_layer_list,
        fmt=opts.fmt,
        norms=opts.mcore_norms,
        divisible_by=opts.make_vocab_size_divisible_by,
        dtype=opts.params_dtype,
        layers_per_virtual_stage=opts.layers_per_virtual_stage,
    )
    dtype = opts.params_dtype or source.meta.dtype
    needed = source.meta.num_parameters() * dtype.itemsize
    try:
        with writing(save, "hf2mg", needed) as tmp:
            layout = write_megatron(source, tmp, target)
            copy_assets(opts.load_dir, tmp / ASSETS_DIRNAME)
            if tok:
                copy_tokenizer(tok, tmp / ASSETS_DIRNAME)
    finally:
        source.close()
    return layout
