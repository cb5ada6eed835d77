"""Tiny SDXL base + refiner (real diffusers classes) and services built on them."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CODE = "sesame-open"
AUTH = {"X-Apig-AppCode": CODE}
SMALL = {"width": 64, "height": 64}


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from atelier.sd.tiny import build_tiny_sdxl

    return build_tiny_sdxl(tmp_path_factory.mktemp("sdxl"))


def make_settings(tiny_sdxl, **kw):
    from atelier.sd.settings import ServeSettings

    base, refiner = tiny_sdxl
    return ServeSettings(model=str(base), refiner=str(refiner), app_code=CODE, **kw)


@pytest.fixture(scope="session")
def client(tiny_sdxl) -> Iterator:
    """One shared service (the model loads once); tests that need odd settings make their own."""
    from fastapi.testclient import TestClient

    from atelier.sd.app import create_app

    app = create_app(make_settings(tiny_sdxl))
    with TestClient(app) as c:
        assert app.state.engine.ready.wait(120)
        assert app.state.engine.state == "ready", app.state.engine.error
        yield c


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def live_server(tiny_sdxl) -> Iterator[str]:
    """A real uvicorn server on loopback, for clients that open their own connections."""
    import uvicorn

    from atelier.sd.app import create_app

    port = _free_port()
    app = create_app(make_settings(tiny_sdxl, port=port))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app.state.engine.ready.wait(120) and app.state.engine.state == "ready"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
