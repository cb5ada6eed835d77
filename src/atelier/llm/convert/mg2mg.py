"""mg2mg: reshard a Megatron checkpoint (TP, PP, layer list, format) without HF."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from atelier.llm.convert.assets import ASSETS_DIRNAME
from atelier.llm.convert.hf2mg import check_format
from atelier.llm.convert.megatron_checkpoint import MegatronLayout
from atelier.llm.convert.megatron_writer import MegatronTarget, write_megatron
from atelier.llm.convert.output_dir import check_save_dir, writing
from atelier.llm.convert.torch_dist import open_megatron_source


def mg2mg(
    load_dir: Path,
    save_dir: Path,
    *,
    tp: int,
    pp: int,
    num_layer_list: list[int] | None = None,
    fmt: str | None = None,
    mcore_norms: str | None = None,
    make_vocab_size_divisible_by: int | None = None,
    params_dtype: torch.dtype | None = None,
    overwrite: bool = False,
    layers_per_virtual_stage: int | None = None,
) -> MegatronLayout:
    """Reshard; unset options keep the source's format, norm naming and vocab padding rule."""
    save = check_save_dir(save_dir, load_dir, overwrite, "mg2mg")
    source = open_megatron_source(load_dir)
    src = source.layout
    fmt = fmt or src.fmt
    norms = mcore_norms or src.norms
    check_format(fmt, norms)
    divisible = (
        make_vocab_size_divisible_by
        or getattr(source.args, "make_vocab_size_divisible_by", None)
        or 128
    )
    target = MegatronTarget(
        tp=tp,
        pp=pp,
        layer_list=num_layer_list,
        fmt=fmt,
        norms=norms,
        divisible_by=int(divisible),
        dtype=params_dtype,
        layers_per_virtual_stage=layers_per_virtual_stage,
    )
    needed = source.meta.num_parameters() * (params_dtype or source.meta.dtype).itemsize
    try:
        with writing(save, "mg2mg", needed) as tmp:
            layout = write_megatron(source, tmp, target)
            if source.assets_dir is not None:
                shutil.copytree(source.assets_dir, tmp / ASSETS_DIRNAME)
    finally:
        source.close()
    return layout
