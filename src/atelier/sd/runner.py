"""What every synchronous route does: validate, queue, wait, and map failures to HTTP."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse

from atelier.sd.jobs import TERMINAL, Job, JobQueue, QueueFull
from atelier.sd.params import FieldError, GenerationRequest, check

log = logging.getLogger("atelier.sd.jobs")


class ServiceError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.message}, self.status, headers=self.headers)


def unprocessable(field_name: str, message: str) -> HTTPException:
    """422 in FastAPI's own shape, so clients parse it like any validation error."""
    return HTTPException(
        422, detail=[{"loc": ["body", field_name], "msg": message, "type": "value_error"}]
    )


def field_error(e: FieldError) -> HTTPException:
    return unprocessable(e.field, e.message)


def submit(queue: JobQueue, req: GenerationRequest, settings: Any) -> Job:
    try:
        check(req, settings.max_size, queue.engine.samplers, settings.max_pixels)
    except FieldError as e:
        raise field_error(e) from None
    if queue.engine.state == "failed":
        raise ServiceError(503, f"model failed to load: {queue.engine.error}")
    try:
        return queue.submit(req)
    except QueueFull as e:
        raise ServiceError(
            429, "the queue is full; retry later", {"Retry-After": str(e.retry_after)}
        ) from None


async def wait_done(job: Job, timeout: float | None = None) -> None:
    """Wait until the job is finished, or `timeout` seconds passed."""
    event = job.listen()
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while job.state not in TERMINAL:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            try:
                await asyncio.wait_for(event.wait(), left)
            except TimeoutError:
                return
            event.clear()
    finally:
        job.unlisten(event)


async def client_gone(request: Request) -> None:
    """Return once the client has closed its connection.

    The body has been read by then (the guard middleware buffers it), so the next ASGI
    message the server has for this request is `http.disconnect`."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _wait_loaded(queue: JobQueue, load_wait: float) -> bool:
    """Poll rather than block a thread: hundreds of waiting requests must not each hold
    one of the few default-executor threads for up to ten minutes."""
    deadline = time.monotonic() + load_wait
    while not queue.engine.ready.is_set():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def run_sync(queue: JobQueue, req: GenerationRequest, request: Request) -> Job:
    """Submit and wait; a client that goes away cancels its job (queued: dropped,
    running: stopped at the next step), so abandoned retries cannot fill the queue.
    A request during model loading waits up to `load_wait_s` for the model."""
    settings = request.app.state.settings
    job = submit(queue, req, settings)
    gone = asyncio.ensure_future(client_gone(request))
    loaded = asyncio.ensure_future(_wait_loaded(queue, settings.load_wait_s))
    finished = asyncio.ensure_future(wait_done(job))
    try:
        await asyncio.wait({gone, loaded}, return_when=asyncio.FIRST_COMPLETED)
        if not gone.done() and not loaded.result():
            queue.cancel(job, "the model did not load in time")
            raise ServiceError(
                503, "the model is still loading; retry shortly", {"Retry-After": "10"}
            )
        if not gone.done():
            await asyncio.wait({gone, finished}, return_when=asyncio.FIRST_COMPLETED)
        if gone.done() and job.state not in TERMINAL:
            queue.cancel(job, "the client disconnected")
            log.info('{"event": "client_gone", "id": "%s"}', job.id)
            raise ServiceError(499, "the client disconnected")
    finally:
        for task in (gone, loaded, finished):  # none may outlive the request
            task.cancel()
    if job.state == "failed":
        status = 503 if queue.engine.state == "failed" else 500
        raise ServiceError(status, job.error or "generation failed")
    if job.state == "cancelled":
        raise ServiceError(409, "the job was cancelled")
    return job


def b64_images(job: Job) -> list[str]:
    assert job.result is not None
    return [base64.b64encode(im.png).decode("ascii") for im in job.result.images]


def platform_result(job: Job) -> dict[str, Any]:
    """The platform API's response; also the `result` of GET /v1/jobs/{id}."""
    assert job.result is not None
    started = job.started or job.created
    finished = job.finished or time.time()
    return {
        "id": job.id,
        "images": b64_images(job),
        "seed": job.result.seed,
        "seeds": [im.seed for im in job.result.images],
        "parameters": job.result.params,
        "timings": {
            "queued_s": round(started - job.created, 4),
            "generate_s": round(job.result.seconds, 4),
            "total_s": round(finished - job.created, 4),
        },
    }
