"""OpenAI's images API (`POST /v1/images/generations`), so the OpenAI SDK can call it."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from atelier.sd.params import GenerationRequest
from atelier.sd.runner import b64_images, run_sync, unprocessable

router = APIRouter(tags=["openai"])


class ImagesBody(BaseModel):
    model_config = ConfigDict(extra="ignore")  # model, quality, style, user ...
    prompt: str = Field(..., max_length=10000)
    n: int = Field(1, ge=1, le=10)
    size: str = "1024x1024"
    response_format: str = "b64_json"


def _size(size: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in size.lower().split("x"))
    except ValueError:
        raise unprocessable("size", f"size must look like 1024x1024, got {size!r}") from None
    return w, h


@router.post("/v1/images/generations")
async def generations(body: ImagesBody, request: Request) -> dict[str, Any]:
    if body.response_format != "b64_json":
        raise unprocessable("response_format", "only response_format=b64_json is served")
    w, h = _size(body.size)
    s = request.app.state.settings
    req = GenerationRequest(
        prompt=body.prompt,
        width=w,
        height=h,
        batch_size=body.n,
        names={"width": "size", "height": "size", "batch_size": "n"},
    )
    job = await run_sync(request.app.state.queue, req, s.max_size, s.load_wait_s)
    return {
        "created": int(time.time()),
        "data": [{"b64_json": b, "revised_prompt": None} for b in b64_images(job)],
    }
