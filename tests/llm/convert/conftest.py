"""Tiny random Llama / Mistral / Qwen2 / Qwen3 / Yi models saved the way the hub stores them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atelier.llm.assets.build import train_bpe

HIDDEN, HEADS, FFN, VOCAB = 64, 8, 96, 300

FAMILY_CONFIGS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {"num_key_value_heads": 4}),
    "llama31": (
        "LlamaConfig",
        "LlamaForCausalLM",
        {
            "num_key_value_heads": 4,
            "rope_theta": 500000.0,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 256,
            },
        },
    ),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"num_key_value_heads": 2}),
    "qwen2": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        {"num_key_value_heads": 4, "tie_word_embeddings": True},
    ),
    "yi": ("LlamaConfig", "LlamaForCausalLM", {"num_key_value_heads": 4}),
    # q/k RMSNorm per head; head_dim 16 != hidden / heads = 8
    "qwen3": (
        "Qwen3Config",
        "Qwen3ForCausalLM",
        {"num_key_value_heads": 4, "head_dim": 16, "tie_word_embeddings": False},
    ),
    "qwen3tied": (
        "Qwen3Config",
        "Qwen3ForCausalLM",
        {"num_key_value_heads": 2, "head_dim": 16, "tie_word_embeddings": True},
    ),
}


def make_hf_model(
    out: Path,
    family: str,
    num_layers: int = 4,
    vocab: int = VOCAB,
    dtype: torch.dtype = torch.float32,
    tokenizer: Path | None = None,
    **overrides: object,
) -> Path:
    """save_pretrained a seeded random model (and copy a tokenizer next to it);
    `overrides` replace config fields (sizes, tie_word_embeddings)."""
    import shutil

    import transformers

    config_cls, model_cls, extra = FAMILY_CONFIGS[family]
    fields = {
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "num_hidden_layers": num_layers,
        "num_attention_heads": HEADS,
        "vocab_size": vocab,
        "max_position_embeddings": 128,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "pad_token_id": 0,
        **extra,
        **overrides,
    }
    config = getattr(transformers, config_cls)(**fields)
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(config).to(dtype)
    with torch.no_grad():  # random norms and biases so that every tensor matters
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if "norm" in name else 0.0))
    model.save_pretrained(str(out), safe_serialization=True)
    if tokenizer is not None:
        for f in tokenizer.iterdir():
            shutil.copy2(f, out / f.name)
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [f"the quick brown fox {i} jumps over the lazy dog {i * 7}" for i in range(200)]
    return train_bpe(texts, tmp_path_factory.mktemp("tok"), vocab_size=VOCAB - 20)


@pytest.fixture(scope="session")
def hf_model(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Path):
    """hf_model(family, num_layers) -> folder, cached per session."""
    cache: dict[tuple[str, int], Path] = {}

    def get(family: str, num_layers: int = 4) -> Path:
        key = (family, num_layers)
        if key not in cache:
            cache[key] = make_hf_model(
                tmp_path_factory.mktemp(f"hf-{family}-{num_layers}"),
                family,
                num_layers,
                tokenizer=tiny_tokenizer,
            )
        return cache[key]

    return get
