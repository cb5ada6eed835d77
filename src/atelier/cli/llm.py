"""`atelier llm ...` flags. Spellings follow MindSpeed-LLM's `preprocess_data.py`."""

from __future__ import annotations

import argparse
import sys

from atelier.cli import llm_convert, llm_preprocess_compat, llm_train
from atelier.core.flags import NON_NEGATIVE_INT, POSITIVE_INT, Int
from atelier.core.log import get_logger

log = get_logger(__name__)

# tokenizer_backends.BACKENDS (not imported here: it needs numpy; a test keeps them equal)
TOKENIZER_BACKENDS = ("auto", "hf", "fastokens", "tiktoken")

HANDLER_HELP = (
    "GeneralPretrainHandler | GeneralInstructionHandler | AlpacaStyleInstructionHandler | "
    "SharegptStyleInstructionHandler | AlpacaStylePairwiseHandler | SharegptStylePairwiseHandler "
    "| PPOAlpacaStyleInstructionHandler | AlpacaStyleProcessRewardHandler"
)


def register(suites: argparse._SubParsersAction) -> None:
    llm = suites.add_parser(
        "llm", help="LLM data (Megatron indexed datasets) and checkpoint conversion"
    )
    verbs = llm.add_subparsers(dest="verb", metavar="VERB", required=True)
    _preprocess(verbs)
    _merge(verbs)
    _inspect(verbs)
    llm_convert.register(verbs)
    llm_train.register(verbs)


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
    g.add_argument(
        "--tokenizer-backend",
        choices=TOKENIZER_BACKENDS,
        default="auto",
        help="encoder: auto = the first of fastokens, tiktoken that is installed, accepts the "
        "tokenizer and gives the same ids as hf (checked at load and on a sample during the "
        "run), else hf (default auto)",
    )
    g.add_argument(
        "--verify-tokenizer",
        choices=["sample", "all"],
        default="sample",
        help="re-encode 1 document in 256 (sample) or every document (all) with hf and "
        "fall back to hf on any difference (default sample)",
    )


def _tokenizer_spec(args: argparse.Namespace):
    from atelier.llm.data.tokenizer import TokenizerSpec

    return TokenizerSpec(
        type=args.tokenizer_type or "PretrainedFromHF",
        name_or_path=args.tokenizer_name_or_path,
        vocab_file=args.vocab_file,
        merge_file=args.merge_file,
        use_fast=not args.tokenizer_not_use_fast,
        backend=getattr(args, "tokenizer_backend", "auto"),
        verify=getattr(args, "verify_tokenizer", "sample"),
    )


