"""`atelier llm convert` without a MODE word: MindSpeed-LLM's `convert_ckpt.py` command lines.

`python convert_ckpt.py --load-model-type hf --save-model-type mg ...` runs as
`atelier llm convert --load-model-type hf --save-model-type mg ...`: the direction comes
from `--load-model-type` / `--save-model-type` (or `--loader` / `--saver`) and MindSpeed's
defaults apply (see `atelier.llm.convert.mindspeed`). Every flag of the hf2mg, mg2hf and
mg2mg verbs is accepted here too: their argparse actions are shared, not copied, so a
flag added to a verb (e.g. the LoRA flags of mg2hf) is accepted in this form as well.
Each MindSpeed flag is supported, accepted and ignored for a stated reason, or refused
with one line saying why (docs/llm.md, "MindSpeed convert_ckpt flags").
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

from atelier.core.flags import Int

# flag -> why it changes nothing here (accepted so the scripts run unchanged)
IGNORED = {
    "--max-queue-size": "Atelier streams in one process, no loader/saver queue",
    "--no-checking": "Atelier always checks every tensor name and shape",
    "--moe-grouped-gemm": "affects MoE layers only; Atelier's families are dense",
    "--moe-tp-extend-ep": "affects MoE layers only; Atelier's families are dense",
    "--vocab-file": "MindSpeed's converter never reads it either; the vocabulary size "
    "comes from config.json / the checkpoint args",
    "--load-from-legacy": "the source format is detected from the tensor names",
    "--load-checkpoint-loosely": "Atelier reads by name; a missing tensor is an error",
    "--load-hf-from-config": "Atelier never reads the original weights, only config.json and "
    "tokenizer files",
}
# dest -> why Atelier refuses it (the flag is parsed so that the refusal can say so)
REFUSED = {
    "add_dense_bias": "--add-dense-bias: no supported family has an attention output bias",
    "post_norm": "--post-norm: post-attention/post-MLP norm models are not supported",
    "embed_layernorm": "--embed-layernorm: embedding norms (Bloom) are not supported",
    "add_output_layer_bias": "--add-output-layer-bias: no supported family has an "
    "output-layer bias",
    "qlora_nf4": "--qlora-nf4: NF4 quantization needs bitsandbytes on an NPU/GPU; convert "
    "in bf16/fp16 and quantize when training",
    "orm": "--orm: reward-model (rm_head) checkpoints are not supported",
    "spec": "--spec: custom layer specs are not supported; Atelier writes megatron-core's "
    "local-spec names (--mcore-norms te for Transformer Engine norm names)",
    "noop_layers": "--noop-layers: inserting empty layers is not supported",
    "w_pack": "--w-pack: Baichuan's packed QKV is not supported",
    "ckpt_cfg_path": "--ckpt-cfg-path: MindSpeed's model_cfg.json mappings are not read; "
    "Atelier's family table (src/atelier/llm/convert/families.py) is used",
}


def add_direction_less_form(
    conv: argparse.ArgumentParser, verbs: dict[str, argparse.ArgumentParser]
) -> None:
    """Give the `convert` parser MindSpeed's flags and every flag of `verbs`."""
    g = conv.add_argument_group(
        "MindSpeed-LLM form (no MODE word; direction from --load-model-type/--save-model-type)"
    )
    g.add_argument("--load-model-type", choices=["hf", "mg", "optim"], default=None)
    g.add_argument("--save-model-type", choices=["hf", "mg"], default=None)
    g.add_argument(
        "--model-type-hf",
        default=None,
        help="MindSpeed model type (llama2 for every Llama-layout model; also llama3, "
        "mistral, qwen2, qwen25, yi, qwen3); checked against the model read",
    )
    g.add_argument("--add-qkv-bias", action="store_true", help="the model has QKV biases (checked)")
    g.add_argument("--save-to-legacy", action="store_true", help="write the legacy layout")
    g.add_argument(
        "--target-expert-parallel-size", type=Int(1, 1), default=1, help="1 (dense models)"
    )
    g.add_argument("--max-queue-size", type=Int(1, 1 << 20), default=50, help=argparse.SUPPRESS)
    for flag in IGNORED:
        if flag != "--max-queue-size":
            kw = {"default": None} if flag == "--vocab-file" else {"action": "store_true"}
            g.add_argument(flag, help=argparse.SUPPRESS, **kw)
    for dest in REFUSED:
        flag = "--" + dest.replace("_", "-")
        if dest == "spec":
            g.add_argument(flag, nargs="*", default=None, help=argparse.SUPPRESS)
        elif dest in ("noop_layers", "w_pack", "ckpt_cfg_path"):
            g.add_argument(flag, default=None, help=argparse.SUPPRESS)
        else:
            g.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    # every verb's flags, shared (the action objects, made optional at this level)
    for verb in ("hf2mg", "mg2hf", "mg2mg"):
        for action in verbs[verb]._actions:
            if not action.option_strings or any(
                s in conv._option_string_actions for s in action.option_strings
            ):
                continue
            shared = copy.copy(action)
            shared.required = False
            g._add_action(shared)
    conv.set_defaults(func=run_convert_mindspeed, mode=None)


