"""The FastAPI application: the guard, health, status, metrics, the web page and the APIs.

`create_app` takes an engine that may still be loading: the model loads in the
background, `/health` reports it, and requests wait for it instead of failing.
"""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from atelier.sd import api_a1111, api_openai, api_platform
from atelier.sd.engine import Engine, model_name
from atelier.sd.guard import Guard
from atelier.sd.jobs import JobQueue, Retention
from atelier.sd.metrics import Metrics
from atelier.sd.runner import ServiceError
from atelier.sd.settings import ServeSettings

log = logging.getLogger("atelier.sd.http")
MAX_MESSAGE = 300


def validation_detail(exc: RequestValidationError) -> list[dict[str, Any]]:
    """FastAPI's 422 shape without `input` and `ctx`: echoing the caller's value back made
    a 3 MiB body answer with 3 MiB, and a lone surrogate made the 422 itself a 500."""
    out = []
    for err in exc.errors():
        loc = [p if isinstance(p, int) else str(p)[:100] for p in err.get("loc", ())]
        out.append(
            {
                "loc": loc,
                "msg": str(err.get("msg", "invalid"))[:MAX_MESSAGE],
                "type": str(err.get("type", "value_error")),
            }
        )
    return out


def create_app(settings: ServeSettings, engine: Engine | None = None, load: bool = True) -> FastAPI:
    engine = engine or Engine(settings)
    metrics = Metrics()
    keep = Retention(settings.keep_jobs, settings.keep_bytes, settings.keep_seconds)
    queue = JobQueue(engine, settings.max_queue, keep, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        if load and not engine.ready.is_set() and engine.state == "loading":
            threading.Thread(target=engine.load, name="atelier-sd-load", daemon=True).start()
        yield
        queue.close()

    # Swagger UI and ReDoc from files inside a PyPI package: /docs works offline
    app = FastAPIOffline(
        title="Atelier SDXL service",
        description="SDXL base + refiner: platform API, AUTOMATIC1111 API, OpenAI images API.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.queue = queue
    app.state.metrics = metrics
    app.state.options = {
        "sd_model_checkpoint": model_name(settings.model),
        "sd_checkpoint_refiner": model_name(settings.refiner),
        "samples_format": "png",
    }
    app.add_middleware(Guard, settings=settings, metrics=metrics)
    if settings.cors_origins or settings.cors_origin_regex:
        from starlette.middleware.cors import CORSMiddleware

        # outside the guard: browsers send preflights without credentials
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_origin_regex=settings.cors_origin_regex,
            allow_methods=["*"],
            allow_headers=["*"],
        )

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_detail(exc)}, 422)

    @app.get("/health", tags=["service"])
    async def health() -> dict[str, Any]:
        """Open to anyone (load balancers): state only. Details are on /v1/status."""
        return {
            "status": engine.state,
            "queue_depth": queue.depth,
            "busy": queue.current is not None,
        }

    # load balancers probe with HEAD too
    app.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)

    @app.get("/v1/status", tags=["service"])
    async def status() -> dict[str, Any]:
        """What /health leaves out, for authenticated callers: the load error, the device,
        the running job and what finished jobs hold."""
        kept_jobs, kept_bytes = queue.kept
        return {
            "status": engine.state,
            "error": engine.error,
            "device": engine.device if engine.state == "ready" else None,
            "load_seconds": round(engine.load_seconds, 2),
            "queue_depth": queue.depth,
            "running": queue.current.id if queue.current else None,
            "kept_jobs": kept_jobs,
            "kept_bytes": kept_bytes,
            "step_seconds": queue.step_seconds,
        }

    @app.get("/metrics", tags=["service"])
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        html = resources.files("atelier.sd").joinpath("web/index.html").read_text("utf-8")
        return HTMLResponse(html)

    app.include_router(api_platform.router)
    app.include_router(api_a1111.router)
    app.include_router(api_openai.router)
    return app
