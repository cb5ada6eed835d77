"""The real SDXL base and refiner architectures with random weights, for benchmarks.

Speed does not depend on weight values, so a benchmark can run the true shapes
(`configs/sdxl.json`, the published diffusers configs) on any GPU without
downloading 13 GB of weights.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any


def sdxl_configs() -> dict[str, dict[str, Any]]:
    text = resources.files("atelier.sd").joinpath("configs/sdxl.json").read_text("utf-8")
    return json.loads(text)


def build_random_sdxl(
    tokenizer_dir: str | Path, device: str = "cpu", dtype: Any = None
) -> tuple[Any, Any]:
    """(base, refiner) pipelines of SDXL's real sizes, randomly initialised on `device`."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    from atelier.sd.tiny import assemble_sdxl

    cfg = sdxl_configs()
    dtype = dtype or torch.float16
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