def _kind(explicit: str | None, plugin: str | None, flag: str) -> str | None:
    from atelier.core.errors import AtelierError

    if explicit:
        return explicit
    if not plugin:
        return None
    if "hf" in plugin or plugin == "llama_mistral":
        return "hf"
    if plugin in ("megatron", "mcore", "mg", "mg_mcore", "legacy"):
        return "mg"
    raise AtelierError(f"{flag} {plugin}: unknown plugin; use --load-model-type/--save-model-type")


def _refuse_unsupported(args: argparse.Namespace) -> None:
    from atelier.core.errors import AtelierError

    for dest, why in REFUSED.items():
        value = getattr(args, dest, None)
        if value not in (None, False, []):
            raise AtelierError(f"{why}")
    if args.load_model_type == "optim":
        raise AtelierError(
            "--load-model-type optim: optimizer-state conversion is not supported; convert "
            "the model and train with --no-load-optim (or --finetune)"
        )


def run_convert_mindspeed(args: argparse.Namespace) -> int:
    from atelier.cli.llm_convert import flags_for_params
    from atelier.core.errors import AtelierError

    try:
        return _dispatch(args)
    except AtelierError as e:
        raise AtelierError(flags_for_params(str(e))) from None


def _dispatch(args: argparse.Namespace) -> int:
    """Dispatch a MindSpeed-style command line to hf2mg / mg2hf / mg2mg."""
    from atelier.core.errors import AtelierError

    load = _kind(args.load_model_type, args.loader, "--loader")
    save = _kind(args.save_model_type, args.saver, "--saver")
    if load is None and save is None and args.load_dir is None:
        raise AtelierError(
            "convert: give a MODE (hf2mg, mg2hf, mg2mg, inspect) or MindSpeed's "
            "--load-model-type hf|mg --save-model-type mg|hf"
        )
    _refuse_unsupported(args)
    if load is None or save is None:
        missing = "--load-model-type" if load is None else "--save-model-type"
        raise AtelierError(
            f"{missing} is missing: pass hf or mg (MindSpeed writes nothing without it)"
        )
    for flag, dest in (("--load-dir", "load_dir"), ("--save-dir", "save_dir")):
        if getattr(args, dest) is None:
            raise AtelierError(f"the following arguments are required: {flag}")
    from atelier.cli import llm_convert

    if (load, save) == ("hf", "mg"):
        return llm_convert.run_convert_hf2mg(_hf2mg_defaults(args))
    if (load, save) == ("mg", "hf"):
        return _run_mg2hf(args)
    if (load, save) == ("mg", "mg"):
        if getattr(args, "lora_load", None):
            raise AtelierError(
                "--lora-load with --save-model-type mg: merging LoRA into a Megatron "
                "checkpoint is not supported; use --save-model-type hf"
            )
        out = copy.copy(args)
        out.tp, out.pp = args.tp or 1, args.pp or 1  # MindSpeed's saver defaults
        out.params_dtype = args.params_dtype or "fp16"  # MindSpeed's Megatron loader default
        out.format = _mindspeed_format(args)
        return llm_convert.run_convert_mg2mg(out)
    raise AtelierError("--load-model-type hf --save-model-type hf: nothing to convert")


