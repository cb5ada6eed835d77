"""Benchmark of `atelier sd serve`.

(1) CPU, tiny SDXL: the server's overhead (HTTP, JSON, base64, queue hand-off) against
    calling the engine directly, p50 of interleaved runs in one process; then
    concurrent clients against one server, checking nothing is lost.
(2) GPU (when CUDA is available): the real SDXL base + refiner architectures with random
    weights (speed does not depend on weight values) at 1024 and 1280, 40 steps,
    high_noise_frac 0.8: seconds per image with sdpa vs math attention, with and without
    torch.compile.
(3) --hostile N: N half-open sockets (connect, send half a request line, wait) against plain
    uvicorn and against `atelier sd serve`'s server, same run: how many are still held after
    the header timeout + 2 s (no model is needed for this; nothing is generated).

    python bench/sd_serve.py [--runs 20] [--clients 8] [--per-client 5] [--skip-gpu]
    python bench/sd_serve.py --hostile 1100 --header-timeout 3
"""

from __future__ import annotations

import argparse
import logging
import socket
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_overhead(work: Path, runs: int, clients: int, per_client: int) -> None:
    import httpx
    import uvicorn

    from atelier.sd.app import create_app
    from atelier.sd.engine import Engine
    from atelier.sd.params import GenerationRequest
    from atelier.sd.settings import ServeSettings
    from atelier.sd.tiny import build_tiny_sdxl

    base, refiner = build_tiny_sdxl(work / "tiny")
    port = _free_port()
    settings = ServeSettings(model=str(base), refiner=str(refiner), port=port, max_queue=64)
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    assert app.state.engine.ready.wait(120)
    while not server.started:
        time.sleep(0.05)
    direct: Engine = app.state.engine  # the same pipelines, called without the server
    body = {"prompt": "a lighthouse", "num_inference_steps": 8, "width": 64, "height": 64}
    req = {"prompt": "a lighthouse", "steps": 8, "width": 64, "height": 64}
    d_times, h_times, overheads = [], [], []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as c:
        for i in range(runs + 2):  # interleaved, first two are warm-up
            t0 = time.perf_counter()
            direct.generate(GenerationRequest(**req, seed=i))
            d = time.perf_counter() - t0
            t0 = time.perf_counter()
            r = c.post("/v1/txt2img", json={**body, "seed": i})
            h = time.perf_counter() - t0
            assert r.status_code == 200, r.text
            if i >= 2:
                d_times.append(d)
                h_times.append(h)
                # what the server adds around the same engine call, measured per request
                overheads.append(h - r.json()["timings"]["generate_s"])
        d50, h50 = statistics.median(d_times), statistics.median(h_times)
        print(f"tiny SDXL 64x64, 8 steps, refiner 0.8, {runs} interleaved runs each")
        print(f"  direct engine p50 {d50 * 1000:8.1f} ms")
        print(f"  HTTP /v1/txt2img  {h50 * 1000:8.1f} ms")
        print(
            f"  p50 difference: {(h50 - d50) * 1000:.1f} ms = {(h50 / d50 - 1) * 100:+.2f}%"
            "  (includes run-to-run noise of the generation itself)"
        )
        o50 = statistics.median(overheads)
        print(
            f"  server overhead per request (client wall - engine time), p50: {o50 * 1000:.2f} ms"
            f" = {o50 / d50 * 100:.2f}% of the direct p50  (target < 2%)"
        )

        before = app.state.metrics.images._value.get()

        def client(k: int) -> list[int]:
            out = []
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as cc:
                for j in range(per_client):
                    r = cc.post("/v1/txt2img", json={**body, "seed": 1000 * k + j})
                    out.append(r.json()["seed"] if r.status_code == 200 else -r.status_code)
            return out

        t0 = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            seeds = [s for part in pool.map(client, range(clients)) for s in part]
        wall = time.perf_counter() - t0
        total = clients * per_client
        ok = sum(s >= 0 for s in seeds)
        generated = app.state.metrics.images._value.get() - before
        print(
            f"{clients} concurrent clients x {per_client} requests: {ok}/{total} answered 200, "
            f"{int(generated)} images generated, {len(set(seeds))} distinct seeds, "
            f"{total / wall:.2f} req/s vs {1 / h50:.2f} req/s sequential; "
            f"lost: {total - ok}"
        )
    server.should_exit = True


