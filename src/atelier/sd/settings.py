"""Everything `atelier sd serve` is configured with, in one typed object."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    # HTTP Basic user:password pairs that are also let in (A1111's --api-auth)
    api_auth: list[tuple[str, str]] = field(default_factory=list)
    device: str = "auto"
    dtype: str = "auto"  # fp16 on accelerators, fp32 on CPU
    attention: str = "sdpa"
    compile: bool = False
    max_queue: int = 16
    max_size: int = 2048
    # batch_size x width x height of one batch: 8 SDXL-native 1024x1024 images
    max_pixels: int = 8 * 1024 * 1024
    load_wait_s: float = 600.0  # how long a request may wait for the model to load
    max_body_bytes: int = 1 << 20
    # finished jobs kept for GET /v1/jobs/{id}: whichever bound is reached first
    keep_jobs: int = 256
    keep_bytes: int = 256 << 20
    keep_seconds: float = 3600.0
    # a client must finish its request headers, then its body, within these
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_s: float = 5.0  # idle keep-alive connections are closed after this
    tls_keyfile: str | None = None
    tls_certfile: str | None = None
    root_path: str = ""  # path prefix behind a reverse proxy (A1111's --subpath)
    cors_origins: list[str] = field(default_factory=list)
    cors_origin_regex: str | None = None