def _mindspeed_format(args: argparse.Namespace) -> str:
    """MindSpeed: mcore with --use-mcore-models (unless --save-to-legacy), else legacy."""
    if args.format:
        return args.format
    if args.save_to_legacy:
        return "legacy"
    if args.use_mcore_models or (args.saver and "mcore" in args.saver):
        return "mcore"
    return "legacy"


def _hf2mg_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """MindSpeed's HF loader defaults: fp16, vocabulary divisible by 1, legacy layout."""
    import json

    from atelier.core.errors import AtelierError
    from atelier.core.log import get_logger
    from atelier.llm.convert.families import detect_family
    from atelier.llm.convert.meta import meta_from_hf_config
    from atelier.llm.convert.mindspeed import check_model_type

    config_path = Path(args.load_dir) / "config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text("utf-8"))
        fam = detect_family(config, str(config_path))
        check_model_type(args.model_type_hf, fam, str(args.load_dir))
        import torch

        has_bias = meta_from_hf_config(config, str(config_path), torch.float32).qkv_bias
        _check_qkv_bias(args.add_qkv_bias, has_bias, str(args.load_dir), get_logger(__name__))
    out = copy.copy(args)
    out.tp = args.tp or 1
    out.pp = args.pp or 1
    out.make_vocab_size_divisible_by = args.make_vocab_size_divisible_by or 1
    out.params_dtype = args.params_dtype or "fp16"
    out.format = _mindspeed_format(args)
    if out.format == "legacy" and args.mcore_norms == "te":
        raise AtelierError("--mcore-norms te: only for mcore; add --use-mcore-models")
    return out


def _check_qkv_bias(flag: bool, has_bias: bool, where: str, log: Any) -> None:
    from atelier.core.errors import AtelierError

    if flag and not has_bias:
        raise AtelierError(
            f"--add-qkv-bias: {where} has no QKV biases; drop the flag (MindSpeed would fail "
            "on the missing bias too)"
        )
    if has_bias and not flag:
        log.warning(
            "%s has QKV biases but --add-qkv-bias was not given; they are converted anyway "
            "(MindSpeed would drop them)",
            where,
        )


def _run_mg2hf(args: argparse.Namespace) -> int:
    """MindSpeed's saver: --save-dir is the original HF folder; output in SAVE/mg2hf/."""
    from atelier.cli import llm_convert
    from atelier.core.errors import AtelierError
    from atelier.core.log import get_logger
    from atelier.llm.convert.meta import parse_dtype
    from atelier.llm.convert.mindspeed import check_model_type, hf_save_dtype
    from atelier.llm.convert.torch_dist import open_megatron_source

    save = Path(args.save_dir)
    if save.exists() and not save.is_dir():
        raise AtelierError(f"--save-dir {save} is a file; give the original Hugging Face folder")
    config_dir = args.hf_config_dir or (save if (save / "config.json").is_file() else None)
    source = open_megatron_source(args.load_dir)
    try:
        check_model_type(args.model_type_hf, source.meta.fam, str(args.load_dir))
        _check_qkv_bias(
            args.add_qkv_bias, source.meta.qkv_bias, str(args.load_dir), get_logger(__name__)
        )
    finally:
        source.close()
    out = copy.copy(args)
    out.via_dtype = parse_dtype(args.params_dtype or "fp16", "--params-dtype")
    out.out_dtype = hf_save_dtype(config_dir) or out.via_dtype
    out.save_dir = save / "mg2hf"
    out.hf_config_dir = config_dir
    # MindSpeed's save_pretrained replaces SAVE/mg2hf/; Atelier replaces it only when it
    # holds an earlier Atelier output (anything else there is refused, never touched)
    out.overwrite = True
    return llm_convert.run_convert_mg2hf(out)
