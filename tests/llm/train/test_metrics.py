"""The reported FLOPs are what the model computes; MFU only where a peak is known."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from atelier.core.errors import AtelierError
from atelier.llm.convert.meta import ModelMeta
from atelier.llm.train.metrics import flops_per_iteration, peak_tflops
from atelier.llm.train.model.args import args_from_meta
from atelier.llm.train.model.decoder import GPTModel


@pytest.mark.parametrize("tied,groups", [(False, 2), (True, 8)])
def test_megatron_flops_formula_equals_counted_flops(tied: bool, groups: int) -> None:
    """torch's FlopCounterMode over a forward and backward of the engine's model (attention
    in the math kernel, which counts the full score matrix as Megatron's formula does)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    meta = ModelMeta(
        family="llama",
        num_layers=2,
        hidden_size=64,
        ffn_hidden_size=160,
        num_heads=8,
        num_groups=groups,
        head_dim=8,
        vocab_size=256,
        tied=tied,
        qkv_bias=False,
        rope_theta=1e4,
        norm_eps=1e-5,
        max_positions=128,
        dtype=torch.float32,
    )
    args = args_from_meta(meta, tp=1, divisible_by=128)
    model = GPTModel(args)
    batch, seq = 2, 32
    tokens = torch.randint(0, 256, (batch, seq))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(tokens).sum().backward()
    state = SimpleNamespace(
        model_args=args, cfg=SimpleNamespace(seq_length=seq), global_batch_size=batch
    )
    assert flops_per_iteration(state) == counter.get_total_flops()


def test_peak_is_known_or_absent(monkeypatch) -> None:
    monkeypatch.delenv("ATELIER_PEAK_TFLOPS", raising=False)
    assert peak_tflops(torch.device("cpu"), True) is None
    monkeypatch.setenv("ATELIER_PEAK_TFLOPS", "313")
    assert peak_tflops(torch.device("cpu"), True) == 313.0
    monkeypatch.setenv("ATELIER_PEAK_TFLOPS", "fast")
    with pytest.raises(AtelierError, match="ATELIER_PEAK_TFLOPS"):
        peak_tflops(torch.device("cpu"), True)
