"""Tiny SDXL base + refiner with random weights, built from configs alone.

Used by `atelier demo` and the tests: the real diffusers classes and pipelines,
at a size that runs in a second on a CPU, with a CLIP tokenizer made from a
byte-level vocabulary written here (no hub access).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CLIP_SPECIALS = ["<|startoftext|>", "<|endoftext|>"]


def _bytes_to_unicode() -> list[str]:
    """CLIP/GPT-2's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs, strict=True))]


def write_clip_tokenizer(out: Path) -> Path:
    """A valid CLIPTokenizer folder: byte symbols, end-of-word variants, no merges."""
    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    for s in CLIP_SPECIALS:
        vocab[s] = len(vocab)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab), "utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n", "utf-8")
    cfg = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1), "utf-8")
    return out


def tiny_configs(vocab: int) -> dict[str, dict[str, Any]]:
    """Configs in the shape of configs/sdxl.json, small enough to run in a second on a CPU.

    The base UNet sees both encoders' states (32 + 32) and 6 time ids; the refiner sees
    encoder 2 only and 5 ids (aesthetic score instead of the crop/target size pair).
    """
    text = dict(
        bos_token_id=vocab - 2,
        eos_token_id=vocab - 1,
        pad_token_id=vocab - 1,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-5,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=vocab,
        hidden_act="gelu",
        projection_dim=32,
    )
    unet = dict(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        norm_num_groups=8,
    )
    return {
        "base_unet": {
            **unet,
            "cross_attention_dim": 64,
            "projection_class_embeddings_input_dim": 80,
        },
        "refiner_unet": {
            **unet,
            "cross_attention_dim": 32,
            "projection_class_embeddings_input_dim": 72,
        },
        "vae": dict(
            block_out_channels=[32, 64],
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
            up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
            latent_channels=4,
            sample_size=128,
            norm_num_groups=8,
        ),
        "text_encoder": text,
        "text_encoder_2": text,
        "scheduler": dict(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            steps_offset=1,
            timestep_spacing="leading",
        ),
    }


def build_tiny_sdxl(out_dir: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Save a tiny base and refiner as diffusers folders; return (base, refiner)."""
    from atelier.sd.engine import quiet_libraries

    quiet_libraries()
    import torch
    from transformers import CLIPTokenizer

    from atelier.sd.architectures import build_sdxl

    out = Path(out_dir)
    torch.manual_seed(seed)
    tok_dir = write_clip_tokenizer(out / "_clip_tokenizer")
    vocab = len(CLIPTokenizer.from_pretrained(str(tok_dir)))
    base, refiner = build_sdxl(tiny_configs(vocab), tok_dir)
    base_dir, refiner_dir = out / "base", out / "refiner"
    base.save_pretrained(str(base_dir))
    refiner.save_pretrained(str(refiner_dir))
    return base_dir, refiner_dir
