"""AUTOMATIC1111's `/sdapi/v1/*` as its clients (e.g. `webuiapi`) call it."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ConfigDict

from atelier.sd.bodies import StrictBody, has_unpaired_surrogate
from atelier.sd.engine import model_name
from atelier.sd.params import GenerationRequest
from atelier.sd.runner import b64_images, run_sync, unprocessable
from atelier.sd.samplers import SAMPLERS, canonical

router = APIRouter(tags=["automatic1111"])


class A1111Txt2Img(StrictBody):
    """A1111's txt2img fields; fields this engine has no use for are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")
    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1
    steps: int = 20
    width: int = 512
    height: int = 512
    cfg_scale: float = 7.0
    sampler_name: str | None = None
    sampler_index: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    refiner_checkpoint: str | None = None
    refiner_switch_at: float = 0.8
    send_images: bool = True


def _models(settings: Any) -> list[dict[str, Any]]:
    out = []
    for path in (settings.model, settings.refiner):
        if path:
            name = model_name(path)
            out.append(
                {
                    "title": name,
                    "model_name": name,
                    "hash": None,
                    "sha256": None,
                    "filename": str(path),
                    "config": None,
                }
            )
    return out


def _refiner_wanted(body: A1111Txt2Img, settings: Any) -> bool:
    name = (body.refiner_checkpoint or "").strip()
    if not name or name.lower() == "none":
        return False
    loaded = model_name(settings.refiner)
    if loaded is None or name.split(" [")[0] not in (loaded, str(settings.refiner)):
        raise unprocessable(
            "refiner_checkpoint", f"that refiner is not loaded; available: {loaded or 'none'}"
        )
    return True


@router.post("/sdapi/v1/txt2img")
async def txt2img(body: A1111Txt2Img, request: Request) -> dict[str, Any]:
    s = request.app.state.settings
    use_refiner = _refiner_wanted(body, s)
    req = GenerationRequest(
        prompt=body.prompt,
        negative_prompt=body.negative_prompt,
        steps=body.steps,
        width=body.width,
        height=body.height,
        cfg_scale=body.cfg_scale,
        sampler=canonical(body.sampler_name or body.sampler_index),
        seed=None if body.seed == -1 else body.seed,
        batch_size=body.batch_size,
        n_iter=body.n_iter,
        refiner=use_refiner,
        high_noise_frac=body.refiner_switch_at,
        names={"sampler": "sampler_name", "high_noise_frac": "refiner_switch_at"},
    )
    start = time.strftime("%Y%m%d%H%M%S")
    job = await run_sync(request.app.state.queue, req, request)
    result = job.result
    assert result is not None
    info = {
        "prompt": req.prompt,
        "all_prompts": [req.prompt] * len(result.images),
        "negative_prompt": req.negative_prompt,
        "all_negative_prompts": [req.negative_prompt] * len(result.images),
        "seed": result.seed,
        "all_seeds": [im.seed for im in result.images],
        "subseed": -1,
        "all_subseeds": [-1] * len(result.images),
        "subseed_strength": 0,
        "width": req.width,
        "height": req.height,
        "sampler_name": req.sampler,
        "cfg_scale": req.cfg_scale,
        "steps": req.steps,
        "batch_size": req.batch_size,
        "sd_model_name": model_name(s.model),
        "refiner_checkpoint": model_name(s.refiner) if use_refiner else None,
        "refiner_switch_at": req.high_noise_frac if use_refiner else None,
        "job_timestamp": start,
        "infotexts": [im.infotext for im in result.images],
        "index_of_first_image": 0,
    }
    return {
        "images": b64_images(job) if body.send_images else [],
        "parameters": body.model_dump(),
        "info": json.dumps(info),
    }


@router.get("/sdapi/v1/progress")
async def progress(request: Request) -> dict[str, Any]:
    queue = request.app.state.queue
    job = queue.current
    if job is None:
        return {
            "progress": 0.0,
            "eta_relative": 0.0,
            "current_image": None,
            "textinfo": None,
            "state": {
                "skipped": False,
                "interrupted": False,
                "job": "",
                "job_count": queue.depth,
                "job_timestamp": "0",
                "job_no": 0,
                "sampling_step": 0,
                "sampling_steps": 0,
            },
        }
    return {
        "progress": round(job.progress, 4),
        "eta_relative": round(queue.eta(job) or 0.0, 2),
        "current_image": None,
        "textinfo": None,
        "state": {
            "skipped": False,
            "interrupted": job.cancel.is_set(),
            "job": job.id,
            "job_count": queue.depth + 1,
            "job_timestamp": str(int(job.created)),
            "job_no": 0,
            "sampling_step": job.step,
            "sampling_steps": job.total,
        },
    }


@router.post("/sdapi/v1/interrupt")
async def interrupt(request: Request) -> dict[str, Any]:
    queue = request.app.state.queue
    job = queue.current
    if job is not None:
        queue.cancel(job)
    return {}


@router.get("/sdapi/v1/options")
async def get_options(request: Request) -> dict[str, Any]:
    return request.app.state.options


def _checkpoint(key: str, value: Any, loaded: str | None, optional: bool) -> str | None:
    """A checkpoint option must name what is loaded (A1111 titles carry ' [hash]')."""
    if not isinstance(value, str):
        raise unprocessable(key, f"{key} must be a string (a checkpoint title)")
    name = value.split(" [")[0].strip()
    if optional and name.lower() in ("", "none"):
        return None
    if name != loaded:
        raise unprocessable(key, f"only the loaded checkpoint {loaded!r} can be selected")
    return name


@router.post("/sdapi/v1/options")
async def set_options(body: dict[str, Any], request: Request) -> dict[str, Any]:
    """Selecting the loaded checkpoints is accepted; other A1111 options have no effect
    here and are not stored (A1111 itself refuses unknown keys), so GET stays truthful."""
    s = request.app.state.settings
    for key, value in body.items():
        if has_unpaired_surrogate(key) or has_unpaired_surrogate(value):
            raise unprocessable("options", "an option contains an unpaired UTF-16 surrogate")
    update: dict[str, Any] = {}
    if "sd_model_checkpoint" in body and body["sd_model_checkpoint"] is not None:
        update["sd_model_checkpoint"] = _checkpoint(
            "sd_model_checkpoint", body["sd_model_checkpoint"], model_name(s.model), False
        )
    if "sd_checkpoint_refiner" in body and body["sd_checkpoint_refiner"] is not None:
        _checkpoint(
            "sd_checkpoint_refiner", body["sd_checkpoint_refiner"], model_name(s.refiner), True
        )
    if "samples_format" in body and body["samples_format"] != "png":
        raise unprocessable("samples_format", "only png is served")
    request.app.state.options.update(update)
    return {}


@router.get("/sdapi/v1/sd-models")
async def sd_models(request: Request) -> list[dict[str, Any]]:
    return _models(request.app.state.settings)


@router.get("/sdapi/v1/samplers")
async def samplers() -> list[dict[str, Any]]:
    return [
        {"name": n, "aliases": aliases, "options": {}} for n, (_, _, aliases) in SAMPLERS.items()
    ]


@router.get("/sdapi/v1/scripts")
async def scripts() -> dict[str, list[str]]:
    return {"txt2img": [], "img2img": []}


@router.get("/internal/ping")
async def ping() -> dict[str, Any]:
    return {}