def gpu_speed(work: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: GPU section skipped")
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from atelier.sd.architectures import build_random_sdxl
    from atelier.sd.tiny import write_clip_tokenizer

    tok = write_clip_tokenizer(work / "clip")
    base, refiner = build_random_sdxl(tok, "cuda", torch.float16)
    print(f"GPU: {torch.cuda.get_device_name()}, fp16, real SDXL base + refiner, random weights")
    print(f"{'size':>10} {'attention':>9} {'compile':>7} {'s/image':>8}")

    def one(size: int) -> float:
        g = torch.Generator("cpu").manual_seed(0)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        lat = base(
            prompt="a lighthouse",
            num_inference_steps=40,
            width=size,
            height=size,
            denoising_end=0.8,
            output_type="latent",
            generator=g,
        ).images
        refiner(
            prompt="a lighthouse",
            num_inference_steps=40,
            denoising_start=0.8,
            image=lat,
            generator=g,
        )
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    for compiled in (False, True):
        if compiled:
            base.unet = torch.compile(base.unet)
            refiner.unet = torch.compile(refiner.unet)
        for size in (1024, 1280):
            for name, backend in (("sdpa", None), ("math", SDPBackend.MATH)):
                ctx = sdpa_kernel(backend) if backend else torch.inference_mode()
                with torch.inference_mode(), ctx:
                    one(size)  # warm-up (and compilation)
                    best = min(one(size) for _ in range(2))
                print(f"{size:>5}x{size:<4} {name:>9} {compiled!s:>7} {best:8.2f}")


def half_open(n: int, header_timeout: float) -> None:
    import uvicorn

    from atelier.sd.app import create_app
    from atelier.sd.http_server import bind, make_server
    from atelier.sd.settings import ServeSettings

    def held_after(server: uvicorn.Server, sock: socket.socket, wait: float) -> int:
        threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        port = sock.getsockname()[1]
        clients = []
        for _ in range(n):
            c = socket.create_connection(("127.0.0.1", port))
            c.sendall(b"GET /health HT")
            clients.append(c)
        time.sleep(wait)
        closed = 0
        for c in clients:
            c.setblocking(False)
            try:
                closed += c.recv(1) == b""  # EOF: the server closed it
            except BlockingIOError:
                pass  # still open, nothing sent
            except ConnectionResetError:
                closed += 1
            c.close()
        server.should_exit = True
        return n - closed

    settings = ServeSettings(model="unused", header_timeout_s=header_timeout)
    wait = header_timeout + 2
    app = create_app(settings, load=False)
    plain_sock = bind("127.0.0.1", 0)
    plain = uvicorn.Server(uvicorn.Config(app, log_level="error", http="h11"))
    held_plain = held_after(plain, plain_sock, wait)
    ours_sock = bind("127.0.0.1", 0)
    held_ours = held_after(make_server(create_app(settings, load=False), settings), ours_sock, wait)
    print(
        f"{n} half-open sockets, checked {wait:g} s after connect "
        f"(header timeout {header_timeout:g} s):"
    )
    print(f"  plain uvicorn (h11):       {held_plain:5d} still held")
    print(f"  atelier sd serve's server: {held_ours:5d} still held")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--per-client", type=int, default=5)
    ap.add_argument("--skip-gpu", action="store_true")
    ap.add_argument("--hostile", type=int, default=0, metavar="N", help="half-open sockets")
    ap.add_argument("--header-timeout", type=float, default=10.0)
    args = ap.parse_args()
    logging.disable(logging.INFO)
    if args.hostile:
        half_open(args.hostile, args.header_timeout)
        return
    with tempfile.TemporaryDirectory(prefix="atelier-sd-bench-") as tmp:
        cpu_overhead(Path(tmp), args.runs, args.clients, args.per_client)
        if not args.skip_gpu:
            gpu_speed(Path(tmp))


if __name__ == "__main__":
    main()
