"""What only a real server shows: chunked bodies, half-open and slow clients, clients that
leave while their job waits or runs, SSE listeners that vanish, offline /docs."""

from __future__ import annotations

import json
import re
import shutil
import socket
import threading
import time

import httpx
import pytest

from .conftest import AUTH, CODE, SMALL, make_settings, start_live, stop_live


@pytest.fixture
def quick(tiny_sdxl, engine):
    """A server with short deadlines on the shared loaded engine."""
    from atelier.sd.app import create_app

    settings = make_settings(tiny_sdxl, header_timeout_s=1.0, body_timeout_s=1.0, keep_alive_s=1.0)
    app = create_app(settings, engine=engine, load=False)
    live = start_live(app, settings)
    yield live
    stop_live(live)


def _connect(live) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", live.port), timeout=10)
    return s


def _closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed the connection (reading whatever it sent)."""
    t0 = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        pytest.fail(f"connection still open after {seconds} s")
    except ConnectionResetError:
        pass
    return time.monotonic() - t0


def _request(path: str, body: bytes = b"", method: str = "POST", extra: str = "") -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nX-Apig-AppCode: {CODE}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


def _wait_for(predicate, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /health HTTP/1.1\r\nHost: x\r\n", b"POST /v1/txt2img HTTP/1.1\r\nHost"],
    ids=["nothing", "half-headers", "half-line"],
)
def test_half_open_connections_are_closed_within_the_header_timeout(quick, sent):
    socks = [_connect(quick) for _ in range(20)]
    for s in socks:
        s.sendall(sent)
    try:
        for s in socks:
            assert _closed_within(s, 4) < 4
    finally:
        for s in socks:
            s.close()


def test_slow_body_gets_408_and_the_connection_closes(quick):
    with _connect(quick) as s:
        s.sendall(_request("/v1/txt2img", b"{" * 100)[:-90])  # promise 100 bytes, send 10
        s.settimeout(5)
        data = b""
        t0 = time.monotonic()
        while chunk := s.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 4


def test_keep_alive_then_a_slow_second_request_is_closed_too(quick):
    with _connect(quick) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        s.sendall(b"GET /health HTTP/1.1\r\nHo")  # then stalls mid-headers
        assert _closed_within(s, 4) < 4


def test_chunked_body_over_the_limit_is_413_without_reading_it_all(quick):
    with _connect(quick) as s:
        s.sendall(
            f"POST /v1/txt2img HTTP/1.1\r\nHost: x\r\nX-Apig-AppCode: {CODE}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b'{"prompt": "' + b"a" * (64 << 10)
        sent = 0
        s.settimeout(5)
        try:
            while sent < (3 << 20):
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading, as it should
        data = b""
        try:
            while part := s.recv(65536):
                data += part
        except ConnectionResetError:
            pass
    assert data.startswith(b"HTTP/1.1 413"), data[:200]
    assert len(data) < 2000 and b"aaaa" not in data  # nothing echoed


def test_header_block_growing_past_16_kib_is_400(quick):
    with _connect(quick) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        s.settimeout(5)
        try:
            for _ in range(10):
                s.sendall(b"X-Big: " + b"a" * 4000 + b"\r\n")
                time.sleep(0.02)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert s.recv(65536).startswith(b"HTTP/1.1 400")


def _job_ids(app) -> set[str]:
    return set(app.state.queue._jobs)


def test_client_gone_while_queued_drops_its_job(quick):
    app = quick.app
    queue = app.state.queue
    with httpx.Client(base_url=quick.url, headers=AUTH, timeout=30) as c:
        long = c.post("/v1/jobs", json={"prompt": "busy", "num_inference_steps": 150, **SMALL})
        busy = long.json()["id"]
        _wait_for(lambda: queue.current is not None and queue.current.id == busy)
        before = _job_ids(app)
        body = json.dumps({"prompt": "left", "num_inference_steps": 5, **SMALL}).encode()
        with _connect(quick) as s:
            s.sendall(_request("/v1/txt2img", body))
            _wait_for(lambda: queue.depth == 1)
        (mine,) = _job_ids(app) - before
        _wait_for(lambda: queue.depth == 0, 5)  # dropped long before `busy` ends
        job = queue.get(mine)
        assert job.state == "cancelled" and "disconnected" in job.error and job.started is None
        assert queue.current is not None and queue.current.id == busy
        c.delete(f"/v1/jobs/{busy}")
        _wait_for(lambda: queue.current is None)


def test_client_gone_while_running_interrupts_at_the_next_step(quick):
    queue = quick.app.state.queue
    body = json.dumps({"prompt": "left", "num_inference_steps": 150, **SMALL}).encode()
    with _connect(quick) as s:
        s.sendall(_request("/v1/txt2img", body))
        _wait_for(lambda: queue.current is not None and queue.current.step >= 2)
        job = queue.current
    t0 = time.monotonic()
    _wait_for(lambda: job.state != "running", 20)
    assert job.state == "cancelled" and job.step < 150
    assert time.monotonic() - t0 < 10  # one step, not the remaining ~148


def test_sse_client_that_vanishes_is_forgotten(quick):
    queue = quick.app.state.queue
    with httpx.Client(base_url=quick.url, headers=AUTH, timeout=30) as c:
        job_id = c.post(
            "/v1/jobs", json={"prompt": "sse", "num_inference_steps": 150, **SMALL}
        ).json()["id"]
        job = queue.get(job_id)
        socks = []
        for _ in range(5):
            s = _connect(quick)
            s.sendall(_request(f"/v1/jobs/{job_id}/events", method="GET"))
            assert b"event: " in s.recv(65536) or b"event: " in s.recv(65536)
            socks.append(s)
        _wait_for(lambda: len(job._listeners) == 5)
        for s in socks:
            s.close()
        _wait_for(lambda: len(job._listeners) == 0, 10)
        c.delete(f"/v1/jobs/{job_id}")
        _wait_for(lambda: queue.current is None)


def test_concurrent_cancels_and_interrupts_leave_a_working_queue(quick):
    queue = quick.app.state.queue
    with httpx.Client(base_url=quick.url, headers=AUTH, timeout=30) as c:
        body = {"prompt": "race", "num_inference_steps": 150, **SMALL}
        ids = [c.post("/v1/jobs", json=body).json()["id"] for _ in range(4)]
        errors = []

        def hammer() -> None:
            with httpx.Client(base_url=quick.url, headers=AUTH, timeout=30) as h:
                for job_id in ids + ids[::-1]:
                    for r in (h.delete(f"/v1/jobs/{job_id}"), h.post("/sdapi/v1/interrupt")):
                        if r.status_code != 200:
                            errors.append(r.status_code)

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        _wait_for(lambda: queue.current is None and queue.depth == 0, 20)
        states = {c.get(f"/v1/jobs/{i}").json()["state"] for i in ids}
        assert states <= {"cancelled", "succeeded"}
        ok = c.post("/v1/txt2img", json={"prompt": "after", "num_inference_steps": 1, **SMALL})
        assert ok.status_code == 200


def test_docs_load_only_local_assets(client):
    page = client.get("/docs", headers=AUTH)
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", page.text)
    assert urls, page.text
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url  # nothing from a CDN
        assert client.get(url, headers=AUTH).status_code == 200, url
    assert "swagger-ui-bundle.js" in page.text
    redoc = client.get("/redoc", headers=AUTH).text
    assert "cdn." not in redoc and "googleapis" not in redoc
    assert client.get("/docs").status_code == 401


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_flags_serve_https(tiny_sdxl, engine, tmp_path):
    """A1111's --tls-keyfile/--tls-certfile: checked at start, then the server speaks HTTPS."""
    import subprocess

    from atelier.sd.app import create_app
    from atelier.sd.serve import resolve

    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    make_cert = [
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
    ]
    subprocess.run(
        [*make_cert, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    settings = resolve(make_settings(tiny_sdxl, tls_keyfile=str(key), tls_certfile=str(cert)))
    live = start_live(create_app(settings, engine=engine, load=False), settings)
    try:
        url = live.url.replace("http://", "https://")
        assert httpx.get(f"{url}/health", verify=False, timeout=10).status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{live.url}/health", timeout=5)  # plain HTTP is not served
    finally:
        stop_live(live)
