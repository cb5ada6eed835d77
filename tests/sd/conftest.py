"""Tiny SDXL base + refiner (real diffusers classes) and services built on them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    """One shared service (the model loads once); tests that need odd settings make their own
    app around the same loaded engine (`engine` fixture)."""
    from fastapi.testclient import TestClient

    from atelier.sd.app import create_app

    app = create_app(make_settings(tiny_sdxl))
    with TestClient(app) as c:
        assert app.state.engine.ready.wait(120)
        assert app.state.engine.state == "ready", app.state.engine.error
        yield c


@pytest.fixture(scope="session")
def engine(client):
    """The loaded tiny engine; apps built on it must be used one at a time."""
    return client.app.state.engine


@dataclass
class Live:
    url: str
    port: int
    app: Any
    server: Any


def start_live(app: Any, settings: Any) -> Live:
    """The app behind the real server (`atelier sd serve`'s bind + uvicorn) on a free port."""
    from atelier.sd.http_server import bind, make_server

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    settings.port = port
    server = make_server(app, settings)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    server._thread = thread
    return Live(f"http://127.0.0.1:{port}", port, app, server)


def stop_live(live: Live) -> None:
    live.server.should_exit = True
    live.server._thread.join(10)


@pytest.fixture(scope="session")
def live(tiny_sdxl) -> Iterator[Live]:
    """A real server on loopback with its own model, for clients that open connections."""
    from atelier.sd.app import create_app

    settings = make_settings(tiny_sdxl)
    app = create_app(settings)
    running = start_live(app, settings)
    assert app.state.engine.ready.wait(120) and app.state.engine.state == "ready"
    yield running
    stop_live(running)


@pytest.fixture(scope="session")
def live_server(live) -> str:
    return live.url
