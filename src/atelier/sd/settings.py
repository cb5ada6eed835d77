"""Everything `atelier sd serve` is configured with, in one typed object."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeSettings:
    model: str
    refiner: str | None = None
    vae: str | None = None  # e.g. an fp16-fixed SDXL VAE
    config_dir: str | None = None  # diffusers SDXL folder for single-file checkpoints
    host: str = "127.0.0.1"
    port: int = 8183
    listen: bool = False
    app_code: str | None = None
    device: str = "auto"
    dtype: str = "auto"  # fp16 on accelerators, fp32 on CPU
    attention: str = "sdpa"
    compile: bool = False
    max_queue: int = 16
    max_size: int = 2048
    load_wait_s: float = 600.0  # how long a request may wait for the model to load
    max_body_bytes: int = 1 << 20
    keep_jobs: int = 256  # finished jobs kept for GET /v1/jobs/{id}
