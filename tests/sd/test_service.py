"""The platform API, validation, auth, jobs, queue limits, loading and failures."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import pytest
from PIL import Image

from .conftest import AUTH, CODE, SMALL, make_settings


def _png(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_platform_txt2img_shape_seed_and_png_parameters(client):
    r = client.post(
        "/v1/txt2img",
        headers=AUTH,
        json={"prompt": "a red cube", "num_inference_steps": 3, **SMALL, "seed": 11},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["seed"] == 11 and body["seeds"] == [11] and len(body["images"]) == 1
    assert body["parameters"]["refiner"] is True and body["parameters"]["high_noise_frac"] == 0.8
    assert set(body["timings"]) == {"queued_s", "generate_s", "total_s"}
    image = _png(body["images"][0])
    assert image.size == (64, 64)
    text = image.info["parameters"]
    assert text.startswith(
        "a red cube\nSteps: 3, Sampler: Euler, CFG scale: 5, Seed: 11, Size: 64x64"
    )
    assert "Refiner: refiner, Refiner switch at: 0.8" in text


def test_same_seed_same_bytes_and_random_seed_returned(client):
    req = {"prompt": "a blue sphere", "num_inference_steps": 2, **SMALL, "seed": 5}
    a = client.post("/v1/txt2img", headers=AUTH, json=req).json()
    b = client.post("/v1/txt2img", headers=AUTH, json=req).json()
    assert a["images"] == b["images"]
    c = client.post("/v1/txt2img", headers=AUTH, json={**req, "seed": 6}).json()
    assert c["images"] != a["images"]
    d = client.post("/v1/txt2img", headers=AUTH, json={**req, "seed": None}).json()
    assert isinstance(d["seed"], int) and 0 <= d["seed"] < 2**32
    replay = client.post("/v1/txt2img", headers=AUTH, json={**req, "seed": d["seed"]}).json()
    assert replay["images"] == d["images"]


def test_refiner_switch_off_uses_base_only(client):
    r = client.post(
        "/v1/txt2img",
        headers=AUTH,
        json={"prompt": "x", "num_inference_steps": 2, **SMALL, "seed": 1, "refiner_switch": False},
    )
    assert r.json()["parameters"]["refiner"] is False
    assert "Refiner" not in _png(r.json()["images"][0]).info["parameters"]


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"width": 65}, "width"),
        ({"height": 4096}, "height"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"num_inference_steps": 151}, "num_inference_steps"),
        ({"high_noise_frac": 0}, "high_noise_frac"),
        ({"high_noise_frac": 1.5}, "high_noise_frac"),
        ({"sampler": "Nope"}, "sampler"),
        ({"num_images": 9}, "num_images"),
        ({"prompt": "   "}, "prompt"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_validation_names_the_field(client, patch, field):
    r = client.post("/v1/txt2img", headers=AUTH, json={"prompt": "x", **SMALL, **patch})
    assert r.status_code == 422
    assert any(d["loc"][-1] == field for d in r.json()["detail"]), r.json()


def test_auth(client):
    body = {"prompt": "x", "num_inference_steps": 1, **SMALL, "seed": 1}
    assert client.get("/health").status_code == 200  # open for load balancers
    for headers in ({}, {"X-Apig-AppCode": "wrong"}, {"Authorization": "Bearer wrong"}):
        r = client.post("/v1/txt2img", json=body, headers=headers)
        assert r.status_code == 401 and "app code" in r.json()["error"]
    for path in ("/", "/metrics", "/docs", "/sdapi/v1/samplers"):
        assert client.get(path).status_code == 401
    basic = base64.b64encode(f"user:{CODE}".encode()).decode()
    for headers in (AUTH, {"Authorization": f"Bearer {CODE}"}, {"Authorization": f"Basic {basic}"}):
        assert client.post("/v1/txt2img", json=body, headers=headers).status_code == 200


def test_health_metrics_docs_and_page(client):
    health = client.get("/health").json()
    assert health == {"status": "ready", "queue_depth": 0, "busy": False}  # state only
    assert client.head("/health").status_code == 200
    status = client.get("/v1/status", headers=AUTH).json()
    assert status["device"] == "cpu" and status["error"] is None
    assert client.get("/v1/status").status_code == 401
    metrics = client.get("/metrics", headers=AUTH).text
    assert "atelier_sd_queue_depth" in metrics and "atelier_sd_images_generated_total" in metrics
    assert "atelier_sd_job_seconds_bucket" in metrics
    schema = client.get("/openapi.json", headers=AUTH).json()
    assert {"/v1/txt2img", "/sdapi/v1/txt2img", "/v1/images/generations"} <= set(schema["paths"])
    page = client.get("/", headers=AUTH)
    assert page.status_code == 200 and 'id="generate"' in page.text


def test_oversized_body_is_rejected(client):
    r = client.post(
        "/v1/txt2img",
        headers=AUTH,
        content=b"{" + b" " * (2 << 20) + b"}",
    )
    assert r.status_code == 413


def test_async_job_progress_events_and_result(client):
    r = client.post(
        "/v1/jobs",
        headers=AUTH,
        json={"prompt": "a tree", "num_inference_steps": 4, **SMALL, "seed": 3},
    )
    assert r.status_code == 202 and r.headers["location"].startswith("/v1/jobs/")
    job_id = r.json()["id"]
    events = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=AUTH) as stream:
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
                if kind == "done":
                    break
    assert events[-1][0] == "done" and events[-1][1]["state"] == "succeeded"
    steps = [e["step"] for k, e in events if k == "progress"]
    assert steps == sorted(steps)
    final = client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()
    assert final["progress"] == 1.0 and final["result"]["seed"] == 3
    same = client.post(
        "/v1/txt2img",
        headers=AUTH,
        json={"prompt": "a tree", "num_inference_steps": 4, **SMALL, "seed": 3},
    )
    assert same.json()["images"] == final["result"]["images"]  # sync route = job underneath
    assert client.get("/v1/jobs/nope", headers=AUTH).status_code == 404


def _wait_for(predicate, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_cancel_running_and_queued_jobs(client):
    slow = {"prompt": "slow", "num_inference_steps": 60, **SMALL, "seed": 1}
    running = client.post("/v1/jobs", headers=AUTH, json=slow).json()["id"]
    _wait_for(lambda: client.get(f"/v1/jobs/{running}", headers=AUTH).json()["step"] >= 1)
    queued = client.post("/v1/jobs", headers=AUTH, json=slow).json()["id"]
    assert client.get(f"/v1/jobs/{queued}", headers=AUTH).json()["queue_position"] == 1
    assert client.delete(f"/v1/jobs/{queued}", headers=AUTH).json()["state"] == "cancelled"
    client.delete(f"/v1/jobs/{running}", headers=AUTH)
    _wait_for(lambda: client.get(f"/v1/jobs/{running}", headers=AUTH).json()["state"] != "running")
    state = client.get(f"/v1/jobs/{running}", headers=AUTH).json()
    assert state["state"] == "cancelled" and state["step"] < 60


def test_queue_limit_gives_429_with_retry_after(tiny_sdxl):
    from fastapi.testclient import TestClient

    from atelier.sd.app import create_app

    app = create_app(make_settings(tiny_sdxl, max_queue=1), load=False)  # never loads: jobs wait
    with TestClient(app) as c:
        body = {"prompt": "x", **SMALL}
        assert c.post("/v1/jobs", headers=AUTH, json=body).status_code == 202
        full = c.post("/v1/jobs", headers=AUTH, json=body)
        assert full.status_code == 429 and int(full.headers["retry-after"]) >= 1
        assert c.get("/health").json() == {"status": "loading", "queue_depth": 1, "busy": False}


def test_request_during_loading_waits_for_the_model(tiny_sdxl):
    from fastapi.testclient import TestClient

    from atelier.sd.app import create_app

    app = create_app(make_settings(tiny_sdxl), load=False)
    engine = app.state.engine
    with TestClient(app) as c:
        threading.Timer(0.5, engine.load).start()  # the model arrives while the request waits
        r = c.post(
            "/v1/txt2img",
            headers=AUTH,
            json={"prompt": "patience", "num_inference_steps": 1, **SMALL, "seed": 2},
        )
        assert r.status_code == 200 and r.json()["timings"]["queued_s"] >= 0.4


def test_failed_load_is_reported(tmp_path, tiny_sdxl):
    from fastapi.testclient import TestClient

    from atelier.sd.app import create_app

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text("{}")
    settings = make_settings(tiny_sdxl)
    settings.model = str(broken)
    app = create_app(settings)
    with TestClient(app) as c:
        assert app.state.engine.ready.wait(60)
        health = c.get("/health").json()
        assert health == {"status": "failed", "queue_depth": 0, "busy": False}  # no error text
        assert "_class_name" in c.get("/v1/status", headers=AUTH).json()["error"]
        r = c.post("/v1/txt2img", headers=AUTH, json={"prompt": "x", **SMALL})
        assert r.status_code == 503 and "failed to load" in r.json()["error"]


def test_out_of_memory_fails_the_job_and_service_goes_on(client, monkeypatch):
    import torch

    engine = client.app.state.engine
    calls = {"n": 0}
    real_class = type(engine.base)

    class OomOnce(real_class):  # this pipeline instance only, not others in the process
        def __call__(self, *a, **kw):
            calls["n"] += 1
            if calls["n"] == 1:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return super().__call__(*a, **kw)

    monkeypatch.setattr(engine.base, "__class__", OomOnce)
    body = {"prompt": "x", "num_inference_steps": 1, **SMALL, "seed": 1}
    r = client.post("/v1/txt2img", headers=AUTH, json=body)
    assert r.status_code == 500 and "ran out of memory" in r.json()["error"], r.text
    assert client.post("/v1/txt2img", headers=AUTH, json=body).status_code == 200
