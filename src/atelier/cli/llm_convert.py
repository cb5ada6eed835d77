"""`atelier llm convert ...` flags. MindSpeed-LLM / Megatron spellings are accepted too."""

from __future__ import annotations

import argparse
import functools
import re
from collections.abc import Callable

from atelier.core.flags import Int

# Library errors name parameters (so the trainer can reuse the readers); users see flags.
PARAM_FLAGS = {
    "load_dir": "--load-dir",
    "save_dir": "--save-dir",
    "overwrite": "--overwrite",
    "tp": "--tensor-model-parallel-size",
    "pp": "--pipeline-model-parallel-size",
    "num_layer_list": "--num-layer-list",
    "make_vocab_size_divisible_by": "--make-vocab-size-divisible-by",
    "fmt": "--format",
    "mcore_norms": "--mcore-norms",
    "params_dtype": "--params-dtype",
    "tokenizer_model": "--tokenizer-model",
    "true_vocab_size": "--true-vocab-size",
    "hf_config_dir": "--hf-config-dir",
    "max_shard_bytes": "--max-shard-size",
    "num_layers_per_virtual_pipeline_stage": "--num-layers-per-virtual-pipeline-stage",
    "lora_load": "--lora-load",
    "lora_r": "--lora-r",
    "lora_alpha": "--lora-alpha",
    "lora_target_modules": "--lora-target-modules",
    "save_lora_to_hf": "--save-lora-to-hf",
}
_PARAM = re.compile(r"(?<![\w./-])(" + "|".join(PARAM_FLAGS) + r")(?![\w/-])")


def flags_for_params(message: str) -> str:
    """`tp 8 must divide ...` -> `--tensor-model-parallel-size 8 must divide ...`."""
    return _PARAM.sub(lambda m: PARAM_FLAGS[m.group(1)], message)


