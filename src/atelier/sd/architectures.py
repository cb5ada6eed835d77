"""SDXL base + refiner built from config dicts: the real sizes for benchmarks, tiny ones for
tests and the demo.

Speed does not depend on weight values, so a benchmark can run the true shapes
(`configs/sdxl.json`, the published diffusers configs) on any GPU without downloading 13 GB
of weights; `tiny.py` feeds the same builder configs small enough for a CPU.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any


def sdxl_configs() -> dict[str, dict[str, Any]]:
    text = resources.files("atelier.sd").joinpath("configs/sdxl.json").read_text("utf-8")
    return json.loads(text)


def assemble_sdxl(
    unet: Any, refiner_unet: Any, vae: Any, enc1: Any, enc2: Any, tokenizer: Any, scheduler: Any
) -> tuple[Any, Any]:
    """SDXL base + refiner pipelines from components; the refiner shares encoder 2 and the
    VAE, the ensemble-of-experts layout of the published refiner."""
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    base = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=enc1,
        text_encoder_2=enc2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
    )
    refiner = StableDiffusionXLImg2ImgPipeline(
        vae=vae,
        text_encoder=None,
        text_encoder_2=enc2,
        tokenizer=None,
        tokenizer_2=tokenizer,
        unet=refiner_unet,
        scheduler=scheduler,
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=True,
    )
    return base, refiner


def build_sdxl(
    cfg: dict[str, dict[str, Any]],
    tokenizer_dir: str | Path,
    device: str = "cpu",
    dtype: Any = None,
) -> tuple[Any, Any]:
    """(base, refiner) with random weights from `cfg` (keys as in configs/sdxl.json)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    dtype = dtype or torch.float32
    with torch.device(device):
        unet = UNet2DConditionModel(**cfg["base_unet"]).to(dtype)
        refiner_unet = UNet2DConditionModel(**cfg["refiner_unet"]).to(dtype)
        vae = AutoencoderKL(**cfg["vae"]).to(dtype)
        enc1 = CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"])).to(dtype)
        enc2 = CLIPTextModelWithProjection(CLIPTextConfig(**cfg["text_encoder_2"])).to(dtype)
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir))
    scheduler = EulerDiscreteScheduler(**cfg["scheduler"])
    base, refiner = assemble_sdxl(unet, refiner_unet, vae, enc1, enc2, tokenizer, scheduler)
    for p in (base, refiner):
        p.set_progress_bar_config(disable=True)
    return base, refiner


def build_random_sdxl(
    tokenizer_dir: str | Path, device: str = "cpu", dtype: Any = None
) -> tuple[Any, Any]:
    """The published SDXL sizes, randomly initialised on `device` (fp16 by default)."""
    import torch

    return build_sdxl(sdxl_configs(), tokenizer_dir, device, dtype or torch.float16)
