"""Megatron/MindSpeed flags of `atelier llm train` / `run` that mean nothing here.

Fusions, overlap, kernels and memory tricks of the Ascend/CUDA builds are accepted so a
user's `3_training.sh` parses unchanged, and named in one note line when given; an unknown
flag is still an error. Kept apart from the flags that do something, so that list stays
readable and this one can grow with each script seen in the wild.
"""

from __future__ import annotations

import argparse
from typing import Any

from atelier.core.flags import NON_NEGATIVE_INT, POSITIVE_FLOAT

# Switches with no meaning for this trainer: accepted so scripts parse, named in one note line.
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


def add_ignored_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("accepted for script compatibility (no effect here)")
    for flag in IGNORED_SWITCHES:
        g.add_argument(flag, action="store_true", dest=_ignored(flag), help=argparse.SUPPRESS)
    for flag, kind in IGNORED_VALUES.items():
        g.add_argument(flag, type=kind, default=None, dest=_ignored(flag), help=argparse.SUPPRESS)
    g.add_argument(
        "--spec", nargs="+", default=None, dest=_ignored("--spec"), help=argparse.SUPPRESS
    )


def _ignored(flag: str) -> str:
    return "ignored_" + flag.lstrip("-").replace("-", "_")


def ignored_given(args: argparse.Namespace) -> list[str]:
    flags = [*IGNORED_SWITCHES, *IGNORED_VALUES, "--spec"]
    return [f for f in flags if getattr(args, _ignored(f)) not in (None, False)]
