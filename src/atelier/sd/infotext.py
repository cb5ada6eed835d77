"""Generation parameters as AUTOMATIC1111 writes them, in the PNG `parameters` chunk.

Tools that read A1111 PNGs (its PNG Info tab, image browsers) parse this text, so
an image from Atelier can be re-created or compared there.
"""

from __future__ import annotations

import io

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from atelier.sd.params import GenerationRequest


def infotext(req: GenerationRequest, seed: int, model: str, refiner: str | None) -> str:
    lines = [req.prompt]
    if req.negative_prompt:
        lines.append(f"Negative prompt: {req.negative_prompt}")
    parts = [
        f"Steps: {req.steps}",
        f"Sampler: {req.sampler}",
        f"CFG scale: {req.cfg_scale:g}",
        f"Seed: {seed}",
        f"Size: {req.width}x{req.height}",
        f"Model: {model}",
    ]
    if refiner:
        parts += [f"Refiner: {refiner}", f"Refiner switch at: {req.high_noise_frac:g}"]
    lines.append(", ".join(parts))
    return "\n".join(lines)


def png_bytes(image: Image.Image, text: str) -> bytes:
    meta = PngInfo()
    meta.add_text("parameters", text)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=meta)
    return buf.getvalue()
