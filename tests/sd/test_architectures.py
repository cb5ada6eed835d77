"""The shipped SDXL configs build the published architectures (checked by size, on meta)."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from atelier.sd.architectures import sdxl_configs


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_sdxl_sizes_match_the_published_models():
    cfg = sdxl_configs()
    with torch.device("meta"):
        base = _params(UNet2DConditionModel(**cfg["base_unet"]))
        refiner = _params(UNet2DConditionModel(**cfg["refiner_unet"]))
        vae = _params(AutoencoderKL(**cfg["vae"]))
        clip_l = _params(CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"])))
        clip_g = _params(CLIPTextModelWithProjection(CLIPTextConfig(**cfg["text_encoder_2"])))
    # SDXL 1.0: UNet 2.567 B, refiner UNet 2.3 B, VAE 83.7 M, CLIP-L 123 M, OpenCLIP-bigG 695 M
    assert base == 2_567_463_684
    assert 2.2e9 < refiner < 2.4e9
    assert vae == 83_653_863
    assert 1.22e8 < clip_l < 1.24e8
    assert 6.9e8 < clip_g < 7.0e8
