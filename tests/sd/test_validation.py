"""Hostile and careless request bodies: every one is a 422 naming the field, never a 500,
never an echo of what was sent, in all three APIs."""

from __future__ import annotations

import json

import pytest

from .conftest import AUTH, SMALL

PLATFORM = "/v1/txt2img"
A1111 = "/sdapi/v1/txt2img"
OPENAI = "/v1/images/generations"
SURROGATE = '"\\ud800"'  # a lone surrogate as JSON text: valid JSON, invalid Unicode


def _post_raw(client, path: str, text: str | bytes):
    return client.post(path, headers={**AUTH, "content-type": "application/json"}, content=text)


def _fields(r) -> list[str]:
    return [d["loc"][-1] for d in r.json()["detail"]]


def _assert_422(r, field: str) -> None:
    assert r.status_code == 422, (r.status_code, r.text[:300])
    assert field in _fields(r), r.json()
    for d in r.json()["detail"]:
        assert set(d) == {"loc", "msg", "type"}  # no `input`, no `ctx`


@pytest.mark.parametrize(
    ("path", "patch", "field"),
    [
        (PLATFORM, {"num_inference_steps": True}, "num_inference_steps"),  # bools are not ints
        (PLATFORM, {"num_inference_steps": 20.0}, "num_inference_steps"),
        (PLATFORM, {"num_inference_steps": "20"}, "num_inference_steps"),
        (PLATFORM, {"width": True}, "width"),
        (PLATFORM, {"seed": False}, "seed"),
        (PLATFORM, {"seed": -5}, "seed"),
        (PLATFORM, {"seed": 2**32}, "seed"),
        (PLATFORM, {"seed": 10**30}, "seed"),
        (PLATFORM, {"num_images": True}, "num_images"),
        (PLATFORM, {"refiner_switch": 1}, "refiner_switch"),
        (PLATFORM, {"guidance_scale": -1}, "guidance_scale"),
        (PLATFORM, {"guidance_scale": True}, "guidance_scale"),
        (PLATFORM, {"high_noise_frac": -0.5}, "high_noise_frac"),
        (PLATFORM, {"prompt": 5}, "prompt"),
        (PLATFORM, {"prompt": "x" * 9000}, "prompt"),
        (PLATFORM, {"negative_prompt": "x" * 9000}, "negative_prompt"),
        (PLATFORM, {"prompt": "a\x00b"}, "prompt"),
        (PLATFORM, {"sampler": "s" * 100_000}, "sampler"),
        (PLATFORM, {"num_images": 8, "width": 2048, "height": 2048}, "num_images"),
        (A1111, {"steps": True}, "steps"),
        (A1111, {"batch_size": True}, "batch_size"),
        (A1111, {"n_iter": 0}, "n_iter"),
        (A1111, {"n_iter": 17}, "n_iter"),
        (A1111, {"cfg_scale": -3.0}, "cfg_scale"),
        (A1111, {"seed": -2}, "seed"),
        (A1111, {"seed": 1.5}, "seed"),
        (A1111, {"refiner_switch_at": 0}, "refiner_switch_at"),
        (A1111, {"prompt": "x" * 9000}, "prompt"),
        (A1111, {"sampler_name": ["Euler"]}, "sampler_name"),
        (A1111, {"sampler_name": "nope"}, "sampler_name"),
        (OPENAI, {"n": True}, "n"),
        (OPENAI, {"n": 9}, "n"),
        (OPENAI, {"size": "６４x６４"}, "size"),  # fullwidth digits int() would accept
        (OPENAI, {"size": " 64x64"}, "size"),
        (OPENAI, {"size": "9" * 5000 + "x64"}, "size"),
        (OPENAI, {"size": 64}, "size"),
    ],
)
def test_field_mistakes_are_422_naming_the_field(client, path, patch, field):
    body = {"prompt": "x", **SMALL, **patch}
    if path == OPENAI:
        body = {"prompt": "x", "size": "64x64", **patch}
    _assert_422(client.post(path, headers=AUTH, json=body), field)


@pytest.mark.parametrize("path", [PLATFORM, A1111, OPENAI])
@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_refused(client, path, number):
    field = {PLATFORM: "guidance_scale", A1111: "cfg_scale", OPENAI: "n"}[path]
    text = f'{{"prompt": "x", "{field}": {number}}}'
    _assert_422(_post_raw(client, path, text), field)


@pytest.mark.parametrize("path", [PLATFORM, A1111, OPENAI])
@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_lone_surrogate_is_a_clean_422(client, path, field):
    if path == OPENAI and field == "negative_prompt":
        field = "size"
    text = f'{{"prompt": "ok", "{field}": {SURROGATE}}}'
    r = _post_raw(client, path, text)
    _assert_422(r, field)
    assert "unicode" in r.text.lower() or "surrogate" in r.text


def test_422_never_echoes_the_input(client):
    big = "Z" * 500_000
    r = client.post(PLATFORM, headers=AUTH, json={"prompt": big, "colour": big, **SMALL})
    assert r.status_code == 422 and len(r.content) < 2000 and "ZZZZ" not in r.text