def _preprocess(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "preprocess",
        help="raw corpora / instruction sets -> Megatron indexed datasets",
        description="Tokenize text, Alpaca or ShareGPT data into Megatron .bin/.idx files. "
        "Flags are those of MindSpeed-LLM's preprocess_data.py; environment variables "
        "(RUN_TYPE, ORIGINAL_TRAIN_DATA_PATH, TOKENIZER_PATH, PROCESSED_DATA_PREFIX, "
        "TOKENIZER_TYPE, SEQ_LEN, PROMPT_TYPE, TEMPLATE_SOURCE) fill flags that are absent.",
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
        help="template (MindSpeed-LLM's names): qwen chatml llama2 llama3 mistral mixtral "
        "deepseek3 chatglm3 baichuan2 alpaca default empty ... (LLaMA-Factory's names with "
        "--template-source llamafactory)",
    )
    g.add_argument(
        "--prompt-type-path",
        default=None,
        help="extra templates file adding to the built-in ones: MindSpeed-LLM's "
        "templates.json as is, or Atelier's YAML/JSON",
    )
    g.add_argument(
        "--strict",
        action="store_true",
        help="a special token the template needs but the tokenizer lacks is an error "
        "(default: one warning line, and MindSpeed's behaviour)",
    )
    g.add_argument(
        "--template-quirks",
        choices=["mindspeed", "fixed"],
        default="mindspeed",
        help="mindspeed: ids identical to MindSpeed-LLM (default); fixed: empty tools open no "
        "system block, unparsable tools/tool calls are record errors (docs/llm.md)",
    )
    g.add_argument(
        "--template-source",
        choices=["mindspeed", "llamafactory"],
        default=None,
        help="template set for --prompt-type: mindspeed (default; MindSpeed-LLM's) or "
        "llamafactory (LLaMA-Factory's current set and SFT rules; --seq-length is its "
        "cutoff_len: samples are truncated as it does)  [env TEMPLATE_SOURCE]",
    )
    g.add_argument(
        "--train-on-prompt",
        action="store_true",
        help="llamafactory source: train on prompts too (LLaMA-Factory's train_on_prompt)",
    )
    g.add_argument(
        "--mask-history",
        action="store_true",
        help="llamafactory source: train on the last turn only (LLaMA-Factory's mask_history)",
    )
    g.add_argument(
        "--tool-date",
        default=None,
        metavar="'DD Mon YYYY'",
        help="llamafactory source: the 'Today Date' of Llama-3's tool prompt (default today, "
        "as LLaMA-Factory writes it)",
    )
    g.add_argument(
        "--default-system",
        default=None,
        metavar="TEXT",
        help="llamafactory source: replace the template's default system message "
        "(LLaMA-Factory's default_system)",
    )
    g.add_argument(
        "--enable-thinking",
        choices=["true", "false"],
        default="true",
        help="llamafactory source, reasoning templates (qwen3, deepseekr1): false removes "
        "thoughts and puts an empty one in the prompt, untrained (LLaMA-Factory's "
        "enable_thinking; default true)",
    )
    g.add_argument(
        "--skip-bad-records",
        action="store_true",
        help="count malformed records and go on instead of stopping",
    )
    _tokenizer_flags(p)
    g = p.add_argument_group("processing")
    g.add_argument(
        "--append-eod",
        action="store_true",
        help="append EOS after each document; for instruction data a trained EOS after each "
        "sample (the template's EOS, e.g. <|im_end|> for qwen, as MindSpeed)",
    )
    g.add_argument(
        "--seq-length",
        type=Int(1, 1 << 24),
        default=None,
        help="drop samples of this many tokens or more, leaving an empty document as MindSpeed "
        "does (row length with --pack)  [env SEQ_LEN]",
    )
    g.add_argument(
        "--no-empty-documents",
        action="store_true",
        help="a sample dropped by --seq-length leaves no empty document behind",
    )
    g.add_argument(
        "--pack",
        action="store_true",
        help="pack instruction samples into rows of exactly --seq-length, in MindSpeed's "
        "greedy order (samples fill seq_length - 1 tokens, then padding)",
    )
    g.add_argument(
        "--neat-pack",
        action="store_true",
        help="with --pack: attention_mask numbers the samples of a row 1, 2, ... (0 on padding) "
        "and samples longer than a row are cut, not dropped",
    )
    g.add_argument(
        "--mask-padding",
        action="store_true",
        help="with --pack: attention_mask 0 on padding (MindSpeed writes 1)",
    )
    g.add_argument(
        "--token-dtype",
        choices=["int32", "auto"],
        default="int32",
        help="pretraining ids: int32 as MindSpeed (default), or auto = uint16 under 65,500 "
        "ids as Megatron-LM's tools/preprocess_data.py",
    )
    g.add_argument(
        "--placeholder-token",
        default="ки",
        help="AlpacaStyleProcessRewardHandler: the step marker labelled with a reward (ки)",
    )
    g.add_argument(
        "--reward-tokens",
        nargs="+",
        default=[],
        help="AlpacaStyleProcessRewardHandler: the reward labels, e.g. + -",
    )
    g.add_argument("--workers", type=Int(1, 1024), default=1, help="worker processes (default 1)")
    g.add_argument(
        "--log-interval",
        type=POSITIVE_INT,
        default=1000,
        help="log progress every N documents (at most once a second) when stderr is not a terminal",
    )
    g.add_argument(
        "--shard", type=NON_NEGATIVE_INT, default=0, help="process slice I of --num-shards"
    )
    g.add_argument(
        "--num-shards", type=Int(1, 1 << 20), default=1, help="number of slices (default 1)"
    )
    g.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run on Ray, one worker per cluster CPU: no ADDRESS starts a local Ray, 'auto' "
        "joins the running cluster; input and output folder must be shared by the nodes "
        "(same bytes as one run)",
    )
    g.add_argument(
        "--ray-shards",
        type=Int(1, 1 << 20),
        default=None,
        help="number of input ranges for --ray (default 4 per cluster CPU)",
    )
    g = p.add_argument_group("output")
    g.add_argument(
        "--output-prefix", default=None, help="output path prefix  [env PROCESSED_DATA_PREFIX]"
    )
    g = p.add_argument_group("accepted for script compatibility (no effect)")
    g.add_argument("--streaming", action="store_true", help="input is always streamed")
    g.add_argument(
        "--dataset-impl",
        choices=["mmap", "lazy", "cached"],
        default="mmap",
        help="mmap is written whatever is given (as MindSpeed's builder does)",
    )
    g.add_argument("--cache-dir", default=None, help="no cache is needed")
    g.add_argument("--n-subs", type=Int(1, 1024), default=None, help="use --workers instead")
    llm_preprocess_compat.add_flags(p)
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
            "template_source": args.template_source,
        }
    )
    for name, flag in (("input", "--input"), ("output_prefix", "--output-prefix")):
        if not values[name]:
            raise AtelierError(f"{flag} is required (or set its environment variable)")
    if args.n_subs:
        log.info("--n-subs is ignored: Atelier streams with --workers processes")
    llm_preprocess_compat.check_flags(args)
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
        neat_pack=args.neat_pack,
        mask_padding=args.mask_padding,
        empty_documents=not args.no_empty_documents,
        token_dtype=args.token_dtype,
        placeholder_token=args.placeholder_token,
        reward_tokens=tuple(args.reward_tokens),
        shard=args.shard,
        num_shards=args.num_shards,
        skip_bad_records=args.skip_bad_records,
        template_source=values["template_source"] or "mindspeed",
        train_on_prompt=args.train_on_prompt,
        mask_history=args.mask_history,
        tool_date=args.tool_date,
        default_system=args.default_system,
        enable_thinking=args.enable_thinking == "true",
        strict=args.strict,
        template_quirks=args.template_quirks,
    )
    if args.ray is not None:
        from atelier.llm.data.ray_run import preprocess_on_ray

        report = preprocess_on_ray(cfg, address=args.ray, num_shards=args.ray_shards)
    else:
        if args.ray_shards is not None:
            raise AtelierError("--ray-shards goes with --ray")
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
    p.add_argument("--sample", type=NON_NEGATIVE_INT, default=0, help="index of the sample to show")
    _tokenizer_flags(p)
    p.set_defaults(func=run_inspect)


def run_inspect(args: argparse.Namespace) -> int:
    from atelier.llm.data.inspect import inspect_dataset

    has_tokenizer = args.tokenizer_name_or_path or args.vocab_file
    inspect_dataset(args.prefix, args.sample, _tokenizer_spec(args) if has_tokenizer else None)
    return 0


# --- atelier llm convert: Hugging Face <-> Megatron checkpoints (issue 4) ---------------
