"""Logit parity: an independent forward over the Megatron shards vs transformers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atelier.llm.convert import Hf2MgOptions, hf2mg

from .reference_forward import megatron_logits


@pytest.mark.parametrize(
    ("family", "tp", "pp", "fmt", "norms"),
    [
        ("llama", 2, 2, "mcore", "te"),
        ("llama31", 2, 1, "legacy", "local"),
        ("mistral", 2, 2, "legacy", "local"),
        ("qwen2", 4, 2, "mcore", "local"),
        ("yi", 1, 2, "mcore", "local"),
        ("qwen3", 2, 2, "mcore", "local"),
        ("qwen3tied", 2, 1, "mcore", "te"),
    ],
)
def test_reference_forward_matches_transformers(
    hf_model, tmp_path: Path, family, tp, pp, fmt, norms
) -> None:
    from transformers import AutoModelForCausalLM

    hf = hf_model(family, 4)
    hf2mg(
        Hf2MgOptions(
            load_dir=hf, save_dir=tmp_path / "mg", tp=tp, pp=pp, fmt=fmt, mcore_norms=norms
        )
    )
    torch.manual_seed(1)
    ids = torch.randint(0, 300, (2, 24))
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)
    with torch.no_grad():
        want = model(ids).logits.double()
    got = megatron_logits(tmp_path / "mg", ids)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() < 1e-4
