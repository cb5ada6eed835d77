"""What every synchronous route does: validate, queue, wait, and map failures to HTTP."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse

from atelier.sd.jobs import TERMINAL, Job, JobQueue, QueueFull
from atelier.sd.params import FieldError, GenerationRequest, check


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


def submit(queue: JobQueue, req: GenerationRequest, max_size: int) -> Job:
    try:
        check(req, max_size, queue.engine.samplers)
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


async def run_sync(queue: JobQueue, req: GenerationRequest, max_size: int, load_wait: float) -> Job:
    """Submit and wait; a request during model loading waits up to `load_wait` seconds."""
    job = submit(queue, req, max_size)
    if not queue.engine.ready.is_set():
        loaded = await asyncio.to_thread(queue.engine.ready.wait, load_wait)
        if not loaded:
            queue.cancel(job)
            raise ServiceError(
                503, "the model is still loading; retry shortly", {"Retry-After": "10"}
            )
    await wait_done(job)
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
