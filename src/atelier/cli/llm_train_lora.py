"""MindSpeed-LLM's LoRA flags for `atelier llm train` / `run` (its `_add_lora_args` spellings).

LoRA is on when `--lora-target-modules` is given (MindSpeed's rule) or with the guide's
`RUN_TYPE=lora`, which adapts MindSpeed's usual four linears (`linear_qkv linear_proj
linear_fc1 linear_fc2`, as every `tune_*_lora*.sh` of its examples) with its defaults
r 16, alpha 32.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from atelier.core.flags import POSITIVE_FLOAT, Float, Int
from atelier.llm.train.lora.spec import TARGETS, LoraSpec

DEFAULTS = {"lora_r": 16, "lora_alpha": 32.0, "lora_dropout": 0.0}


def add_lora_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LoRA (MindSpeed-LLM spellings; on with --lora-target-modules)")
    g.add_argument(
        "--lora-target-modules",
        nargs="+",
        choices=TARGETS,
        default=None,
        help="linears to adapt (any of them; RUN_TYPE=lora: all four)",
    )
    g.add_argument("--lora-r", type=Int(1, 1 << 16), default=None, help="rank (default 16)")
    g.add_argument(
        "--lora-alpha", type=POSITIVE_FLOAT, default=None, help="scale alpha / r (default 32)"
    )
    g.add_argument(
        "--lora-dropout",
        type=Float(0, 1, hi_open=True),
        default=None,
        help="dropout on the adapters' input (default 0, as MindSpeed)",
    )
    g.add_argument(
        "--lora-modules-to-save",
        nargs="+",
        default=None,
        help="modules trained fully besides the adapters (e.g. word_embeddings output_layer)",
    )
    g.add_argument(
        "--lora-load",
        type=Path,
        default=None,
        help="a LoRA run's checkpoint: continue from its adapters and training state "
        "(the base model still comes from --load)",
    )
    g.add_argument(
        "--lora-ckpt-filter",
        action="store_true",
        help="save only the adapters (+ --lora-modules-to-save), not the frozen base",
    )
    g.add_argument("--lora-fusion", action="store_true", help=argparse.SUPPRESS)  # kernels
    g.add_argument("--lora-register-forward-hook", nargs="+", default=None, help=argparse.SUPPRESS)


def lora_spec(args: argparse.Namespace, run_type: str | None) -> LoraSpec | None:
    """The run's LoraSpec, or None for full-parameter training."""
    from atelier.core.errors import AtelierError

    targets = args.lora_target_modules or (TARGETS if run_type == "lora" else None)
    if targets is None:
        given = [k for k in (*DEFAULTS, "lora_modules_to_save", "lora_load") if getattr(args, k)]
        given += ["lora_ckpt_filter"] if args.lora_ckpt_filter else []
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise AtelierError(
                f"{flag} without --lora-target-modules: LoRA is off; give "
                "--lora-target-modules (or RUN_TYPE=lora) or drop it"
            )
        return None
    value = {k: d if getattr(args, k) is None else getattr(args, k) for k, d in DEFAULTS.items()}
    return LoraSpec(
        r=value["lora_r"],
        alpha=float(value["lora_alpha"]),
        dropout=value["lora_dropout"],
        target_modules=tuple(dict.fromkeys(targets)),
        modules_to_save=tuple(args.lora_modules_to_save or ()),
        load=args.lora_load,
        ckpt_filter=args.lora_ckpt_filter,
    )
