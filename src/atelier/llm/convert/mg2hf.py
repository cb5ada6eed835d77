"""mg2hf: a Megatron checkpoint -> a complete Hugging Face folder.

Complete means `from_pretrained` works on it alone: config.json, generation_config.json,
every tokenizer file, sharded safetensors with their index. Padded vocabulary rows are
dropped. Configs and tokenizer come from --hf-config-dir, else from the `hf_assets/`
folder hf2mg left in the checkpoint, else config.json is rebuilt from the Megatron args.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from atelier.core.errors import AtelierError
from atelier.core.log import get_logger
from atelier.llm.convert.assets import (
    check_tokenizer_fits,
    copy_assets,
    copy_tokenizer,
    has_tokenizer,
)
from atelier.llm.convert.hf_checkpoint import (
    hf_plan,
    hf_tensors,
    read_json,
    write_safetensors_sharded,
)
from atelier.llm.convert.lora_checkpoint import LoraOptions, open_source, peft_adapter
from atelier.llm.convert.megatron_checkpoint import MegatronSource
from atelier.llm.convert.meta import hf_config_from_meta, meta_from_hf_config
from atelier.llm.convert.mindspeed import CastSource
from atelier.llm.convert.output_dir import SaveDir, check_save_dir, writing
from atelier.llm.convert.torch_dist import TorchDistSource, is_torch_dist_checkpoint

log = get_logger(__name__)
CHECKED_FIELDS = (
    "num_layers",
    "hidden_size",
    "ffn_hidden_size",
    "num_heads",
    "num_groups",
    "head_dim",
    "tied",
    "qkv_bias",
    "qk_norm",
)


def _adopt_config(source: MegatronSource, config_dir: Path) -> None:
    """Use an original config.json, after checking it describes this checkpoint."""
    path = config_dir / "config.json"
    given = meta_from_hf_config(read_json(path), str(path), source.meta.dtype)
    for name in CHECKED_FIELDS:
        have, want = getattr(source.meta, name), getattr(given, name)
        if have != want:
            raise AtelierError(
                f"hf_config_dir {path}: {name} is {want} but the Megatron "
                f"checkpoint has {have}; pass the config of this model"
            )
    _check_vocab(source, path, given.vocab_size)
    given.vocab_size = source.meta.vocab_size
    source.meta = given


def _check_vocab(source: MegatronSource, path: Path, want: int) -> None:
    """The config's vocab_size must be the checkpoint's true vocabulary.

    Megatron pads the embedding (to a multiple of make_vocab_size_divisible_by x TP);
    the true size is in the args when the writer recorded it. Without it, any size
    up to the padded rows is possible and the checkpoint's own value is kept.
    """
    padded = source.layout.padded_vocab
    args = source.args
    recorded = getattr(args, "true_vocab_size", None) or getattr(args, "vocab_size", None)
    if want > padded or (recorded is not None and int(recorded) != want):
        have = f"{recorded} (padded to {padded} rows)" if recorded else f"{padded} padded rows"
        raise AtelierError(
            f"hf_config_dir {path}: vocab_size is {want} but the Megatron checkpoint has "
            f"{have}; pass the config of this model (or fix its vocab_size)"
        )


def mg2hf(
    load_dir: Path,
    save_dir: Path,
    *,
    hf_config_dir: Path | None = None,
    tokenizer_model: Path | None = None,
    max_shard_bytes: int = 5 * 1024**3,
    overwrite: bool = False,
    lora: LoraOptions | None = None,
    params_dtype: torch.dtype | None = None,
    via_dtype: torch.dtype | None = None,
) -> list[str]:
    """Convert; returns the names of the files written.

    `params_dtype` casts the output (default: the stored dtype); `via_dtype` rounds every
    tensor through that dtype first (MindSpeed's intermediate model, `mindspeed.py`).

    `lora`: merge a LoRA run's adapters (in `load_dir`, or in `lora.load` with the base in
    `load_dir`) before writing, or with `lora.save_to_hf` write a PEFT adapter folder
    instead (`lora_checkpoint.py`). A `load_dir` holding adapters is merged even without it
    when its args record the run's r and alpha.
    """
    if lora is not None and lora.load is not None and lora.load.resolve() == save_dir.resolve():
        raise AtelierError(f"save_dir {save_dir} is the lora_load; choose another folder")
    save = check_save_dir(save_dir, load_dir, overwrite, "mg2hf")
    if lora is not None and lora.save_to_hf:
        return _write_peft(load_dir, save, lora, hf_config_dir)
    if is_torch_dist_checkpoint(load_dir) and not (lora is not None and lora.given()):
        source = TorchDistSource.open(load_dir)
    else:
        source = open_source(load_dir, lora)
    assets = hf_config_dir or source.assets_dir
    if hf_config_dir is not None and not hf_config_dir.is_dir():
        raise AtelierError(f"hf_config_dir {hf_config_dir}: not a folder")
    megatron = getattr(source, "base", source)  # under a LoRA merge per projection
    if (
        isinstance(megatron, MegatronSource | TorchDistSource)
        and assets is not None
        and (assets / "config.json").is_file()
    ):
        _adopt_config(megatron, assets)
    meta = source.meta
    if params_dtype is not None:
        meta.dtype = params_dtype
    reader = CastSource(source, via_dtype) if via_dtype is not None else source
    needed = meta.num_parameters() * meta.dtype.itemsize
    try:
        with writing(save, "mg2hf", needed) as tmp:
            write_safetensors_sharded(
                hf_tensors(reader), tmp, hf_plan(meta), meta.dtype, max_shard_bytes
            )
            if assets is not None:
                copy_assets(assets, tmp, skip=("config.json",))
            if tokenizer_model is not None:
                copy_tokenizer(tokenizer_model, tmp)
            config = hf_config_from_meta(meta)
            (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", "utf-8")
            if not (tmp / "generation_config.json").is_file():
                gen = {
                    k: config[k]
                    for k in ("bos_token_id", "eos_token_id", "pad_token_id")
                    if config.get(k) is not None
                }
                (tmp / "generation_config.json").write_text(
                    json.dumps({**gen, "_from_model_config": True}, indent=2) + "\n", "utf-8"
                )
            check_tokenizer_fits(tmp, meta.vocab_size, f"the embedding of {load_dir}")
            if not has_tokenizer(tmp):
                log.warning(
                    "no tokenizer files found; pass --hf-config-dir ORIGINAL_HF or "
                    "--tokenizer-model to include them"
                )
            written = sorted(f"{save.sub}/{p.name}" if save.sub else p.name for p in tmp.iterdir())
    finally:
        source.close()
    return written


def _write_peft(
    load_dir: Path, save: SaveDir, lora: LoraOptions, hf_config_dir: Path | None
) -> list[str]:
    """`adapter_config.json` + `adapter_model.safetensors` that peft.PeftModel loads."""
    from safetensors.torch import save_file

    base_model = str(hf_config_dir) if hf_config_dir is not None else None
    state, config = peft_adapter(load_dir, lora, base_model)
    needed = sum(t.numel() * t.element_size() for t in state.values())
    with writing(save, "mg2hf", needed) as tmp:
        save_file(state, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", "utf-8")
        written = sorted(f"{save.sub}/{p.name}" if save.sub else p.name for p in tmp.iterdir())
    return written
