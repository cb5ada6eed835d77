"""`atelier sd ...` flags."""

from __future__ import annotations

import argparse

from atelier.core.flags import PORT_OR_ZERO, Int


def register(suites: argparse._SubParsersAction) -> None:
    sd = suites.add_parser("sd", help="SDXL text-to-image online service")
    verbs = sd.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = verbs.add_parser(
        "serve",
        help="serve SDXL base (+ refiner) over HTTP",
        description="Platform API (POST /v1/txt2img), AUTOMATIC1111 API (/sdapi/v1/*), OpenAI "
        "images API (POST /v1/images/generations), async jobs (/v1/jobs), a web page at /, "
        "/health, /metrics and OpenAPI at /docs.",
    )
    p.add_argument("--model", required=True, help="diffusers SDXL folder or .safetensors file")
    p.add_argument("--refiner", default=None, help="diffusers SDXL refiner folder or file")
    p.add_argument("--vae", default=None, help="replacement VAE (e.g. an fp16-fixed one)")
    p.add_argument(
        "--config-dir",
        default=None,
        help="diffusers SDXL folder (configs, tokenizers) for single-file checkpoints",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=PORT_OR_ZERO, default=8183)
    p.add_argument("--listen", action="store_true", help="listen on all interfaces")
    p.add_argument(
        "--app-code",
        default=None,
        help="require X-Apig-AppCode (or Bearer) on every route but /health [env ATELIER_APP_CODE]",
    )
    p.add_argument("--device", default="auto", help="auto | cuda | npu | cpu | mps")
    p.add_argument("--dtype", default="auto", help="fp16 | bf16 | fp32 (auto: fp16 on GPU/NPU)")
    p.add_argument("--attention", default="sdpa", help="sdpa | flash | math")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNets")
    p.add_argument("--max-queue", type=Int(1, 100_000), default=16, help="waiting jobs before 429")
    p.add_argument("--max-size", type=Int(64, 8192), default=2048, help="largest width/height")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from atelier.sd.serve import serve
    from atelier.sd.settings import ServeSettings

    serve(
        ServeSettings(
            model=args.model,
            refiner=args.refiner,
            vae=args.vae,
            config_dir=args.config_dir,
            host=args.host,
            port=args.port,
            listen=args.listen,
            app_code=args.app_code,
            device=args.device,
            dtype=args.dtype,
            attention=args.attention,
            compile=args.compile,
            max_queue=args.max_queue,
            max_size=args.max_size,
        )
    )
    return 0
