"""OpenAI's images API (`POST /v1/images/generations`), so the OpenAI SDK can call it."""

from __future__ import annotations

import re
import time
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ConfigDict

from atelier.sd.bodies import StrictBody
from atelier.sd.params import GenerationRequest
from atelier.sd.runner import b64_images, run_sync, unprocessable

router = APIRouter(tags=["openai"])


SIZE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})", re.ASCII)


class ImagesBody(StrictBody):
    model_config = ConfigDict(extra="ignore")  # model, quality, style, user ...
    prompt: str
    n: int = 1
    size: str = "1024x1024"
    response_format: str = "b64_json"


def _size(size: str) -> tuple[int, int]:
    """`WxH` in ASCII digits only (int() would also take '１０２４', ' 64' and '1_024')."""
    match = SIZE.fullmatch(size.lower())
    if match is None:
        raise unprocessable("size", "size must look like 1024x1024 (width x height)")
    return int(match[1]), int(match[2])


@router.post("/v1/images/generations")
async def generations(body: ImagesBody, request: Request) -> dict[str, Any]:
    if body.response_format != "b64_json":
        raise unprocessable("response_format", "only response_format=b64_json is served")
    w, h = _size(body.size)
    req = GenerationRequest(
        prompt=body.prompt,
        width=w,
        height=h,
        batch_size=body.n,
        names={"width": "size", "height": "size", "batch_size": "n"},
    )
    job = await run_sync(request.app.state.queue, req, request)
    return {
        "created": int(time.time()),
        "data": [{"b64_json": b, "revised_prompt": None} for b in b64_images(job)],
    }
