"""The platform guide's API (`POST /v1/txt2img`) and async jobs (`/v1/jobs`)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ConfigDict

from atelier.sd.bodies import StrictBody
from atelier.sd.jobs import TERMINAL, Job
from atelier.sd.params import GenerationRequest
from atelier.sd.runner import platform_result, run_sync, submit

router = APIRouter(tags=["platform"])


class Txt2ImgBody(StrictBody):
    """The guide's parameter table; unknown fields are refused so typos surface."""

    model_config = ConfigDict(extra="forbid")
    prompt: str
    negative_prompt: str = ""
    num_inference_steps: int = 40
    height: int = 1024
    width: int = 1024
    high_noise_frac: float = 0.8
    refiner_switch: bool = True
    seed: int | None = None
    guidance_scale: float = 5.0
    sampler: str = "Euler"
    num_images: int = 1

    def to_request(self) -> GenerationRequest:
        return GenerationRequest(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            steps=self.num_inference_steps,
            width=self.width,
            height=self.height,
            cfg_scale=self.guidance_scale,
            sampler=self.sampler,
            seed=None if self.seed is None or self.seed == -1 else self.seed,
            batch_size=self.num_images,
            refiner=self.refiner_switch,
            high_noise_frac=self.high_noise_frac,
            names={
                "steps": "num_inference_steps",
                "cfg_scale": "guidance_scale",
                "batch_size": "num_images",
            },
        )


def job_view(request: Request, job: Job) -> dict[str, Any]:
    queue = request.app.state.queue
    eta = queue.eta(job)
    return {
        "id": job.id,
        "state": job.state,
        "step": job.step,
        "total": job.total,
        "progress": round(job.progress, 4),
        "eta_s": None if eta is None else round(eta, 2),
        "queue_position": queue.position(job),
        "created": job.created,
        "started": job.started,
        "finished": job.finished,
        "error": job.error,
        "result": platform_result(job) if job.state == "succeeded" else None,
    }


@router.post("/v1/txt2img")
async def txt2img(body: Txt2ImgBody, request: Request) -> dict[str, Any]:
    job = await run_sync(request.app.state.queue, body.to_request(), request)
    return platform_result(job)


@router.post("/v1/jobs", status_code=202)
async def create_job(body: Txt2ImgBody, request: Request) -> JSONResponse:
    queue = request.app.state.queue
    job = submit(queue, body.to_request(), request.app.state.settings)
    view = job_view(request, job)
    return JSONResponse(view, 202, headers={"Location": f"/v1/jobs/{job.id}"})


def _job(request: Request, job_id: str) -> Job:
    job = request.app.state.queue.get(job_id)
    if job is None:
        raise HTTPException(404, detail="no such job (finished jobs are kept for a while)")
    return job


@router.get("/v1/jobs/{job_id}")
async def get_job(job_id: str, request: Request) -> dict[str, Any]:
    return job_view(request, _job(request, job_id))


@router.delete("/v1/jobs/{job_id}")
async def cancel_job(job_id: str, request: Request) -> dict[str, Any]:
    job = _job(request, job_id)
    if job.state not in TERMINAL:
        request.app.state.queue.cancel(job)
    return {"id": job.id, "state": job.state if job.state in TERMINAL else "cancelling"}


@router.get("/v1/jobs/{job_id}/events")
async def job_events(job_id: str, request: Request) -> StreamingResponse:
    """Server-sent events: one `progress` event per change, then a final `done`."""
    job = _job(request, job_id)

    async def stream() -> Any:
        event = job.listen()
        seen = -1
        try:
            while True:
                if job.version != seen:
                    seen = job.version
                    view = job_view(request, job)
                    final = job.state in TERMINAL
                    if final:
                        view["result"] = None  # fetch images with GET /v1/jobs/{id}
                    kind = "done" if final else "progress"
                    yield f"event: {kind}\ndata: {json.dumps(view)}\n\n"
                    if final:
                        return
                try:
                    await asyncio.wait_for(event.wait(), 15)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                event.clear()
        finally:
            job.unlisten(event)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
