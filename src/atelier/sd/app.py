"""The FastAPI application: auth, limits, health, metrics, the web page and the APIs.

`create_app` takes an engine that may still be loading: the model loads in the
background, `/health` reports it, and requests wait for it instead of failing.
"""

from __future__ import annotations

import base64
import hmac
import logging
import threading
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from atelier.sd import api_a1111, api_openai, api_platform
from atelier.sd.engine import Engine, model_name
from atelier.sd.jobs import JobQueue
from atelier.sd.metrics import Metrics
from atelier.sd.runner import ServiceError
from atelier.sd.settings import ServeSettings

log = logging.getLogger("atelier.sd.http")
OPEN_PATHS = {"/health"}


def _presented_code(request: Request) -> str | None:
    code = request.headers.get("x-apig-appcode")
    if code:
        return code
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":  # browsers and A1111 clients' --api-auth: password = code
        try:
            return base64.b64decode(value.strip()).decode("utf-8").partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return None
    return None


def create_app(settings: ServeSettings, engine: Engine | None = None, load: bool = True) -> FastAPI:
    engine = engine or Engine(settings)
    metrics = Metrics()
    queue = JobQueue(engine, settings.max_queue, settings.keep_jobs, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        if load and not engine.ready.is_set() and engine.state == "loading":
            threading.Thread(target=engine.load, name="atelier-sd-load", daemon=True).start()
        yield
        queue.close()

    app = FastAPI(
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
    expected = settings.app_code.encode("utf-8") if settings.app_code else None

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        t0 = time.perf_counter()
        path = request.url.path
        if expected is not None and path not in OPEN_PATHS:
            given = (_presented_code(request) or "").encode("utf-8")
            if not hmac.compare_digest(given, expected):
                metrics.requests.labels("auth", "401").inc()
                return JSONResponse(
                    {
                        "error": "missing or wrong app code: send X-Apig-AppCode: CODE "
                        "or Authorization: Bearer CODE"
                    },
                    401,
                    headers={"WWW-Authenticate": 'Basic realm="atelier"'},
                )
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            return JSONResponse(
                {"error": f"request body over {settings.max_body_bytes} bytes"}, 413
            )
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.requests.labels(getattr(route, "path", "other"), str(response.status_code)).inc()
        log.info(
            '{"event": "http", "method": "%s", "path": "%s", "status": %d, "ms": %.1f}',
            request.method,
            path,
            response.status_code,
            (time.perf_counter() - t0) * 1000,
        )
        return response

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return exc.response()

    @app.get("/health", tags=["service"])
    async def health() -> dict[str, Any]:
        return {
            "status": engine.state,
            "error": engine.error,
            "device": engine.device if engine.state == "ready" else None,
            "queue_depth": queue.depth,
            "running": queue.current.id if queue.current else None,
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
