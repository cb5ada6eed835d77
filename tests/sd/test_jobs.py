"""Job queue bounds: what finished jobs keep, and how long a 429 tells clients to wait."""

from __future__ import annotations

import time

from .conftest import AUTH, SMALL, make_settings


def _app(tiny_sdxl, engine, **kw):
    from fastapi.testclient import TestClient

    from atelier.sd.app import create_app

    app = create_app(make_settings(tiny_sdxl, **kw), engine=engine, load=False)
    return app, TestClient(app)


def _run(c, seed: int) -> str:
    r = c.post(
        "/v1/txt2img",
        headers=AUTH,
        json={"prompt": "keep", "num_inference_steps": 1, **SMALL, "seed": seed},
    )
    assert r.status_code == 200, r.text
    return r.json()["id"]


def test_finished_jobs_are_bounded_by_bytes(tiny_sdxl, engine):
    app, c = _app(tiny_sdxl, engine, keep_bytes=1)  # less than one PNG
    with c:
        ids = [_run(c, i) for i in range(3)]
        assert app.state.queue.kept[0] == 1  # only the newest survives the byte bound
        assert c.get(f"/v1/jobs/{ids[-1]}", headers=AUTH).status_code == 200
        assert all(c.get(f"/v1/jobs/{i}", headers=AUTH).status_code == 404 for i in ids[:-1])


def test_finished_jobs_are_bounded_by_count_and_age(tiny_sdxl, engine):
    import dataclasses

    app, c = _app(tiny_sdxl, engine, keep_jobs=2)
    queue = app.state.queue
    with c:
        ids = [_run(c, i) for i in range(3)]
        kept, kept_bytes = queue.kept
        assert kept == 2 and kept_bytes > 0
        assert c.get(f"/v1/jobs/{ids[0]}", headers=AUTH).status_code == 404
        queue._keep = dataclasses.replace(queue._keep, seconds=0.2)
        time.sleep(0.3)
        assert c.get(f"/v1/jobs/{ids[-1]}", headers=AUTH).status_code == 404  # aged out
        assert app.state.queue.kept == (0, 0)
        status = c.get("/v1/status", headers=AUTH).json()
        assert status["kept_jobs"] == 0 and status["kept_bytes"] == 0


def test_retry_after_is_a_capped_median_of_recent_jobs(tiny_sdxl, engine):
    from atelier.sd.jobs import RETRY_AFTER_RANGE

    app, _c = _app(tiny_sdxl, engine, max_queue=1)
    queue = app.state.queue
    assert queue._retry_after() == 5  # nothing measured yet
    queue._job_times.extend([2.2, 1.9, 2.4, 2.0, 1992.0])  # one slow outlier
    assert queue._retry_after() == 3
    queue._job_times.extend([5000.0] * 20)
    assert queue._retry_after() == RETRY_AFTER_RANGE[1]
    queue._job_times.extend([0.01] * 20)
    assert queue._retry_after() == RETRY_AFTER_RANGE[0]
    queue.close()


def test_eta_uses_the_median_step_time(tiny_sdxl, engine):
    app, _c = _app(tiny_sdxl, engine)
    queue = app.state.queue
    queue._step_times.extend([30.0] + [0.1] * 9)  # one warm-up step
    assert abs(queue.step_seconds - 0.1) < 1e-9
    queue.close()


def test_worker_survives_a_listener_whose_loop_closed(tiny_sdxl, engine):
    import asyncio

    from atelier.sd.jobs import Job
    from atelier.sd.params import GenerationRequest

    job = Job(GenerationRequest(prompt="x"))
    loop = asyncio.new_event_loop()
    event = loop.run_until_complete(_listen(job))
    loop.close()
    job.touch()  # must not raise in the worker thread
    assert event not in [ev for _, ev in job._listeners]


async def _listen(job):
    return job.listen()
