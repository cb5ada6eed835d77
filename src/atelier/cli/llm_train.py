"""`atelier llm train` and `atelier llm run`: Megatron-LM / MindSpeed-LLM flag spellings.

A user's `3_training.sh` line works with only the program name changed: model and schedule
flags map onto `TrainConfig` fields of the same (Megatron) names; shape flags are checked
against the loaded checkpoint; performance switches that mean nothing here are accepted and
named in one note line; an unknown flag is still an error. The guide's environment form
(RUN_TYPE, DATA_PATH, CKPT_LOAD_DIR, MBS, GBS, TP, ...) fills flags that are absent.

This module is the two verbs and the wiring (data and logging flags, flags -> request,
library errors -> flag names); each other flag group lives in its own module:
`llm_train_model` (shape, checked), `llm_train_schedule`, `llm_train_parallel` (with
`llm_train_dist`'s node flags), `llm_train_checkpoint`, `llm_train_lora` and
`llm_train_compat` (accepted with no effect).
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

from atelier.cli.llm_train_checkpoint import (
    add_checkpoint_flags,
    checkpoint_fields,
    checkpoint_request,
)
from atelier.cli.llm_train_compat import add_ignored_flags, ignored_given
from atelier.cli.llm_train_dist import node_from_args
from atelier.cli.llm_train_lora import add_lora_flags, lora_spec
from atelier.cli.llm_train_model import add_model_flags, model_shape
from atelier.cli.llm_train_parallel import add_parallel_flags, parallel_fields
from atelier.cli.llm_train_schedule import add_schedule_flags, schedule_fields
from atelier.core.flags import NON_NEGATIVE_INT, POSITIVE_INT, Int
from atelier.core.log import get_logger

log = get_logger(__name__)


def register(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "train",
        help="pretrain, fine-tune or LoRA-tune on Megatron datasets and checkpoints",
        description="Megatron-LM / MindSpeed-LLM flag spellings; environment variables of "
        "the platform's 3_training.sh fill absent flags (see docs/llm-train.md).",
    )
    add_train_flags(p)
    p.set_defaults(func=run_train)
    p = verbs.add_parser(
        "run",
        help="the whole job: preprocess, hf2mg, train, mg2hf (skipping steps already done)",
        description="The platform guide's job in one command, flags or its environment "
        "form: preprocess --raw-data-path if the dataset is missing, hf2mg --load if it is "
        "a Hugging Face folder, train, then write a Hugging Face folder.",
    )
    add_train_flags(p)
    g = p.add_argument_group("pipeline (atelier llm run)")
    g.add_argument(
        "--raw-data-path",
        default=None,
        help="raw corpus or instruction set to preprocess when --data-path does not exist "
        "[env ORIGINAL_TRAIN_DATA_PATH]",
    )
    g.add_argument(
        "--converted-load",
        type=Path,
        default=None,
        help="where hf2mg writes a Hugging Face --load (default: <save>/../<name>_mcore)",
    )
    p.set_defaults(func=run_pipeline)


def add_train_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--data-path",
        nargs="+",
        default=None,
        help="dataset prefix, or a weighted blend w1 p1 w2 p2 ... [env DATA_PATH, DATASET_PATH]",
    )
    g.add_argument("--split", default="969,30,1", help="train,valid,test weights")
    g.add_argument("--seq-length", type=Int(1, 1 << 24), default=None, help="[env SEQ_LEN]")
    g.add_argument("--is-instruction-dataset", action="store_true")
    g.add_argument("--prompt-type", default=None, help="recorded in the checkpoint args")
    g.add_argument("--no-pad-to-seq-lengths", action="store_true")
    g.add_argument("--variable-seq-lengths", action="store_true")
    g.add_argument("--reset-position-ids", action="store_true")
    g.add_argument("--reset-attention-mask", action="store_true")
    g.add_argument("--eod-mask-loss", action="store_true")
    g.add_argument("--tokenizer-type", default="PretrainedFromHF")
    g.add_argument(
        "--tokenizer-name-or-path", default=None, help="tokenizer folder [env TOKENIZER_PATH]"
    )
    g.add_argument("--tokenizer-model", default=None, help="same as --tokenizer-name-or-path")
    g.add_argument("--tokenizer-not-use-fast", action="store_true")
    g.add_argument("--data-cache-path", default=None, help="index caches (default: by the data)")

    add_model_flags(p)
    add_schedule_flags(p)
    add_parallel_flags(p)
    add_checkpoint_flags(p)

    g = p.add_argument_group("logging and evaluation")
    g.add_argument("--log-interval", type=POSITIVE_INT, default=100)
    g.add_argument("--tensorboard-dir", type=Path, default=None)
    g.add_argument(
        "--log-file", type=Path, default=None, help="metrics.jsonl: one JSON object per iteration"
    )
    g.add_argument("--eval-interval", type=POSITIVE_INT, default=1000)
    g.add_argument("--eval-iters", type=NON_NEGATIVE_INT, default=100, help="0: no evaluation")

    add_ignored_flags(p)
    add_lora_flags(p)


def run_train(args: argparse.Namespace) -> int:
    from atelier.llm.train.run import run_training

    with flag_names():
        report = run_training(train_request(args))
    print("\n".join(report.lines()))
    return 0


def run_pipeline(args: argparse.Namespace) -> int:
    from atelier.llm.train.whole_job import run_pipeline as pipeline

    with flag_names():
        request = train_request(args)
        report = pipeline(request, raw_data=args.raw_data_path, converted=args.converted_load)
    print("\n".join(report.lines()))
    return 0


@contextlib.contextmanager
def flag_names() -> Iterator[None]:
    """Library errors name TrainConfig / DataSpec fields (Megatron's argument names); the
    user typed flags, so `global_batch_size 3` becomes `--global-batch-size 3`."""
    from atelier.core.errors import AtelierError

    try:
        yield
    except AtelierError as e:
        flags = _flags_by_field()

        def flag(m: re.Match[str]) -> str:
            return flags.get(m.group(1), m.group(1))

        text = _FIELD.sub(flag, str(e))
        text = re.sub(r"^(load|save) ", r"--\1 ", text)
        raise AtelierError(text) from None


def _flags_by_field() -> dict[str, str]:
    """Field name -> the flag that sets it (from the parser itself, plus DataSpec's names)."""
    parser = argparse.ArgumentParser()
    add_train_flags(parser)
    out = {
        a.dest: a.option_strings[0]
        for a in parser._actions
        if a.option_strings and "_" in a.dest and not a.dest.startswith("ignored_")
    }
    out.update(
        is_instruction="--is-instruction-dataset", pad_to_seq_length="--no-pad-to-seq-lengths"
    )
    return out


_FIELD = re.compile(r"(?<![\w./{,-])(?<!'s )([a-z]+(?:_[a-z0-9]+)+)(?![\w./},-])")


def train_request(args: argparse.Namespace):
    """Flags (+ environment) -> the library's typed request. Errors name flags here."""
    from atelier.core.errors import AtelierError
    from atelier.llm.train.env import apply_env
    from atelier.llm.train.run import TrainRequest

    values = apply_env(
        {
            "data_path": args.data_path,
            "tokenizer_name_or_path": args.tokenizer_name_or_path or args.tokenizer_model,
            "load": args.load,
            "save": args.save,
            "micro_batch_size": args.micro_batch_size,
            "global_batch_size": args.global_batch_size,
            "tensor_model_parallel_size": args.tensor_model_parallel_size,
            "pipeline_model_parallel_size": args.pipeline_model_parallel_size,
            "lr": args.lr,
            "min_lr": args.min_lr,
            "seq_length": args.seq_length,
            "train_iters": args.train_iters,
            "train_samples": args.train_samples,
            "seed": args.seed,
            "model_name": None,
        }
    )
    lora = lora_spec(args, values["run_type"])  # RUN_TYPE=lora: SFT data + LoRA
    instruction = args.is_instruction_dataset or values["run_type"] in ("sft", "lora")
    node = node_from_args(args)
    ignored = ignored_given(args)
    if ignored:
        log.info("note: accepted with no effect here: %s", " ".join(ignored))
    if values["data_path"] is None:
        raise AtelierError("--data-path is required (or set DATA_PATH / DATASET_PATH)")
    if values["train_iters"] is None and values["train_samples"] is None:
        raise AtelierError(
            "give --train-iters or --train-samples (or TRAIN_ITERS, or SN and GBS [and EPOCH])"
        )
    data_path = values["data_path"]
    if isinstance(data_path, str):
        data_path = data_path.split()
    shape, agree = model_shape(args)
    return TrainRequest(
        data_path=list(data_path),
        split=args.split,
        seq_length=values["seq_length"],
        is_instruction=instruction,
        pad_to_seq_length=not (args.no_pad_to_seq_lengths or args.variable_seq_lengths),
        reset_position_ids=args.reset_position_ids,
        reset_attention_mask=args.reset_attention_mask,
        eod_mask_loss=args.eod_mask_loss,
        tokenizer_type=args.tokenizer_type,
        tokenizer=values["tokenizer_name_or_path"],
        tokenizer_use_fast=not args.tokenizer_not_use_fast,
        data_cache_path=args.data_cache_path,
        **checkpoint_request(args, values),
        shape=shape,
        agree=agree,
        vocab_size=args.vocab_size,
        node=node,
        config={
            **schedule_fields(args, values),
            **parallel_fields(args, values, node),
            "make_vocab_size_divisible_by": args.make_vocab_size_divisible_by,
            "finetune": args.finetune
            or values["run_type"] == "sft"
            or (values["run_type"] == "lora" and lora is not None and lora.load is None),
            "lora": lora,
            **checkpoint_fields(args),
            "log_interval": args.log_interval,
            "tensorboard_dir": args.tensorboard_dir,
            "log_file": args.log_file,
            "eval_interval": args.eval_interval,
            "eval_iters": args.eval_iters,
            "extra_args": {
                k: v
                for k, v in {
                    "prompt_type": args.prompt_type,
                    "model_name": values.get("model_name"),
                    "tokenizer_type": args.tokenizer_type,
                    "split": args.split,
                    "data_path": " ".join(data_path),
                    "is_instruction_dataset": instruction,
                }.items()
                if v is not None
            },
        },
    )
