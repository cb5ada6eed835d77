"""The SD suite's step of `atelier demo`: a tiny SDXL behind the real HTTP service.

Builds a tiny random-weight base + refiner, serves it on loopback with an app
code, and calls all three APIs and a job the way their clients do.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from pathlib import Path

from rich.console import Console


def run(out: str | Path) -> None:
    import httpx

    from atelier.sd.app import create_app
    from atelier.sd.http_server import bind, make_server
    from atelier.sd.settings import ServeSettings
    from atelier.sd.tiny import build_tiny_sdxl

    console = Console()
    out = Path(out) / "sd"
    for noisy in ("httpx", "atelier.sd.http", "atelier.sd.jobs"):  # per-request lines
        logging.getLogger(noisy).setLevel(logging.WARNING)
    console.rule("[bold]sd: tiny SDXL base + refiner behind the service")
    base, refiner = build_tiny_sdxl(out / "model")
    sock = bind("127.0.0.1", 0)  # the server `atelier sd serve` runs, on a free port
    port = sock.getsockname()[1]
    settings = ServeSettings(model=str(base), refiner=str(refiner), port=port, app_code="demo")
    app = create_app(settings)
    server = make_server(app, settings)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, headers={"X-Apig-AppCode": "demo"}, timeout=300) as c:
            while not server.started:
                time.sleep(0.05)
            console.print(f"service on {url}: /health -> {c.get('/health').json()['status']}")
            small = {"width": 64, "height": 64}
            calls = [
                (
                    "platform  POST /v1/txt2img",
                    "/v1/txt2img",
                    {
                        "prompt": "a lighthouse at dusk",
                        "num_inference_steps": 8,
                        **small,
                        "seed": 1,
                    },
                ),
                (
                    "A1111     POST /sdapi/v1/txt2img",
                    "/sdapi/v1/txt2img",
                    {
                        "prompt": "a lighthouse at dusk",
                        "steps": 8,
                        **small,
                        "seed": 1,
                        "sampler_name": "DPM++ 2M Karras",
                        "refiner_checkpoint": "refiner",
                    },
                ),
                (
                    "OpenAI    POST /v1/images/generations",
                    "/v1/images/generations",
                    {"prompt": "a lighthouse at dusk", "n": 1, "size": "64x64"},
                ),
            ]
            for i, (title, path, body) in enumerate(calls):
                t0 = time.perf_counter()
                r = c.post(path, json=body)
                r.raise_for_status()
                data = r.json()
                images = data.get("images") or [d["b64_json"] for d in data.get("data", [])]
                target = out / f"image-{i}.png"
                target.write_bytes(base64.b64decode(images[0]))
                console.print(
                    f"{title}: {r.status_code} in {time.perf_counter() - t0:.2f} s -> {target}"
                )
            job = c.post("/v1/jobs", json=calls[0][2]).json()
            while (state := c.get(f"/v1/jobs/{job['id']}").json())["state"] not in (
                "succeeded",
                "failed",
                "cancelled",
            ):
                time.sleep(0.1)
            console.print(
                f"jobs      POST /v1/jobs -> {state['state']}, "
                f"step {state['step']}/{state['total']}"
            )
            unauth = httpx.post(f"{url}/v1/txt2img", json=calls[0][2]).status_code
            console.print(f"without the app code: HTTP {unauth}")
    finally:
        server.should_exit = True
        thread.join(10)
