"""`atelier llm ...` flags. Spellings follow MindSpeed-LLM's `preprocess_data.py`."""

from __future__ import annotations

import argparse
import sys

from atelier.core.log import get_logger

log = get_logger(__name__)

HANDLER_HELP = (
    "GeneralPretrainHandler | GeneralInstructionHandler | AlpacaStyleInstructionHandler | "
    "SharegptStyleInstructionHandler"
)


def register(suites: argparse._SubParsersAction) -> None:
    llm = suites.add_parser(
        "llm", help="LLM data (Megatron indexed datasets) and checkpoint conversion"
    )
    verbs = llm.add_subparsers(dest="verb", metavar="VERB", required=True)
    _preprocess(verbs)
    _merge(verbs)
    _inspect(verbs)
    _convert(verbs)


def _tokenizer_flags(p: argparse.ArgumentParser, required_type: bool = False) -> None:
    g = p.add_argument_group("tokenizer")
    g.add_argument(
        "--tokenizer-type",
        default=None,
        help="PretrainedFromHF (default) | GPT2BPETokenizer | BertWordPieceLowerCase | "
        "BertWordPieceCase  [env TOKENIZER_TYPE]",
    )
    g.add_argument(
        "--tokenizer-name-or-path",
        default=None,
        help="local Hugging Face tokenizer folder  [env TOKENIZER_PATH]",
    )
    g.add_argument(
        "--tokenizer-not-use-fast",
        action="store_true",
        help="use the slow (Python) Hugging Face tokenizer",
    )
    g.add_argument("--vocab-file", default=None, help="GPT-2 vocab.json or BERT vocab.txt")
    g.add_argument("--merge-file", default=None, help="GPT-2 merges.txt")


def _tokenizer_spec(args: argparse.Namespace):
    from atelier.llm.data.tokenizer import TokenizerSpec

    return TokenizerSpec(
        type=args.tokenizer_type or "PretrainedFromHF",
        name_or_path=args.tokenizer_name_or_path,
        vocab_file=args.vocab_file,
        merge_file=args.merge_file,
        use_fast=not args.tokenizer_not_use_fast,
    )


def _preprocess(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "preprocess",
        help="raw corpora / instruction sets -> Megatron indexed datasets",
        description="Tokenize text, Alpaca or ShareGPT data into Megatron .bin/.idx files. "
        "Flags are those of MindSpeed-LLM's preprocess_data.py; environment variables "
        "(RUN_TYPE, ORIGINAL_TRAIN_DATA_PATH, TOKENIZER_PATH, PROCESSED_DATA_PREFIX, "
        "TOKENIZER_TYPE, SEQ_LEN) fill flags that are absent.",
    )
    g = p.add_argument_group("input")
    g.add_argument(
        "--input",
        default=None,
        help="file, directory or glob of .jsonl .json .jsonl.gz .parquet .csv .txt "
        ".arrow  [env ORIGINAL_TRAIN_DATA_PATH]",
    )
    g.add_argument(
        "--json-keys",
        nargs="+",
        default=["text"],
        help="keys holding text (pretraining); default: text",
    )
    g.add_argument("--handler-name", default=None, help=HANDLER_HELP + "  [env RUN_TYPE]")
    g.add_argument(
        "--map-keys",
        default=None,
        help='JSON column mapping, e.g. \'{"prompt":"question","response":"answer"}\'',
    )
    g.add_argument(
        "--prompt-type",
        default=None,
        help="template: empty default alpaca llama2 llama3 qwen chatglm3 mistral baichuan2 ...",
    )
    g.add_argument(
        "--prompt-type-path",
        default=None,
        help="extra templates file (YAML/JSON) adding to the built-in ones",
    )
    g.add_argument(
        "--skip-bad-records",
        action="store_true",
        help="count malformed records and go on instead of stopping",
    )
    _tokenizer_flags(p)
    g = p.add_argument_group("processing")
    g.add_argument("--append-eod", action="store_true", help="append EOS after each document")
    g.add_argument(
        "--seq-length",
        type=int,
        default=None,
        help="skip samples longer than this (row length with --pack)  [env SEQ_LEN]",
    )
    g.add_argument(
        "--pack",
        action="store_true",
        help="pack instruction samples greedily into rows of exactly --seq-length",
    )
    g.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    g.add_argument(
        "--log-interval",
        type=int,
        default=1000,
        help="log progress every N documents when stderr is not a terminal",
    )
    g.add_argument("--shard", type=int, default=0, help="process slice I of --num-shards")
    g.add_argument("--num-shards", type=int, default=1, help="number of slices (default 1)")
    g = p.add_argument_group("output")
    g.add_argument(
        "--output-prefix", default=None, help="output path prefix  [env PROCESSED_DATA_PREFIX]"
    )
    g = p.add_argument_group("accepted for script compatibility (no effect)")
    g.add_argument("--streaming", action="store_true", help="input is always streamed")
    g.add_argument("--dataset-impl", choices=["mmap"], default="mmap", help="only mmap exists")
    g.add_argument("--cache-dir", default=None, help="no cache is needed")
    g.add_argument("--n-subs", type=int, default=None, help="use --workers instead")
    p.set_defaults(func=run_preprocess)


