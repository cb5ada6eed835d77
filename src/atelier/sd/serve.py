"""`atelier sd serve`: check the settings, bind the port, then run the app under uvicorn.

Everything that can be checked before the (slow) model load is checked here, so a
mistake is one line and exit 2 at start, not a `failed` state on /health minutes later.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
from pathlib import Path

from atelier.core.errors import AtelierError
from atelier.sd.engine import check_model_path
from atelier.sd.settings import ServeSettings

log = logging.getLogger("atelier.sd")
# what a header can carry and a person can type: printable ASCII, no spaces
CODE_CHARS = re.compile(r"[!-~]+")


def check_app_code(code: str, flag: str) -> None:
    if not CODE_CHARS.fullmatch(code):
        raise AtelierError(
            f"{flag}: an app code must be printable ASCII without spaces (it travels in an "
            "HTTP header, and an empty one would switch authentication off)"
        )


def _check_device(name: str) -> None:
    import torch

    from atelier.core.device import resolve_device_name

    resolved = resolve_device_name(name)
    try:
        device = torch.device(resolved)
    except RuntimeError:
        raise AtelierError(
            f"--device {name}: not a device name (e.g. cuda, cuda:1, npu:0, cpu)"
        ) from None
    if device.index is not None and device.type in ("cuda", "npu"):
        # torch_npu registers torch.npu when resolve_device_name found an NPU
        count = getattr(torch, device.type).device_count()
        if device.index >= count:
            raise AtelierError(f"--device {name}: there are {count} {device.type} device(s) here")


def _check_file(path: str | None, flag: str) -> None:
    if path is not None and not Path(path).is_file():
        raise AtelierError(f"{flag} {path}: no such file")


def resolve(settings: ServeSettings) -> ServeSettings:
    """Fail fast on what can be checked before the model load."""
    check_model_path(settings.model, "--model")
    if settings.refiner:
        check_model_path(settings.refiner, "--refiner")
    if settings.vae:
        vae = Path(settings.vae)
        if not vae.is_file() and not (vae / "config.json").is_file():
            raise AtelierError(f"--vae {settings.vae}: not a VAE folder (config.json) or file")
    if settings.config_dir and not (Path(settings.config_dir) / "model_index.json").is_file():
        raise AtelierError(
            f"--config-dir {settings.config_dir}: not a diffusers SDXL folder (no model_index.json)"
        )
    if settings.app_code is None:
        settings.app_code = os.environ.get("ATELIER_APP_CODE") or None
        if settings.app_code is not None:
            check_app_code(settings.app_code, "ATELIER_APP_CODE")
    else:
        check_app_code(settings.app_code, "--app-code")
    if settings.listen:
        settings.host = "0.0.0.0"
        if not settings.app_code and not settings.api_auth:
            log.warning(
                "listening on all interfaces without an app code: anyone who can reach port "
                "%d can generate images; set --app-code or ATELIER_APP_CODE",
                settings.port,
            )
    if settings.attention not in ("sdpa", "flash", "math"):
        raise AtelierError(f"--attention {settings.attention}: use sdpa, flash or math")
    if settings.dtype not in ("auto", "fp16", "bf16", "fp32"):
        raise AtelierError(f"--dtype {settings.dtype}: use fp16, bf16, fp32 or auto")
    if not 64 <= settings.max_size <= 8192 or settings.max_size % 8:
        raise AtelierError(f"--max-size {settings.max_size}: a multiple of 8 in [64, 8192]")
    if settings.max_queue < 1:
        raise AtelierError(f"--max-queue {settings.max_queue}: must be at least 1")
    if settings.max_pixels < 64 * 64:
        raise AtelierError(f"--max-batch-pixels {settings.max_pixels}: at least 4096 (64x64)")
    _check_device(settings.device)
    if bool(settings.tls_keyfile) != bool(settings.tls_certfile):
        raise AtelierError("--tls-keyfile and --tls-certfile go together: give both or neither")
    if settings.tls_keyfile and settings.tls_certfile:
        _check_file(settings.tls_keyfile, "--tls-keyfile")
        _check_file(settings.tls_certfile, "--tls-certfile")
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
                settings.tls_certfile, settings.tls_keyfile
            )
        except (ssl.SSLError, OSError) as e:
            raise AtelierError(
                f"--tls-certfile/--tls-keyfile: not a certificate and its key ({e})"
            ) from None
    if settings.root_path and not settings.root_path.startswith("/"):
        settings.root_path = "/" + settings.root_path
    settings.root_path = settings.root_path.rstrip("/")
    return settings


def serve(settings: ServeSettings) -> None:
    from atelier.sd.app import create_app
    from atelier.sd.http_server import bind, make_server

    settings = resolve(settings)
    sock = bind(settings.host, settings.port)
    settings.port = sock.getsockname()[1]  # --port 0: the one the OS chose
    app = create_app(settings)
    scheme = "https" if settings.tls_certfile else "http"
    log.info(
        "serving on %s://%s:%d%s (model loads in the background; see /health)",
        scheme,
        settings.host,
        settings.port,
        settings.root_path,
    )
    make_server(app, settings).run(sockets=[sock])
