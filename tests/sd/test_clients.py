"""Existing clients work unchanged: webuiapi (A1111), the OpenAI SDK, and a browser."""

from __future__ import annotations

import base64
import io
import json
import shutil
import time

import pytest

from .conftest import CODE, SMALL


def test_webuiapi_client(live_server):
    import webuiapi

    host, port = live_server.removeprefix("http://").split(":")
    api = webuiapi.WebUIApi(host=host, port=int(port), sampler="Euler a", steps=3)
    api.session.headers["X-Apig-AppCode"] = CODE
    result = api.txt2img(
        prompt="a small house",
        negative_prompt="blurry",
        seed=42,
        cfg_scale=6,
        batch_size=2,
        **SMALL,
        restore_faces=False,
        tiling=False,
    )
    assert len(result.images) == 2 and result.images[0].size == (64, 64)
    assert result.info["all_seeds"] == [42, 43] and result.info["sampler_name"] == "Euler a"
    assert result.info["refiner_checkpoint"] is None  # A1111 refines only when asked
    assert "Seed: 43" in result.info["infotexts"][1]
    assert result.parameters["prompt"] == "a small house"
    again = api.txt2img(
        prompt="a small house",
        negative_prompt="blurry",
        seed=42,
        cfg_scale=6,
        batch_size=2,
        **SMALL,
    )
    assert again.images[1].tobytes() == result.images[1].tobytes()
    names = [s["name"] for s in api.get_samplers()]
    assert {"Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "DDIM", "UniPC"} <= set(names)
    assert [m["model_name"] for m in api.get_sd_models()] == ["base", "refiner"]
    assert api.get_options()["sd_model_checkpoint"] == "base"
    api.set_options({"sd_model_checkpoint": "base", "CLIP_stop_at_last_layers": 1})
    assert api.get_progress()["state"]["sampling_steps"] == 0
    assert api.interrupt() == {}


def test_a1111_unknown_fields_samplers_and_interrupt(live_server):
    import httpx

    h = {"X-Apig-AppCode": CODE}
    with httpx.Client(base_url=live_server, headers=h, timeout=120) as c:
        assert c.get("/internal/ping").json() == {}
        for sampler in ("Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "DDIM", "UniPC"):
            r = c.post(
                "/sdapi/v1/txt2img",
                json={
                    "prompt": "p",
                    "steps": 2,
                    **SMALL,
                    "seed": 1,
                    "sampler_name": sampler,
                    "override_settings": {"x": 1},
                    "alwayson_scripts": {},
                    "hr_scale": 2,
                },
            )
            assert r.status_code == 200, (sampler, r.text)
            assert json.loads(r.json()["info"])["sampler_name"] == sampler
        refined = c.post(
            "/sdapi/v1/txt2img",
            json={
                "prompt": "p",
                "steps": 3,
                **SMALL,
                "seed": 4,
                "refiner_checkpoint": "refiner",
                "refiner_switch_at": 0.7,
            },
        )
        info = json.loads(refined.json()["info"])
        assert info["refiner_checkpoint"] == "refiner"
        assert "Refiner: refiner, Refiner switch at: 0.7" in info["infotexts"][0]
        bad = c.post("/sdapi/v1/txt2img", json={"prompt": "p", "refiner_checkpoint": "other"})
        assert bad.status_code == 422 and "not loaded" in bad.text
        # interrupt a long A1111 job while it runs
        import threading

        out = {}
        t = threading.Thread(
            target=lambda: out.setdefault(
                "r",
                c.post(
                    "/sdapi/v1/txt2img", json={"prompt": "long", "steps": 80, **SMALL, "seed": 1}
                ),
            )
        )
        t.start()
        deadline = time.monotonic() + 60
        while c.get("/sdapi/v1/progress").json()["state"]["sampling_step"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        progress = c.get("/sdapi/v1/progress").json()
        assert 0 < progress["progress"] < 1 and progress["state"]["sampling_steps"] == 80
        c.post("/sdapi/v1/interrupt")
        t.join(60)
        assert out["r"].status_code == 409


def test_openai_sdk(live_server):
    from openai import OpenAI
    from PIL import Image

    client = OpenAI(base_url=f"{live_server}/v1", api_key=CODE, max_retries=0)
    result = client.images.generate(
        prompt="a lighthouse", n=2, size="64x64", response_format="b64_json"
    )
    assert len(result.data) == 2
    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    assert image.size == (64, 64) and "a lighthouse" in image.info["parameters"]
    bad = OpenAI(base_url=f"{live_server}/v1", api_key="wrong", max_retries=0)
    from openai import AuthenticationError

    with pytest.raises(AuthenticationError):
        bad.images.generate(prompt="x", size="64x64", response_format="b64_json")


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.mark.skipif(_chromium() is None, reason="no chromium + chromedriver could be installed")
def test_web_page_in_headless_chromium(live_server, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser, driver_path = _chromium()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        # a gateway injects the app code into every request; so does this browser
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"X-Apig-AppCode": CODE}})
        driver.get(live_server + "/")
        assert "Atelier" in driver.title
        for field, value in (("width", "64"), ("height", "64"), ("steps", "3"), ("seed", "9")):
            box = driver.find_element(By.ID, field)
            box.clear()
            box.send_keys(value)
        driver.find_element(By.ID, "generate").click()
        WebDriverWait(driver, 120).until(
            lambda d: (
                (d.find_element(By.ID, "image").get_attribute("src") or "").startswith("data:")
                or "error" in (d.find_element(By.ID, "status").get_attribute("class") or "")
            )
        )
        assert driver.find_element(By.ID, "status").text == "done"
        assert driver.find_element(By.ID, "download").get_attribute("download") == "atelier-9.png"
        assert driver.find_element(By.ID, "progress").get_attribute("value") == "1"
        assert "seed 9" in driver.find_element(By.ID, "caption").text
        driver.save_screenshot(str(tmp_path / "page.png"))
        # a size the server refuses is reported on the page, not swallowed
        box = driver.find_element(By.ID, "width")
        box.clear()
        box.send_keys("4096")
        driver.find_element(By.ID, "generate").click()
        WebDriverWait(driver, 30).until(
            lambda d: "error" in (d.find_element(By.ID, "status").get_attribute("class") or "")
        )
        assert (
            "width: width must be a multiple of 8 in [64, 2048]"
            in driver.find_element(By.ID, "status").text
        )
    finally:
        driver.quit()
