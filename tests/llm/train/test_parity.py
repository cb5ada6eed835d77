"""5 pretraining steps from a converted tiny HF model equal a transformers reference.

For every family, DP1xTP1, DP2 and TP2 (two gloo processes): the same samples, AdamW,
Megatron schedule and clipping give per-step losses within 1e-5 of a single-process
`transformers` loop, and final weights (gathered from the TP shards back to the HF layout)
within 1e-5 of the reference's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atelier.llm.convert.hf2mg import Hf2MgOptions, hf2mg
from atelier.llm.train.launch import launch
from tests.llm.convert.conftest import make_hf_model
from tests.llm.train.parity import atelier_run, config, reference_run, sample_tokens

FAMILIES = ["llama", "llama31", "mistral", "qwen2", "yi", "qwen3"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory):
    cache: dict[str, tuple[Path, Path]] = {}

    def get(family: str) -> tuple[Path, Path]:
        if family not in cache:
            root = tmp_path_factory.mktemp(f"train-{family}")
            hf = make_hf_model(root / "hf", family, num_layers=2)
            hf2mg(
                Hf2MgOptions(
                    load_dir=hf, save_dir=root / "mg", tp=2, make_vocab_size_divisible_by=64
                )
            )
            cache[family] = (hf, root / "mg")
        return cache[family]

    return get


def _check(family: str, converted, dp: int, tp: int) -> None:
    hf, mg = converted(family)
    tokens = sample_tokens(24)
    # The run loads the hf2mg checkpoint (written at TP 2; resharded in memory for TP 1).
    cfg = config(mg, tensor_model_parallel_size=tp)
    losses, weights = launch(atelier_run, (cfg, tokens), nproc_per_node=dp * tp)
    ref_losses, ref_weights = reference_run(config(hf), tokens)
    assert len(losses) == 5
    assert max(abs(a - b) for a, b in zip(losses, ref_losses, strict=True)) < 1e-5, (
        losses,
        ref_losses,
    )
    assert sorted(weights) == sorted(ref_weights)
    for k, w in ref_weights.items():
        assert torch.allclose(weights[k], w, atol=1e-5, rtol=0), k


@pytest.mark.parametrize("family", FAMILIES)
def test_single_process_equals_transformers(family: str, converted) -> None:
    _check(family, converted, dp=1, tp=1)


@pytest.mark.parametrize("family", FAMILIES)
def test_tp2_equals_transformers(family: str, converted) -> None:
    _check(family, converted, dp=1, tp=2)


@pytest.mark.parametrize("family", FAMILIES)
def test_dp2_equals_transformers(family: str, converted) -> None:
    _check(family, converted, dp=2, tp=1)