@pytest.mark.parametrize(
    "text",
    [
        "{",  # truncated JSON
        '{"prompt": 1' + "0" * 5000 + "}",  # an integer past Python's digit limit
        "[" * 100_000 + "]" * 100_000,  # nesting past the recursion limit
        b'{"prompt": "\xff"}',  # not UTF-8
        "",
        "null",
        "[]",
    ],
)
@pytest.mark.parametrize("path", [PLATFORM, A1111, OPENAI, "/sdapi/v1/options"])
def test_broken_json_is_4xx_not_500(client, path, text):
    r = _post_raw(client, path, text)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:200])
    assert len(r.content) < 5000


def test_unicode_everywhere_round_trips(client):
    """Emoji, RTL, combining marks, CJK and astral-plane text in every string field:
    accepted, written to the PNG `parameters` chunk and answered as JSON."""
    prompt = "猫 🐈‍⬛ שָׁלוֹם e\u0301 \U0001d54f\u200d"
    r = client.post(
        PLATFORM,
        headers=AUTH,
        json={"prompt": prompt, "negative_prompt": prompt, "num_inference_steps": 1, **SMALL},
    )
    assert r.status_code == 200, r.text[:300]
    assert r.json()["parameters"]["prompt"] == prompt
    a = client.post(
        A1111,
        headers=AUTH,
        json={"prompt": prompt, "steps": 1, **SMALL, "sampler_name": "euler", "styles": [prompt]},
    )
    assert a.status_code == 200 and json.loads(a.json()["info"])["prompt"] == prompt


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"sd_model_checkpoint": 5}, "sd_model_checkpoint"),
        ({"sd_model_checkpoint": ["base"]}, "sd_model_checkpoint"),
        ({"sd_model_checkpoint": {"a": 1}}, "sd_model_checkpoint"),
        ({"sd_model_checkpoint": "other"}, "sd_model_checkpoint"),
        ({"sd_checkpoint_refiner": 3}, "sd_checkpoint_refiner"),
        ({"samples_format": "jpg"}, "samples_format"),
    ],
)
def test_a1111_options_mistakes(client, body, field):
    _assert_422(client.post("/sdapi/v1/options", headers=AUTH, json=body), field)


def test_a1111_options_accept_titles_and_store_nothing_unknown(client):
    ok = {"sd_model_checkpoint": "base [abc123]", "CLIP_stop_at_last_layers": 2, "x" * 50: [1]}
    assert client.post("/sdapi/v1/options", headers=AUTH, json=ok).json() == {}
    got = client.get("/sdapi/v1/options", headers=AUTH).json()
    assert got["sd_model_checkpoint"] == "base" and "CLIP_stop_at_last_layers" not in got
    r = _post_raw(client, "/sdapi/v1/options", f'{{"k": {SURROGATE}}}')
    assert r.status_code == 422
    assert client.get("/sdapi/v1/options", headers=AUTH).status_code == 200  # still encodable


def test_every_route_answers_head_and_options_without_500(client):
    """No method on any route is a 500; unauthenticated, everything but /health is 401."""
    schema = client.get("/openapi.json", headers=AUTH).json()["paths"]
    paths = sorted(set(schema) | {getattr(r, "path", None) for r in client.app.routes} - {None})
    assert len(paths) >= 20 and "/sdapi/v1/options" in paths
    for raw in paths:
        path = raw.replace("{job_id}", "nope").replace("{path:path}", "x")
        for method in ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"):
            authed = client.request(method, path, headers=AUTH)
            assert authed.status_code < 500, (method, path, authed.status_code)
            anon = client.request(method, path)
            if path != "/health":
                assert anon.status_code == 401, (method, path, anon.status_code)


def test_request_log_lines_cannot_be_forged(client, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="atelier.sd.http"):
        client.get('/x%0A{"event":%20"http",%20"status":%20200}%22', headers=AUTH)
    lines = [r.getMessage() for r in caplog.records if r.name == "atelier.sd.http"]
    assert lines and all("\n" not in line for line in lines)
    assert json.loads(lines[-1])["path"].startswith("/x\n")


def test_cors_preflight_is_answered_and_requests_still_need_the_code(tiny_sdxl, engine):
    from fastapi.testclient import TestClient

    from atelier.sd.app import create_app

    from .conftest import make_settings

    settings = make_settings(tiny_sdxl, cors_origins=["http://ui.example"])
    with TestClient(create_app(settings, engine=engine, load=False)) as c:
        origin = {"Origin": "http://ui.example"}
        pre = c.options(
            PLATFORM,
            headers={
                **origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-apig-appcode,content-type",
            },
        )
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "http://ui.example"
        assert c.get("/sdapi/v1/samplers", headers=origin).status_code == 401
        ok = c.get("/sdapi/v1/samplers", headers={**origin, **AUTH})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "http://ui.example"
        other = c.options(
            PLATFORM,
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert other.status_code == 400