def run_preprocess(args: argparse.Namespace) -> int:
    from atelier.core.errors import AtelierError
    from atelier.llm.data.env import apply_env
    from atelier.llm.data.preprocess import PreprocessConfig, preprocess

    values = apply_env(
        {
            "input": args.input,
            "tokenizer_name_or_path": args.tokenizer_name_or_path,
            "output_prefix": args.output_prefix,
            "tokenizer_type": args.tokenizer_type,
            "seq_length": args.seq_length,
            "handler_name": args.handler_name,
            "prompt_type": args.prompt_type,
        }
    )
    for name, flag in (("input", "--input"), ("output_prefix", "--output-prefix")):
        if not values[name]:
            raise AtelierError(f"{flag} is required (or set its environment variable)")
    if args.n_subs:
        log.info("--n-subs is ignored: Atelier streams with --workers processes")
    args.tokenizer_type = values["tokenizer_type"]
    args.tokenizer_name_or_path = values["tokenizer_name_or_path"]
    cfg = PreprocessConfig(
        input=values["input"],
        output_prefix=values["output_prefix"],
        tokenizer=_tokenizer_spec(args),
        handler_name=values["handler_name"] or "GeneralPretrainHandler",
        json_keys=tuple(args.json_keys),
        append_eod=args.append_eod,
        seq_length=values["seq_length"],
        workers=args.workers,
        log_interval=args.log_interval,
        map_keys=args.map_keys,
        prompt_type=values["prompt_type"],
        prompt_type_path=args.prompt_type_path,
        pack=args.pack,
        shard=args.shard,
        num_shards=args.num_shards,
        skip_bad_records=args.skip_bad_records,
    )
    report = preprocess(cfg)
    print("\n".join(report.lines()), file=sys.stdout)
    return 0


def _merge(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "merge",
        help="join datasets (e.g. shards) into one",
        description="Merge preprocess outputs (key by key), dataset prefixes, or a directory "
        "of .bin/.idx pairs, in the order given, streaming.",
    )
    p.add_argument(
        "--input",
        nargs="+",
        required=True,
        help="output prefixes of preprocess, dataset prefixes, or one directory",
    )
    p.add_argument("--output-prefix", required=True, help="prefix of the merged dataset(s)")
    p.set_defaults(func=run_merge)


def run_merge(args: argparse.Namespace) -> int:
    from atelier.llm.data.merge import merge

    for out, n in merge(args.input, args.output_prefix).items():
        print(f"{out}: {n} sequences")
    return 0


def _inspect(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "inspect",
        help="counts, length histogram and a decoded sample of a dataset",
        description="PREFIX is the --output-prefix given to preprocess, or a dataset prefix.",
    )
    p.add_argument("prefix", metavar="PREFIX")
    p.add_argument("--sample", type=int, default=0, help="index of the sample to show")
    _tokenizer_flags(p)
    p.set_defaults(func=run_inspect)


def run_inspect(args: argparse.Namespace) -> int:
    from atelier.llm.data.inspect import inspect_dataset

    has_tokenizer = args.tokenizer_name_or_path or args.vocab_file
    inspect_dataset(args.prefix, args.sample, _tokenizer_spec(args) if has_tokenizer else None)
    return 0


# --- atelier llm convert: Hugging Face <-> Megatron checkpoints (issue 4) ---------------


def _convert(verbs: argparse._SubParsersAction) -> None:
    from pathlib import Path

    conv = verbs.add_parser(
        "convert",
        help="Hugging Face <-> Megatron checkpoints with TP/PP sharding",
        description="Streaming, lossless checkpoint conversion. MindSpeed-LLM / Megatron-LM "
        "spellings of the flags are accepted too.",
    )
    modes = conv.add_subparsers(dest="mode", metavar="MODE", required=True)

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
            type=int,
            default=None if required else 1,
            required=required,
            help="tensor parallel size T",
        )
        g.add_argument(
            "-P",
            "--pipeline-model-parallel-size",
            "--target-pipeline-parallel-size",
            dest="pp",
            type=int,
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
            "--make-vocab-size-divisible-by",
            type=int,
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
        type=int,
        default=None,
        help="vocabulary rows to keep (default: config.json vocab_size)",
    )
    p.set_defaults(func=run_convert_hf2mg)

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
        type=int,
        choices=[1],
        default=1,
        help=argparse.SUPPRESS,
    )
    p.set_defaults(func=run_convert_mg2hf)

    p = modes.add_parser("mg2mg", help="reshard a Megatron checkpoint (T, P, format)")
    common(p)
    sharding(p, required=True)
    p.set_defaults(func=run_convert_mg2mg)

    p = modes.add_parser("inspect", help="what a checkpoint folder is")
    p.add_argument("dir", type=Path, metavar="DIR")
    p.set_defaults(func=run_convert_inspect)


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
    for unit, factor in units.items():
        if t.endswith(unit) and t[: -len(unit)].strip().replace(".", "", 1).isdigit():
            return int(float(t[: -len(unit)]) * factor)
    if t.isdigit():
        return int(t)
    raise AtelierError(f"--max-shard-size {text!r}: use bytes or a size like 500MB, 5GB")


def run_convert_mg2hf(args: argparse.Namespace) -> int:
    from atelier.llm.convert import mg2hf

    files = mg2hf(
        args.load_dir,
        args.save_dir,
        hf_config_dir=args.hf_config_dir,
        tokenizer_model=args.tokenizer_model,
        max_shard_bytes=_size(args.max_shard_size),
        overwrite=args.overwrite,
    )
    print(f"{args.save_dir}: {', '.join(files)}")
    return 0


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
    )
    print(
        f"{args.save_dir}: {layout.fmt} T={layout.tp} P={layout.pp} layers "
        f"{','.join(map(str, layout.layer_list))} padded vocab {layout.padded_vocab}"
    )
    return 0


def run_convert_inspect(args: argparse.Namespace) -> int:
    from atelier.llm.convert import inspect_checkpoint

    for key, value in inspect_checkpoint(args.dir).items():
        print(f"{key}: {value}")
    return 0
