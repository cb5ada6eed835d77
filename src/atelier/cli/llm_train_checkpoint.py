"""Checkpoint flags of `atelier llm train` / `run`: what to load, where to save, when to stop,
and the Hugging Face export after training.

Megatron's and MindSpeed's spellings side by side (`--convert-mg2hf DIR` and MindSpeed's
`--enable-mg2hf-convert` / `--hf-save-dir`); the guide's CKPT_LOAD_DIR, CKPT_SAVE_PATH
and CONVERT_MG2HF fill absent ones through `env.apply_env`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from atelier.core.flags import NON_NEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT


def add_checkpoint_flags(p: argparse.ArgumentParser) -> None:
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


def checkpoint_request(args: argparse.Namespace, values: dict[str, Any]) -> dict[str, Any]:
    """TrainRequest fields of this group; `values`: the flags after `apply_env`."""
    load = values["load"]
    return {
        "load": Path(load) if load else None,
        "save": Path(values["save"]) if values["save"] else None,
        "ckpt_step": args.ckpt_step,
        "convert_mg2hf": args.convert_mg2hf,
        "convert_mindspeed": args.enable_mg2hf_convert or values["convert_mg2hf_env"],
        "hf_save_dir": args.hf_save_dir,
        "hf_cfg_dir": args.hf_cfg_dir,
    }


def checkpoint_fields(args: argparse.Namespace) -> dict[str, Any]:
    """TrainConfig fields of this group (`finetune` also depends on RUN_TYPE: the caller's)."""
    return {
        "no_load_optim": args.no_load_optim,
        "no_load_rng": args.no_load_rng,
        "save_interval": args.save_interval,
        "save_total_limit": args.save_total_limit,
        "exit_interval": args.exit_interval,
        "exit_duration_in_mins": args.exit_duration_in_mins,
    }
