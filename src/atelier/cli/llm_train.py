"""`atelier llm train` and `atelier llm run`: Megatron-LM / MindSpeed-LLM flag spellings.

A user's `3_training.sh` line works with only the program name changed: model and schedule
flags map onto `TrainConfig` fields of the same (Megatron) names; shape flags are checked
against the loaded checkpoint; performance switches that mean nothing here are accepted and
named in one note line; an unknown flag is still an error. The guide's environment form
(RUN_TYPE, DATA_PATH, CKPT_LOAD_DIR, MBS, GBS, TP, ...) fills flags that are absent.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from atelier.cli.llm_train_dist import add_node_flags, dist_timeout, node_from_args
from atelier.cli.llm_train_lora import add_lora_flags, lora_spec
from atelier.core.flags import (
    FRACTION,
    NON_NEGATIVE_FLOAT,
    NON_NEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SEED,
    Float,
    Int,
)
from atelier.core.log import get_logger

log = get_logger(__name__)

# Megatron/MindSpeed switches with no meaning for this trainer (fusions, overlap, kernels,
# memory tricks of Ascend/CUDA builds): accepted so scripts parse, named in one note line.
IGNORED_SWITCHES = (
    "--use-fused-rmsnorm",
    "--use-fused-swiglu",
    "--use-fused-rotary-pos-emb",
    "--use-distributed-optimizer",
    "--overlap-grad-reduce",
    "--overlap-param-gather",
    "--no-masked-softmax-fusion",
    "--attention-softmax-in-fp32",
    "--no-gradient-accumulation-fusion",
    "--gemm-gradient-accumulation-fusion",
    "--no-shared-storage",
    "--reuse-fp32-param",
    "--swap-attention",
    "--swap-optimizer",
    "--manual-gc",
    "--use-ascend-coc",
    "--coc-fused-kernel",
    "--use-ascend-mc2",
    "--no-rope-fusion",
    "--no-bias-swiglu-fusion",
    "--no-bias-dropout-fusion",
    "--disable-gloo-group",
    "--log-throughput",
    "--use-cpu-initialization",
    "--no-save-optim",
    "--no-save-rng",
    "--only-convert-last-checkpoint",
    "--enable-hf2mg-convert",
    "--exit-on-missing-checkpoint",
    "--use-mcore-models",
    "--recompute-activation-function",
)
# ... and ones that take a value.
IGNORED_VALUES: dict[str, Any] = {
    "--transformer-impl": str,
    "--distributed-backend": str,
    "--manual-gc-interval": NON_NEGATIVE_INT,
    "--num-workers": NON_NEGATIVE_INT,
    "--init-method-std": POSITIVE_FLOAT,
    "--model-type-hf": str,
    "--handler-name": str,
    "--stage": str,
    "--swap-optimizer-times": NON_NEGATIVE_INT,
}
# Flags describing the architecture: they must say what the checkpoint is (checked).
ARCH_CHOICES = {
    "--position-embedding-type": ["rope"],
    "--normalization": ["RMSNorm"],
    "--attention-mask-type": ["causal"],
}
ARCH_SWITCHES = (
    "--swiglu",
    "--disable-bias-linear",
    "--use-rotary-position-embeddings",
    "--group-query-attention",
)


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

    g = p.add_argument_group("model shape (read from the checkpoint; given ones must agree)")
    for flag in (
        "--num-layers",
        "--hidden-size",
        "--ffn-hidden-size",
        "--num-attention-heads",
        "--num-query-groups",
        "--max-position-embeddings",
        "--kv-channels",
        "--padded-vocab-size",
        "--vocab-size",
    ):
        g.add_argument(flag, type=Int(1, 1 << 31), default=None)
    g.add_argument("--rotary-base", type=POSITIVE_FLOAT, default=None)
    g.add_argument("--norm-epsilon", type=POSITIVE_FLOAT, default=None)
    g.add_argument("--untie-embeddings-and-output-weights", action="store_true")
    g.add_argument("--add-qkv-bias", action="store_true")
    g.add_argument("--qk-layernorm", action="store_true")
    g.add_argument(
        "--make-vocab-size-divisible-by", type=Int(1, 1 << 20), default=128, help="default 128"
    )
    for flag, choices in ARCH_CHOICES.items():
        g.add_argument(flag, choices=choices, default=None, help="the only kind supported")
    for flag in ARCH_SWITCHES:
        g.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    g.add_argument("--hidden-dropout", type=Float(0, 0), default=0.0, help="only 0 (no dropout)")
    g.add_argument("--attention-dropout", type=Float(0, 0), default=0.0, help="only 0")

    g = p.add_argument_group("schedule")
    g.add_argument("--micro-batch-size", type=POSITIVE_INT, default=None, help="[env MBS]")
    g.add_argument("--global-batch-size", type=POSITIVE_INT, default=None, help="[env GBS]")
    g.add_argument("--train-iters", type=POSITIVE_INT, default=None, help="[env TRAIN_ITERS]")
    g.add_argument("--train-samples", type=POSITIVE_INT, default=None)
    g.add_argument("--lr", type=POSITIVE_FLOAT, default=None, help="[env LR]")
    g.add_argument("--min-lr", type=NON_NEGATIVE_FLOAT, default=None, help="[env MIN_LR]")
    g.add_argument(
        "--lr-decay-style",
        choices=["constant", "linear", "cosine", "inverse-square-root", "WSD"],
        default="linear",
    )
    g.add_argument("--lr-warmup-iters", type=NON_NEGATIVE_INT, default=0)
    g.add_argument("--lr-warmup-fraction", type=FRACTION, default=None)
    g.add_argument("--lr-warmup-samples", type=NON_NEGATIVE_INT, default=0)
    g.add_argument("--lr-warmup-init", type=NON_NEGATIVE_FLOAT, default=0.0)
    g.add_argument("--lr-decay-iters", type=POSITIVE_INT, default=None)
    g.add_argument("--lr-decay-samples", type=POSITIVE_INT, default=None)
    g.add_argument(
        "--lr-wsd-decay-style",
        choices=["linear", "cosine", "exponential", "minus_sqrt"],
        default="exponential",
    )
    g.add_argument("--lr-wsd-decay-iters", type=POSITIVE_INT, default=None)
    g.add_argument("--lr-wsd-decay-samples", type=POSITIVE_INT, default=None)
    g.add_argument("--weight-decay", type=NON_NEGATIVE_FLOAT, default=0.01)
    g.add_argument("--start-weight-decay", type=NON_NEGATIVE_FLOAT, default=None)
    g.add_argument("--end-weight-decay", type=NON_NEGATIVE_FLOAT, default=None)
    g.add_argument(
        "--weight-decay-incr-style", choices=["constant", "linear", "cosine"], default="constant"
    )
    g.add_argument("--clip-grad", type=NON_NEGATIVE_FLOAT, default=1.0, help="0: no clipping")
    g.add_argument("--adam-beta1", type=Float(0, 1, hi_open=True), default=0.9)
    g.add_argument("--adam-beta2", type=Float(0, 1, hi_open=True), default=0.999)
    g.add_argument("--adam-eps", type=POSITIVE_FLOAT, default=1e-8)
    g.add_argument("--seed", type=SEED, default=None, help="default 1234 [env SEED]")
    g.add_argument("--bf16", action="store_true")
    g.add_argument("--fp16", action="store_true")
    g.add_argument("--initial-loss-scale", type=POSITIVE_FLOAT, default=2.0**32)
    g.add_argument("--min-loss-scale", type=POSITIVE_FLOAT, default=1.0)
    g.add_argument("--loss-scale-window", type=POSITIVE_INT, default=1000)
    g.add_argument("--hysteresis", type=POSITIVE_INT, default=2)

    g = p.add_argument_group("parallelism and execution")
    g.add_argument("--tensor-model-parallel-size", type=Int(1, 1024), default=None, help="[env TP]")
    g.add_argument(
        "--pipeline-model-parallel-size",
        type=Int(1, 1024),
        default=None,
        help="pipeline stages (1F1B over torch.distributed.pipelining) [env PP]",
    )
    g.add_argument(
        "--num-layer-list",
        default=None,
        help="layers per pipeline stage, e.g. 1,2 (uneven allowed; as hf2mg's)",
    )
    g.add_argument(
        "--num-layers-per-virtual-pipeline-stage",
        type=POSITIVE_INT,
        default=None,
        help="interleaved pipeline schedule: not supported (refused)",
    )
    g.add_argument("--pipeline-schedule", choices=["1f1b", "gpipe"], default="1f1b")
    g.add_argument("--sequence-parallel", action="store_true")
    g.add_argument(
        "--nproc-per-node",
        "--nproc_per_node",
        type=Int(1, 1024),
        default=None,
        help="spawn this many local processes (not needed under torchrun) "
        "[env NPROC_PER_NODE, NPUS_PER_NODE, GPUS_PER_NODE]",
    )
    g.add_argument("--distributed-timeout-minutes", type=Int(1, 1440), default=10)
    add_node_flags(g)
    g.add_argument("--device", default="auto", help="auto (cuda > npu > cpu) | cpu | cuda | npu")
    g.add_argument("--recompute-granularity", choices=["full", "selective"], default=None)
    g.add_argument("--recompute-method", choices=["uniform", "block"], default="uniform")
    g.add_argument("--recompute-num-layers", type=POSITIVE_INT, default=None)
    g.add_argument("--use-flash-attn", action="store_true", help="flash attention kernels")
    g.add_argument("--compile", action="store_true", help="torch.compile each layer")
    g.add_argument(
        "--local-rank", "--local_rank", type=NON_NEGATIVE_INT, default=None, help=argparse.SUPPRESS
    )  # torch.distributed.launch passes it; LOCAL_RANK wins

    g = p.add_argument_group("checkpoints")
    g.add_argument(
        "--load",
        type=Path,
        default=None,
        help="Megatron checkpoint (hf2mg output, an earlier run) or Hugging Face folder "
        "[env CKPT_LOAD_DIR, MODEL_PATH, CONVERT_MODEL_PATH]",
    )
    g.add_argument("--ckpt-step", type=NON_NEGATIVE_INT, default=None, help="load this iteration")
    g.add_argument("--finetune", action="store_true", help="weights only, start at iteration 0")
    g.add_argument("--no-load-optim", action="store_true")
    g.add_argument("--no-load-rng", action="store_true")
    g.add_argument(
        "--save",
        type=Path,
        default=None,
        help="checkpoint folder; a checkpoint of this run there is resumed "
        "[env CKPT_SAVE_PATH, MODEL_SAVE_PATH, OUTPUT_SAVE_DIR]",
    )
    g.add_argument("--save-interval", type=POSITIVE_INT, default=None)
    g.add_argument(
        "--save-total-limit", type=POSITIVE_INT, default=None, help="keep the last K saves"
    )
    g.add_argument("--exit-interval", type=POSITIVE_INT, default=None)
    g.add_argument("--exit-duration-in-mins", type=POSITIVE_FLOAT, default=None)
    g.add_argument("--ckpt-format", choices=["torch"], default="torch", help="only torch")
    g.add_argument(
        "--convert-mg2hf",
        type=Path,
        default=None,
        help="after training, write a Hugging Face folder here [env CONVERT_MG2HF=True: "
        "<save>/mg2hf_iteration<N>]",
    )
    g.add_argument(
        "--enable-mg2hf-convert",
        action="store_true",
        help="MindSpeed's spelling: HF folder in <hf-save-dir or save>/mg2hf_iteration<N>",
    )
    g.add_argument("--hf-save-dir", type=Path, default=None)
    g.add_argument(
        "--hf-cfg-dir",
        type=Path,
        default=None,
        help="original Hugging Face folder (config, tokenizer) for the export",
    )

    g = p.add_argument_group("logging and evaluation")
    g.add_argument("--log-interval", type=POSITIVE_INT, default=100)
    g.add_argument("--tensorboard-dir", type=Path, default=None)
    g.add_argument(
        "--log-file", type=Path, default=None, help="metrics.jsonl: one JSON object per iteration"
    )
    g.add_argument("--eval-interval", type=POSITIVE_INT, default=1000)
    g.add_argument("--eval-iters", type=NON_NEGATIVE_INT, default=100, help="0: no evaluation")

    g = p.add_argument_group("accepted for script compatibility (no effect here)")
    for flag in IGNORED_SWITCHES:
        g.add_argument(flag, action="store_true", dest=_ignored(flag), help=argparse.SUPPRESS)
    for flag, kind in IGNORED_VALUES.items():
        g.add_argument(flag, type=kind, default=None, dest=_ignored(flag), help=argparse.SUPPRESS)
    g.add_argument(
        "--spec", nargs="+", default=None, dest=_ignored("--spec"), help=argparse.SUPPRESS
    )
    add_lora_flags(p)


def _ignored(flag: str) -> str:
    return "ignored_" + flag.lstrip("-").replace("-", "_")


def ignored_given(args: argparse.Namespace) -> list[str]:
    flags = [*IGNORED_SWITCHES, *IGNORED_VALUES, "--spec"]
    return [f for f in flags if getattr(args, _ignored(f)) not in (None, False)]


def run_train(args: argparse.Namespace) -> int:
    from atelier.llm.train.run import run_training

    with flag_names():
        report = run_training(train_request(args))
    print("\n".join(report.lines()))
    return 0


def run_pipeline(args: argparse.Namespace) -> int:
    from atelier.llm.train.run import run_pipeline as pipeline

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
    convert = args.convert_mg2hf
    mindspeed_convert = args.enable_mg2hf_convert or values["convert_mg2hf_env"]
    load = values["load"]
    if values["data_path"] is None:
        raise AtelierError("--data-path is required (or set DATA_PATH / DATASET_PATH)")
    if values["train_iters"] is None and values["train_samples"] is None:
        raise AtelierError(
            "give --train-iters or --train-samples (or TRAIN_ITERS, or SN and GBS [and EPOCH])"
        )
    data_path = values["data_path"]
    if isinstance(data_path, str):
        data_path = data_path.split()
    shape = {
        "num_layers": args.num_layers,
        "hidden_size": args.hidden_size,
        "ffn_hidden_size": args.ffn_hidden_size,
        "num_attention_heads": args.num_attention_heads,
        "num_query_groups": args.num_query_groups,
        "max_position_embeddings": args.max_position_embeddings,
    }
    agree = {
        "kv_channels": args.kv_channels,
        "rotary_base": args.rotary_base,
        "norm_epsilon": args.norm_epsilon,
        "untie_embeddings_and_output_weights": args.untie_embeddings_and_output_weights or None,
        "add_qkv_bias": args.add_qkv_bias or None,
        "qk_layernorm": args.qk_layernorm or None,
    }
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
        load=Path(load) if load else None,
        save=Path(values["save"]) if values["save"] else None,
        ckpt_step=args.ckpt_step,
        convert_mg2hf=convert,
        convert_mindspeed=mindspeed_convert,
        hf_save_dir=args.hf_save_dir,
        hf_cfg_dir=args.hf_cfg_dir,
        shape=shape,
        agree=agree,
        vocab_size=args.vocab_size,
        node=node,
        config={
            "micro_batch_size": values["micro_batch_size"] or 1,
            "global_batch_size": values["global_batch_size"],
            "train_iters": values["train_iters"],
            "train_samples": values["train_samples"],
            "lr": values["lr"] if values["lr"] is not None else 1e-4,
            "min_lr": values["min_lr"] if values["min_lr"] is not None else 0.0,
            "lr_decay_style": args.lr_decay_style,
            "lr_warmup_iters": args.lr_warmup_iters,
            "lr_warmup_fraction": args.lr_warmup_fraction,
            "lr_warmup_samples": args.lr_warmup_samples,
            "lr_warmup_init": args.lr_warmup_init,
            "lr_decay_iters": args.lr_decay_iters,
            "lr_decay_samples": args.lr_decay_samples,
            "lr_wsd_decay_style": args.lr_wsd_decay_style,
            "lr_wsd_decay_iters": args.lr_wsd_decay_iters,
            "lr_wsd_decay_samples": args.lr_wsd_decay_samples,
            "weight_decay": args.weight_decay,
            "start_weight_decay": args.start_weight_decay,
            "end_weight_decay": args.end_weight_decay,
            "weight_decay_incr_style": args.weight_decay_incr_style,
            "clip_grad": args.clip_grad,
            "adam_beta1": args.adam_beta1,
            "adam_beta2": args.adam_beta2,
            "adam_eps": args.adam_eps,
            "seed": values["seed"] if values["seed"] is not None else 1234,
            "bf16": args.bf16,
            "fp16": args.fp16,
            "initial_loss_scale": args.initial_loss_scale,
            "min_loss_scale": args.min_loss_scale,
            "loss_scale_window": args.loss_scale_window,
            "hysteresis": args.hysteresis,
            "tensor_model_parallel_size": values["tensor_model_parallel_size"] or 1,
            "pipeline_model_parallel_size": values["pipeline_model_parallel_size"] or 1,
            **_pipeline_fields(args),
            "sequence_parallel": args.sequence_parallel,
            "nproc_per_node": node.nproc_per_node if node else args.nproc_per_node or 1,
            "distributed_timeout_minutes": dist_timeout(args),
            "device": args.device,
            "recompute_granularity": args.recompute_granularity,
            "recompute_method": args.recompute_method,
            "recompute_num_layers": args.recompute_num_layers,
            "use_flash_attn": args.use_flash_attn,
            "compile": args.compile,
            "make_vocab_size_divisible_by": args.make_vocab_size_divisible_by,
            "finetune": args.finetune
            or values["run_type"] == "sft"
            or (values["run_type"] == "lora" and lora is not None and lora.load is None),
            "lora": lora,
            "no_load_optim": args.no_load_optim,
            "no_load_rng": args.no_load_rng,
            "save_interval": args.save_interval,
            "save_total_limit": args.save_total_limit,
            "exit_interval": args.exit_interval,
            "exit_duration_in_mins": args.exit_duration_in_mins,
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


def _pipeline_fields(args: argparse.Namespace) -> dict:
    from atelier.cli.llm_convert import _layer_list

    return {
        "num_layer_list": _layer_list(args.num_layer_list),
        "num_layers_per_virtual_pipeline_stage": args.num_layers_per_virtual_pipeline_stage,
        "pipeline_schedule": args.pipeline_schedule,
    }
