"""Tiny models with weights from integer arithmetic (no RNG), so that checksums of their
conversions are stable across torch versions; and the digest of a Megatron checkpoint.

The goldens in `goldens/mindspeed_hf2mg.json` were made by running MindSpeed-LLM 2.0.0's
own conversion code on these models (see `test_mindspeed_goldens.py`)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch

# name -> (family, stored dtype, tied, convert flags of the MindSpeed command line)
CASES = {
    "llama-legacy-t2p2": ("llama", torch.float16, False, "-T 2 -P 2"),
    "qwen2-tied-mcore-t4p2-bf16": ("qwen2", torch.bfloat16, True, "-T 4 -P 2 --mcore bf16"),
    "mistral-mcore-t8": ("mistral", torch.bfloat16, False, "-T 8 --mcore"),
    "qwen2-tied-legacy-t2p2": ("qwen2", torch.bfloat16, True, "-T 2 -P 2"),
}
HIDDEN, HEADS, GROUPS, FFN, LAYERS, VOCAB = 64, 16, 8, 128, 4, 300


def pattern(shape: torch.Size, salt: int) -> torch.Tensor:
    """Deterministic values k/1024, |k| <= 504, from the element index and a salt."""
    n = math.prod(shape)
    k = (torch.arange(n, dtype=torch.int64) * 7919 + salt * 104729) % 1009 - 504
    return (k.to(torch.float64) / 1024).reshape(shape)


def make_golden_model(out: Path, family: str, dtype: torch.dtype, tied: bool) -> Path:
    import transformers

    cls = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2"}[family]
    config = getattr(transformers, f"{cls}Config")(
        hidden_size=HIDDEN,
        intermediate_size=FFN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=GROUPS,
        vocab_size=VOCAB,
        max_position_embeddings=128,
        tie_word_embeddings=tied,
    )
    model = getattr(transformers, f"{cls}ForCausalLM")(config)
    with torch.no_grad():
        for salt, (name, p) in enumerate(sorted(model.named_parameters())):
            values = pattern(p.shape, salt)
            p.copy_(1 + values / 8 if "norm" in name else values)
    model.to(dtype).save_pretrained(str(out), safe_serialization=True)
    # hub configs name the dtype `torch_dtype` (MindSpeed's transformers 4.43 reads only that)
    config_path = out / "config.json"
    fields = json.loads(config_path.read_text())
    fields["torch_dtype"] = str(dtype).removeprefix("torch.")
    config_path.write_text(json.dumps(fields, indent=2) + "\n")
    return out


def digest(t: torch.Tensor) -> list:
    raw = t.detach().contiguous().view(torch.uint8).numpy().tobytes()
    return [list(t.shape), str(t.dtype).removeprefix("torch."), hashlib.sha256(raw).hexdigest()]
