"""`atelier sd serve`: check the settings, then run the app under uvicorn."""

from __future__ import annotations

import logging
import os

from atelier.core.errors import AtelierError
from atelier.sd.engine import check_model_path
from atelier.sd.settings import ServeSettings

log = logging.getLogger("atelier.sd")


def resolve(settings: ServeSettings) -> ServeSettings:
    """Fail fast on what can be checked before the (slow) model load."""
    check_model_path(settings.model, "--model")
    if settings.refiner:
        check_model_path(settings.refiner, "--refiner")
    if settings.app_code is None:
        settings.app_code = os.environ.get("ATELIER_APP_CODE") or None
    if settings.listen:
        settings.host = "0.0.0.0"
        if not settings.app_code:
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
    return settings


def serve(settings: ServeSettings) -> None:
    import uvicorn

    from atelier.sd.app import create_app

    app = create_app(resolve(settings))
    log.info(
        "serving on http://%s:%d (model loads in the background; see /health)",
        settings.host,
        settings.port,
    )
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
