"""Everything one training run needs, in Megatron-LM's argument names (snake_case).

`TrainConfig` is the single typed object between the CLI (which maps Megatron/MindSpeed
flags and the platform's environment form onto it) and the library (`loop.train`). Field
names are Megatron's `args` names so a `3_training.sh` line maps one to one and the saved
checkpoint `args` read the same in Megatron-LM and MindSpeed-LLM. Library errors name these
fields; the CLI turns them into flags.

Parallel fields: data x tensor x pipeline (`train.pipeline`; the interleaved schedule is a
field refused in one line), validated here before any process starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atelier.core.errors import AtelierError

if TYPE_CHECKING:
    from atelier.llm.train.data import DataSpec
    from atelier.llm.train.lora.spec import LoraSpec

LR_DECAY_STYLES = ("constant", "linear", "cosine", "inverse-square-root", "WSD")
WSD_DECAY_STYLES = ("linear", "cosine", "exponential", "minus_sqrt")
RECOMPUTE_GRANULARITIES = ("full", "selective")
RECOMPUTE_METHODS = ("uniform", "block")
PIPELINE_SCHEDULES = ("1f1b", "gpipe")


@dataclass
class TrainConfig:
    """One training run. Defaults are Megatron-LM's where it has one."""

    # --- data (the dataset itself is described by a DataSpec from train.data) ---
    data: DataSpec | None = None
    seq_length: int = 2048

    # --- batch and length of the run ---
    micro_batch_size: int = 1
    global_batch_size: int | None = None  # None: micro_batch_size x data-parallel size
    train_iters: int | None = None
    train_samples: int | None = None

    # --- learning-rate schedule (megatron.core OptimizerParamScheduler) ---
    lr: float = 1e-4
    min_lr: float = 0.0
    lr_decay_style: str = "linear"
    lr_warmup_iters: int = 0
    lr_warmup_fraction: float | None = None
    lr_warmup_samples: int = 0
    lr_warmup_init: float = 0.0
    lr_decay_iters: int | None = None
    lr_decay_samples: int | None = None
    lr_wsd_decay_style: str = "exponential"
    lr_wsd_decay_iters: int | None = None
    lr_wsd_decay_samples: int | None = None

    # --- optimizer (AdamW; decay not on norms and biases) ---
    weight_decay: float = 0.01
    start_weight_decay: float | None = None
    end_weight_decay: float | None = None
    weight_decay_incr_style: str = "constant"
    clip_grad: float = 1.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    seed: int = 1234

    # --- precision; fp16 uses a dynamic loss scale ---
    bf16: bool = False
    fp16: bool = False
    initial_loss_scale: float = 2.0**32
    min_loss_scale: float = 1.0
    loss_scale_window: int = 1000
    hysteresis: int = 2

    # --- parallelism (world = data x tensor [x pipeline]) ---
    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1  # stages (train.pipeline); mesh (pp, dp, tp)
    num_layer_list: list[int] | None = None  # layers per stage, as hf2mg's --num-layer-list
    num_layers_per_virtual_pipeline_stage: int | None = None  # interleaved: not supported
    pipeline_schedule: str = "1f1b"  # or "gpipe"
    sequence_parallel: bool = False
    nproc_per_node: int = 1  # >1: spawn this many local processes (no torchrun needed)
    distributed_timeout_minutes: int = 10
    device: str = "auto"

    # --- model execution ---
    recompute_granularity: str | None = None
    recompute_method: str = "uniform"
    recompute_num_layers: int | None = None  # None with granularity full: every layer
    use_flash_attn: bool = False
    compile: bool = False
    make_vocab_size_divisible_by: int = 128
    # Shape fields given on the command line; they must agree with the loaded checkpoint.
    num_layers: int | None = None
    hidden_size: int | None = None
    ffn_hidden_size: int | None = None
    num_attention_heads: int | None = None
    num_query_groups: int | None = None
    max_position_embeddings: int | None = None

    # --- checkpoints (read and written by train.checkpoint through the hooks) ---
    load: Path | None = None
    finetune: bool = False
    no_load_optim: bool = False
    no_load_rng: bool = False
    save: Path | None = None
    save_interval: int | None = None
    save_total_limit: int | None = None
    exit_interval: int | None = None
    exit_duration_in_mins: float | None = None
    convert_mg2hf: Path | None = None

    # --- LoRA (MindSpeed-LLM's --lora-* flags); None: full-parameter training ---
    lora: LoraSpec | None = None

    # --- logging and evaluation ---
    log_interval: int = 100
    tensorboard_dir: Path | None = None
    log_file: Path | None = None
    eval_interval: int = 1000
    eval_iters: int = 100

    # Free-form values recorded in the saved args (e.g. prompt_type), never interpreted.
    extra_args: dict[str, Any] = field(default_factory=dict)

    @property
    def params_dtype_name(self) -> str:
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "fp32"

    def check(self) -> None:
        """Value checks that need no model and no process group; each names its field."""
        positive = {
            "micro_batch_size": self.micro_batch_size,
            "seq_length": self.seq_length,
            "tensor_model_parallel_size": self.tensor_model_parallel_size,
            "nproc_per_node": self.nproc_per_node,
            "log_interval": self.log_interval,
            "eval_interval": self.eval_interval,
        }
        for name, value in positive.items():
            if value < 1:
                raise AtelierError(f"{name} {value}: must be at least 1")
        if self.global_batch_size is not None and self.global_batch_size < 1:
            raise AtelierError(f"global_batch_size {self.global_batch_size}: must be at least 1")
        self._check_pipeline()
        if (self.train_iters is None) == (self.train_samples is None):
            raise AtelierError("give exactly one of train_iters or train_samples")
        if self.lr_decay_style not in LR_DECAY_STYLES:
            raise AtelierError(
                f"lr_decay_style {self.lr_decay_style!r}: use one of {', '.join(LR_DECAY_STYLES)}"
            )
        if self.lr_wsd_decay_style not in WSD_DECAY_STYLES:
            raise AtelierError(
                f"lr_wsd_decay_style {self.lr_wsd_decay_style!r}: use one of "
                f"{', '.join(WSD_DECAY_STYLES)}"
            )
        if self.lr_warmup_fraction is not None and self.lr_warmup_iters:
            raise AtelierError("give only one of lr_warmup_fraction and lr_warmup_iters")
        if self.min_lr > self.lr:
            raise AtelierError(f"min_lr {self.min_lr} is above lr {self.lr}")
        if self.bf16 and self.fp16:
            raise AtelierError("give only one of bf16 and fp16")
        if self.recompute_granularity not in (None, *RECOMPUTE_GRANULARITIES):
            raise AtelierError(
                f"recompute_granularity {self.recompute_granularity!r}: use full or selective"
            )
        if self.recompute_method not in RECOMPUTE_METHODS:
            raise AtelierError(f"recompute_method {self.recompute_method!r}: use uniform or block")
        if self.lora is not None:
            self.lora.check()
            if self.pipeline_model_parallel_size > 1:
                raise AtelierError(
                    f"lora with pipeline_model_parallel_size {self.pipeline_model_parallel_size}"
                    ": LoRA runs on data and tensor parallelism here; use "
                    "pipeline_model_parallel_size 1"
                )
        if self.sequence_parallel and self.tensor_model_parallel_size == 1:
            raise AtelierError(
                "sequence_parallel needs tensor_model_parallel_size > 1 (Megatron turns it off)"
            )

    def _check_pipeline(self) -> None:
        pp = self.pipeline_model_parallel_size
        if pp < 1:
            raise AtelierError(f"pipeline_model_parallel_size {pp}: must be at least 1")
        if self.num_layers_per_virtual_pipeline_stage is not None:
            raise AtelierError(
                "num_layers_per_virtual_pipeline_stage: the interleaved (virtual) pipeline "
                "schedule is not supported; leave it out (1F1B over whole stages is used)"
            )
        if self.pipeline_schedule not in PIPELINE_SCHEDULES:
            raise AtelierError(
                f"pipeline_schedule {self.pipeline_schedule!r}: use one of "
                f"{', '.join(PIPELINE_SCHEDULES)}"
            )
        if self.num_layer_list is not None and len(self.num_layer_list) != pp:
            raise AtelierError(
                f"num_layer_list {','.join(map(str, self.num_layer_list))}: needs one entry "
                f"per pipeline stage ({pp})"
            )