def _speaks_flags(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    @functools.wraps(run)
    def wrapped(args: argparse.Namespace) -> int:
        from atelier.core.errors import AtelierError

        try:
            return run(args)
        except AtelierError as e:
            raise AtelierError(flags_for_params(str(e))) from None

    return wrapped


def register(verbs: argparse._SubParsersAction) -> None:
    from pathlib import Path

    conv = verbs.add_parser(
        "convert",
        help="Hugging Face <-> Megatron checkpoints with TP/PP sharding",
        description="Streaming, lossless checkpoint conversion. MindSpeed-LLM / Megatron-LM "
        "spellings of the flags are accepted too.",
    )
    modes = conv.add_subparsers(dest="mode", metavar="MODE", required=False)
    verb_parsers: dict[str, argparse.ArgumentParser] = {}

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--load-dir", required=True, type=Path, help="folder to read")
        p.add_argument(
            "--save-dir",
            required=True,
            type=Path,
            help="folder to write (written to a temporary folder, then renamed)",
        )
        p.add_argument("--overwrite", action="store_true", help="replace a non-empty --save-dir")
        g = p.add_argument_group("accepted for script compatibility")
        g.add_argument("--model-type", choices=["GPT"], default="GPT", help="only GPT")
        g.add_argument("--loader", default=None, help="e.g. llama2_hf, mg_mcore (inferred)")
        g.add_argument("--saver", default=None, help="e.g. mg_mcore, megatron (sets --format)")
        g.add_argument(
            "--load-model-type",
            "--save-model-type",
            dest="model_kind",
            default=None,
            help="hf | mg, inferred from the mode",
        )
        g.add_argument("--megatron-path", default=None, help="not needed")

    def sharding(p: argparse.ArgumentParser, required: bool) -> None:
        g = p.add_argument_group("sharding")
        g.add_argument(
            "-T",
            "--tensor-model-parallel-size",
            "--target-tensor-parallel-size",
            dest="tp",
            type=Int(1, 1024),
            default=None if required else 1,
            required=required,
            help="tensor parallel size T",
        )
        g.add_argument(
            "-P",
            "--pipeline-model-parallel-size",
            "--target-pipeline-parallel-size",
            dest="pp",
            type=Int(1, 1024),
            default=None if required else 1,
            required=required,
            help="pipeline parallel size P",
        )
        g.add_argument(
            "--num-layer-list",
            default=None,
            help="layers per pipeline stage, e.g. 8,8,8,8 (uneven allowed)",
        )
        g.add_argument(
            "--num-layers-per-virtual-pipeline-stage",
            type=Int(1, 1 << 20),
            default=None,
            help="virtual pipeline (interleaved) chunks of this many layers: rank files "
            "hold model0..model{V-1}",
        )
        g.add_argument(
            "--make-vocab-size-divisible-by",
            type=Int(1, 1 << 20),
            default=None,
            help="pad the vocabulary to a multiple of this times T (default 128)",
        )
        g.add_argument(
            "--format",
            choices=["legacy", "mcore"],
            default=None,
            help="Megatron parameter names (default mcore)",
        )
        g.add_argument("--use-mcore-models", action="store_true", help="same as --format mcore")
        g.add_argument(
            "--mcore-norms",
            choices=["te", "local"],
            default=None,
            help="mcore norm names: te (fused into linear_qkv/linear_fc1) or local "
            "(input_layernorm/pre_mlp_layernorm, the default)",
        )
        g.add_argument(
            "--params-dtype",
            choices=["bf16", "fp16", "fp32"],
            default=None,
            help="cast weights (default: keep the stored dtype)",
        )

    p = modes.add_parser("hf2mg", help="Hugging Face folder -> Megatron checkpoint")
    common(p)
    sharding(p, required=False)
    p.add_argument(
        "--tokenizer-model",
        type=Path,
        default=None,
        help="tokenizer file or folder to carry along (default: the --load-dir's)",
    )
    p.add_argument(
        "--true-vocab-size",
        type=Int(1, 1 << 31),
        default=None,
        help="vocabulary rows to keep (default: config.json vocab_size)",
    )
    p.set_defaults(func=run_convert_hf2mg)
    verb_parsers["hf2mg"] = p

    p = modes.add_parser("mg2hf", help="Megatron checkpoint -> complete Hugging Face folder")
    common(p)
    p.add_argument(
        "--hf-config-dir",
        type=Path,
        default=None,
        help="the original Hugging Face folder (config and tokenizer files)",
    )
    p.add_argument(
        "--tokenizer-model", type=Path, default=None, help="tokenizer file or folder to include"
    )
    p.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard, e.g. 2GB")
    p.add_argument(
        "--target-tensor-parallel-size",
        "--target-pipeline-parallel-size",
        dest="_ignored",
        type=Int(1, 1),
        choices=[1],
        default=1,
        help=argparse.SUPPRESS,
    )
    _lora_flags(p)
    p.set_defaults(func=run_convert_mg2hf)
    verb_parsers["mg2hf"] = p

    p = modes.add_parser("mg2mg", help="reshard a Megatron checkpoint (T, P, format)")
    common(p)
    sharding(p, required=True)
    p.set_defaults(func=run_convert_mg2mg)
    verb_parsers["mg2mg"] = p

    p = modes.add_parser("inspect", help="what a checkpoint folder is")
    p.add_argument("dir", type=Path, metavar="DIR")
    p.set_defaults(func=run_convert_inspect)

    # MindSpeed-LLM's convert_ckpt.py form: no MODE word (cli/llm_convert_mindspeed.py)
    from atelier.cli.llm_convert_mindspeed import add_direction_less_form

    add_direction_less_form(conv, verb_parsers)


def _lora_flags(p: argparse.ArgumentParser) -> None:
    """mg2hf's LoRA flags, spelled as MindSpeed-LLM's convert_ckpt spells them."""
    from pathlib import Path

    from atelier.core.flags import POSITIVE_FLOAT

    g = p.add_argument_group("LoRA (merge adapters, or export them for PEFT)")
    g.add_argument(
        "--lora-load",
        type=Path,
        default=None,
        help="LoRA checkpoint saved apart from the base (--lora-ckpt-filter); --load-dir is "
        "then the base (Megatron, or the Hugging Face folder the run loaded). Adapters saved "
        "with the base are read from --load-dir itself",
    )
    g.add_argument(
        "--lora-r", type=Int(1, 1 << 16), default=None, help="rank (default: the run's, else 16)"
    )
    g.add_argument(
        "--lora-alpha",
        type=POSITIVE_FLOAT,
        default=None,
        help="alpha (default: the run's, else 32)",
    )
    g.add_argument(
        "--lora-target-modules",
        nargs="+",
        default=None,
        metavar="MODULE",
        help="linear_qkv linear_proj linear_fc1 linear_fc2, any subset (default: the run's, "
        "else the linears the adapters sit on)",
    )
    g.add_argument(
        "--save-lora-to-hf",
        action="store_true",
        help="write a PEFT adapter folder (adapter_config.json, adapter_model.safetensors) "
        "instead of the merged model",
    )


def _lora_options(args: argparse.Namespace):
    from atelier.llm.convert import LoraOptions

    def flag(name: str):  # a parser without the LoRA flags (another spelling) gives None
        return getattr(args, name, None)

    opts = LoraOptions(
        load=flag("lora_load"),
        r=flag("lora_r"),
        alpha=flag("lora_alpha"),
        target_modules=tuple(flag("lora_target_modules") or ()),
        save_to_hf=bool(flag("save_lora_to_hf")),
    )
    return opts if opts.given() else None


def _layer_list(text: str | None) -> list[int] | None:
    from atelier.core.errors import AtelierError

    if not text:
        return None
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise AtelierError(f"--num-layer-list {text!r}: expected integers like 8,8,8,8") from None


def _target_format(args: argparse.Namespace) -> str | None:
    if args.format:
        return args.format
    if args.use_mcore_models or (args.saver and "mcore" in args.saver):
        return "mcore"
    if args.saver == "megatron":
        return "legacy"
    return None


def _dtype(name: str | None):
    from atelier.llm.convert.meta import parse_dtype

    return parse_dtype(name, "--params-dtype") if name else None


@_speaks_flags
def run_convert_hf2mg(args: argparse.Namespace) -> int:
    from atelier.llm.convert import Hf2MgOptions, hf2mg

    layout = hf2mg(
        Hf2MgOptions(
            load_dir=args.load_dir,
            save_dir=args.save_dir,
            tp=args.tp,
            pp=args.pp,
            num_layer_list=_layer_list(args.num_layer_list),
            make_vocab_size_divisible_by=args.make_vocab_size_divisible_by or 128,
            fmt=_target_format(args) or "mcore",
            mcore_norms=args.mcore_norms or "local",
            params_dtype=_dtype(args.params_dtype),
            tokenizer_model=args.tokenizer_model,
            true_vocab_size=args.true_vocab_size,
            overwrite=args.overwrite,
            layers_per_virtual_stage=args.num_layers_per_virtual_pipeline_stage,
        )
    )
    print(
        f"{args.save_dir}: {layout.fmt} T={layout.tp} P={layout.pp} layers "
        f"{','.join(map(str, layout.layer_list))} padded vocab {layout.padded_vocab}"
    )
    return 0


def _size(text: str) -> int:
    from atelier.core.errors import AtelierError

    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    t = text.strip().upper()
    size = None
    for unit, factor in units.items():
        if t.endswith(unit) and t[: -len(unit)].strip().replace(".", "", 1).isdigit():
            size = int(float(t[: -len(unit)]) * factor)
            break
    if size is None and t.isdigit():
        size = int(t)
    if size is None:
        raise AtelierError(f"--max-shard-size {text!r}: use bytes or a size like 500MB, 5GB")
    if size < 1:
        raise AtelierError(f"--max-shard-size {text!r}: must be at least 1 byte, e.g. 5GB")
    return size


@_speaks_flags
def run_convert_mg2hf(args: argparse.Namespace) -> int:
    from atelier.llm.convert import mg2hf

    files = mg2hf(
        args.load_dir,
        args.save_dir,
        hf_config_dir=args.hf_config_dir,
        tokenizer_model=args.tokenizer_model,
        max_shard_bytes=_size(args.max_shard_size),
        overwrite=args.overwrite,
        # set by the MindSpeed form (llm_convert_mindspeed.py): MindSpeed's dtype chain
        params_dtype=getattr(args, "out_dtype", None),
        via_dtype=getattr(args, "via_dtype", None),
        lora=_lora_options(args),
    )
    print(f"{args.save_dir}: {', '.join(files)}")
    return 0


@_speaks_flags
def run_convert_mg2mg(args: argparse.Namespace) -> int:
    from atelier.llm.convert import mg2mg

    layout = mg2mg(
        args.load_dir,
        args.save_dir,
        tp=args.tp,
        pp=args.pp,
        num_layer_list=_layer_list(args.num_layer_list),
        fmt=_target_format(args),
        mcore_norms=args.mcore_norms,
        make_vocab_size_divisible_by=args.make_vocab_size_divisible_by,
        params_dtype=_dtype(args.params_dtype),
        overwrite=args.overwrite,
        layers_per_virtual_stage=args.num_layers_per_virtual_pipeline_stage,
    )
    print(
        f"{args.save_dir}: {layout.fmt} T={layout.tp} P={layout.pp} layers "
        f"{','.join(map(str, layout.layer_list))} padded vocab {layout.padded_vocab}"
    )
    return 0


@_speaks_flags
def run_convert_inspect(args: argparse.Namespace) -> int:
    from atelier.llm.convert import inspect_checkpoint

    for key, value in inspect_checkpoint(args.dir).items():
        print(f"{key}: {value}")
    return 0
