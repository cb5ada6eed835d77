"""LoRA flags of `atelier llm train`: MindSpeed-LLM's spellings, RUN_TYPE=lora, one-line errors."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from atelier.cli.llm_train import train_request
from atelier.cli.main import build_parser
from atelier.core.errors import AtelierError
from atelier.llm.train.lora import TARGETS, LoraSpec
from tests.cli import test_llm_train_cli

clean_env = test_llm_train_cli.clean_env  # the same fixture: no platform variables set

# The LoRA part of MindSpeed-LLM v2.0.0's examples/mcore/qwen15/tune_qwen15_32b_lora_pad.sh.
MINDSPEED_LORA = (
    "--finetune --stage sft --is-instruction-dataset --lora-r 16 --lora-alpha 32 "
    "--lora-fusion --lora-target-modules linear_qkv linear_proj linear_fc1 linear_fc2"
)
BASE = "--data-path D --train-iters 5 --load CKPT --save SAVE --seq-length 64"


def _request(line: str):
    return train_request(build_parser().parse_args(["llm", "train", *shlex.split(line)]))


def test_mindspeed_lora_line_parses(clean_env) -> None:
    req = _request(f"{BASE} {MINDSPEED_LORA}")
    assert req.config["lora"] == LoraSpec(r=16, alpha=32.0, target_modules=TARGETS)
    assert req.is_instruction and req.config["finetune"]


def test_every_lora_flag(clean_env) -> None:
    req = _request(
        f"{BASE} --lora-target-modules linear_fc1 linear_qkv --lora-r 8 --lora-alpha 16 "
        "--lora-dropout 0.05 --lora-modules-to-save output_layer --lora-load L "
        "--lora-ckpt-filter"
    )
    assert req.config["lora"] == LoraSpec(
        r=8,
        alpha=16.0,
        dropout=0.05,
        target_modules=("linear_fc1", "linear_qkv"),
        modules_to_save=("output_layer",),
        load=Path("L"),
        ckpt_filter=True,
    )
    assert _request(BASE).config["lora"] is None  # off without targets


def test_run_type_lora(clean_env) -> None:
    clean_env.setenv("RUN_TYPE", "lora")
    req = _request(BASE)
    assert req.config["lora"] == LoraSpec()  # r 16, alpha 32, all four linears
    assert req.config["lora"].target_modules == TARGETS
    assert req.is_instruction and req.config["finetune"]
    req = _request(f"{BASE} --lora-load L")  # continuing a LoRA run is no fresh finetune
    assert not req.config["finetune"] and req.config["lora"].load == Path("L")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("--lora-r 8", "--lora-r without --lora-target-modules"),
        ("--lora-ckpt-filter", "--lora-ckpt-filter without --lora-target-modules"),
        ("--lora-target-modules q_proj", "invalid choice: 'q_proj'"),
    ],
)
def test_bad_lora_flags_are_one_line(clean_env, capsys, extra: str, needle: str) -> None:
    try:
        _request(f"{BASE} {extra}")
    except AtelierError as e:
        assert needle in str(e) and "\n" not in str(e)
    except SystemExit:
        assert needle in capsys.readouterr().err
    else:
        pytest.fail("accepted")
