"""`atelier sd ...` flags, including AUTOMATIC1111's launch flags.

Platform containers start A1111 with a fixed command line (`--skip-torch-cuda-test
--enable-insecure-extension-access --listen --log-startup --disable-safe-unpickle
--skip-prepare-environment --api --port 8183`). `atelier sd serve` accepts A1111's flags
(from its `modules/cmd_args.py`, 1.10) so that command works with only the program
changed: flags with a meaning here are mapped (`--ckpt`, `--api-auth`, `--port`,
`--listen`, `--server-name`, `--no-half`, `--vae-path`, `--device-id`, TLS, CORS,
`--subpath`, `--timeout-keep-alive`, `--loglevel`); the rest are ignored with one note
line per reason. A flag A1111 does not have either is still an error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from atelier.core.errors import AtelierError
from atelier.core.flags import PORT_OR_ZERO, POSITIVE_FLOAT, POSITIVE_INT, Int

# reason -> A1111 switches (store_true) that mean nothing for this service
A1111_SWITCHES: dict[str, tuple[str, ...]] = {
    "launch.py environment steps; atelier installs and checks nothing at start": (
        "-f",
        "--update-all-extensions",
        "--skip-python-version-check",
        "--skip-torch-cuda-test",
        "--reinstall-xformers",
        "--reinstall-torch",
        "--update-check",
        "--test-server",
        "--log-startup",
        "--skip-prepare-environment",
        "--skip-install",
        "--skip-version-check",
        "--no-download-sd-model",
        "--do-not-download-clip",
        "--no-tests",
        "--dump-sysinfo",
    ),
    "gradio UI and extension options; this service has a plain web page and no extensions": (
        "--enable-insecure-extension-access",
        "--allow-code",
        "--no-progressbar-hiding",
        "--hide-ui-dir-config",
        "--freeze-settings",
        "--gradio-debug",
        "--autolaunch",
        "--use-textbox-seed",
        "--gradio-queue",
        "--no-gradio-queue",
        "--disable-all-extensions",
        "--disable-extra-extensions",
        "--administrator",
        "--show-negative-prompt",
        "--deepdanbooru",
        "--unload-gfpgan",
        "--always-batch-cond-uncond",
        "--add-stop-route",
        "--api-server-stop",
        "--ui-debug-mode",
        "--enable-console-prompts",
        "--disable-console-progressbars",
        "--no-prompt-history",
        "--unix-filenames-sanitization",
        "--no-hashing",
    ),
    "the APIs are always served (and every request is logged as one JSON line)": (
        "--api",
        "--nowebui",
        "--api-log",
    ),
    "attention is torch scaled-dot-product attention (choose a kernel with --attention)": (
        "--xformers",
        "--force-enable-xformers",
        "--xformers-flash-attention",
        "--opt-sdp-attention",
        "--opt-sdp-no-mem-attention",
        "--opt-split-attention",
        "--opt-split-attention-v1",
        "--opt-split-attention-invokeai",
        "--opt-sub-quad-attention",
        "--disable-opt-split-attention",
        "--opt-channelslast",
    ),
    "the model stays whole on the device (no CPU offload); lower --max-batch-pixels to "
    "use less memory": ("--medvram", "--medvram-sdxl", "--lowvram", "--lowram"),
    "in fp16 the SDXL VAE already decodes in fp32 unless --vae names an fp16-fixed one": (
        "--no-half-vae",
        "--upcast-sampling",
    ),
    "checkpoints are read as safetensors or diffusers folders, never by unpickling code": (
        "--disable-safe-unpickle",
    ),
    "the model loads in the background at start and /health tells when it is ready": (
        "--skip-load-model-at-start",
        "--disable-model-loading-ram-optimization",
        "--disable-nan-check",
    ),
    "not offered here: publish the port yourself (platform gateway, reverse proxy)": (
        "--share",
        "--disable-tls-verify",
    ),
    "use --device (auto picks CUDA, then Ascend NPU, then CPU)": ("--use-ipex",),
}
# reason -> A1111 flags that take one value and mean nothing here
A1111_VALUES: dict[str, tuple[str, ...]] = {
    "A1111 folders and files (models, extensions, UI settings); atelier serves --model and "
    "--refiner only": (
        "--data-dir",
        "--config",
        "--ckpt-dir",
        "--vae-dir",
        "--gfpgan-dir",
        "--gfpgan-model",
        "--embeddings-dir",
        "--textual-inversion-templates-dir",
        "--hypernetwork-dir",
        "--localizations-dir",
        "--codeformer-models-path",
        "--gfpgan-models-path",
        "--esrgan-models-path",
        "--bsrgan-models-path",
        "--realesrgan-models-path",
        "--clip-models-path",
        "--ui-config-file",
        "--ui-settings-file",
        "--styles-file",
        "--tests",
    ),
    "gradio UI options; this service has a plain web page": (
        "--theme",
        "--gradio-img2img-tool",
        "--gradio-inpaint-tool",
        "--gradio-allowed-path",
    ),
    "not offered here: publish the port yourself (platform gateway, reverse proxy)": (
        "--ngrok",
        "--ngrok-region",
        "--ngrok-options",
    ),
}
# numeric A1111 flags with no meaning here: still range-checked at parse time
A1111_NUMBERS: dict[str, tuple[str, Int]] = {
    "--sub-quad-q-chunk-size": ("attention is torch SDPA", POSITIVE_INT),
    "--sub-quad-kv-chunk-size": ("attention is torch SDPA", POSITIVE_INT),
    "--sub-quad-chunk-threshold": ("attention is torch SDPA", Int(0, 100)),
    "--max-batch-count": ("a UI limit; the API allows n_iter up to 16", POSITIVE_INT),
    "--filenames-max-length": ("images are returned, not saved", POSITIVE_INT),
}


def _dest(flag: str) -> str:
    return "a1111_" + flag.lstrip("-").replace("-", "_")


def _add_a1111_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "AUTOMATIC1111 launch flags",
        "accepted so an A1111 start command works unchanged: mapped where they have a meaning "
        "here (below), otherwise ignored with a one-line note",
    )
    g.add_argument("--ckpt", default=None, help="= --model")
    g.add_argument("--vae-path", default=None, help="= --vae")
    g.add_argument("--server-name", default=None, help="= --host")
    g.add_argument(
        "--api-auth",
        default=None,
        metavar="USER:PW[,USER:PW]",
        help="let in HTTP Basic USER:PW (in addition to --app-code)",
    )
    g.add_argument("--gradio-auth", default=None, metavar="USER:PW[,USER:PW]", help="= --api-auth")
    g.add_argument(
        "--gradio-auth-path", default=None, metavar="FILE", help="USER:PW pairs from a file"
    )
    g.add_argument("--no-half", action="store_true", help="= --dtype fp32")
    g.add_argument("--precision", choices=["full", "autocast"], default=None, help="full = fp32")
    g.add_argument("--device-id", type=Int(0, 1023), default=None, help="device index (cuda:N)")
    g.add_argument(
        "--use-cpu", nargs="+", default=None, metavar="MODULE", help="'all' or 'sd' = --device cpu"
    )
    g.add_argument(
        "--timeout-keep-alive",
        type=Int(1, 3600),
        default=None,
        help="seconds an idle keep-alive connection stays open (default 5)",
    )
    g.add_argument("--tls-keyfile", default=None, help="serve HTTPS with this key ...")
    g.add_argument("--tls-certfile", default=None, help="... and this certificate")
    g.add_argument("--subpath", default=None, help="path prefix behind a reverse proxy")
    g.add_argument("--cors-allow-origins", default=None, help="comma-separated CORS origins")
    g.add_argument("--cors-allow-origins-regex", default=None, help="CORS origin regex")
    g.add_argument(
        "--loglevel",
        type=str.upper,
        choices=["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"],
        default=None,
        help="log level of the service",
    )
    for flags in A1111_SWITCHES.values():
        for flag in flags:
            g.add_argument(flag, dest=_dest(flag), action="store_true", help=argparse.SUPPRESS)
    for flags in A1111_VALUES.values():
        for flag in flags:
            g.add_argument(flag, dest=_dest(flag), action="append", help=argparse.SUPPRESS)
    for flag, (_, kind) in A1111_NUMBERS.items():
        g.add_argument(flag, dest=_dest(flag), type=kind, default=None, help=argparse.SUPPRESS)


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
    p.add_argument(
        "--model", default=None, help="diffusers SDXL folder or .safetensors file (or --ckpt)"
    )
    p.add_argument("--refiner", default=None, help="diffusers SDXL refiner folder or file")
    p.add_argument("--vae", default=None, help="replacement VAE (e.g. an fp16-fixed one)")
    p.add_argument(
        "--config-dir",
        default=None,
        help="diffusers SDXL folder (configs, tokenizers) for single-file checkpoints",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=PORT_OR_ZERO, default=8183, help="0: any free port")
    p.add_argument("--listen", action="store_true", help="listen on all interfaces")
    p.add_argument(
        "--app-code",
        default=None,
        help="require X-Apig-AppCode (or Bearer) on every route but /health [env ATELIER_APP_CODE]",
    )
    p.add_argument("--device", default="auto", help="auto | cuda[:N] | npu[:N] | cpu | mps")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp16", "bf16", "fp32"])
    p.add_argument("--attention", default="sdpa", choices=["sdpa", "flash", "math"])
    p.add_argument("--compile", action="store_true", help="torch.compile the UNets")
    p.add_argument("--max-queue", type=Int(1, 100_000), default=16, help="waiting jobs before 429")
    p.add_argument("--max-size", type=Int(64, 8192), default=2048, help="largest width/height")
    p.add_argument(
        "--max-batch-pixels",
        type=Int(64 * 64, 2**31),
        default=8 * 1024 * 1024,
        help="most batch_size x width x height denoised at once (default: 8 x 1024 x 1024)",
    )
    p.add_argument(
        "--header-timeout",
        type=POSITIVE_FLOAT,
        default=10.0,
        help="seconds a client has to send its request headers",
    )
    p.add_argument(
        "--body-timeout",
        type=POSITIVE_FLOAT,
        default=30.0,
        help="seconds a client has to send its request body",
    )
    _add_a1111_flags(p)
    p.set_defaults(func=run_serve)


def _auth_pairs(text: str, flag: str) -> list[tuple[str, str]]:
    """A1111's `user:password[,user:password]`; an empty user or password is a mistake."""
    pairs = []
    for item in text.replace("\n", ",").split(","):
        item = item.strip()
        if not item:
            continue
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise AtelierError(
                f"{flag}: expected USER:PASSWORD[,USER:PASSWORD], got an item without both"
            )
        pairs.append((user, password))
    if not pairs:
        raise AtelierError(f"{flag}: no USER:PASSWORD pair given")
    return pairs


def _notes(args: argparse.Namespace) -> list[str]:
    notes = []
    for reason, flags in A1111_SWITCHES.items():
        given = [f for f in flags if getattr(args, _dest(f))]
        if given:
            notes.append(f"{' '.join(given)} ignored: {reason}")
    for reason, flags in A1111_VALUES.items():
        given = [f for f in flags if getattr(args, _dest(f)) is not None]
        if given:
            notes.append(f"{' '.join(given)} ignored: {reason}")
    for flag, (reason, _) in A1111_NUMBERS.items():
        if getattr(args, _dest(flag)) is not None:
            notes.append(f"{flag} ignored: {reason}")
    return notes


def settings_from_args(args: argparse.Namespace):  # -> ServeSettings
    """Flags (ours and A1111's) -> ServeSettings, plus the notes to print."""
    from atelier.sd.settings import ServeSettings

    notes = _notes(args)
    model = args.model
    if args.ckpt:
        if model and model != args.ckpt:
            raise AtelierError("--model and --ckpt name different models: give one of them")
        model = args.ckpt
    if not model:
        raise AtelierError("sd serve: --model (or A1111's --ckpt) is required")
    vae = args.vae
    if args.vae_path:
        if vae and vae != args.vae_path:
            raise AtelierError("--vae and --vae-path name different VAEs: give one of them")
        vae = args.vae_path
    host = args.server_name or args.host
    auth: list[tuple[str, str]] = []
    for flag in ("--api-auth", "--gradio-auth"):
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            auth += _auth_pairs(value, flag)
    if args.gradio_auth_path:
        try:
            text = Path(args.gradio_auth_path).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise AtelierError(
                f"--gradio-auth-path {args.gradio_auth_path}: cannot read it ({e})"
            ) from None
        auth += _auth_pairs(text, "--gradio-auth-path")
    dtype = args.dtype
    if args.no_half or args.precision == "full":
        if dtype not in ("auto", "fp32"):
            raise AtelierError(f"--no-half/--precision full contradict --dtype {dtype}")
        dtype = "fp32"
    device = args.device
    if args.use_cpu:
        if {"all", "sd"} & {m.lower() for m in args.use_cpu}:
            device = "cpu"
        else:
            notes.append("--use-cpu: only 'all' or 'sd' (the whole model) has a meaning here")
    if args.device_id is not None:
        if ":" in device:
            raise AtelierError(f"--device-id {args.device_id} contradicts --device {device}")
        if device == "auto":
            from atelier.core.device import resolve_device_name

            device = resolve_device_name("auto")
        if device == "cpu":
            notes.append("--device-id ignored: running on the CPU")
        else:
            device = f"{device}:{args.device_id}"
    cors = [o.strip() for o in (args.cors_allow_origins or "").split(",") if o.strip()]
    settings = ServeSettings(
        model=model,
        refiner=args.refiner,
        vae=vae,
        config_dir=args.config_dir,
        host=host,
        port=args.port,
        listen=args.listen,
        app_code=args.app_code,
        api_auth=auth,
        device=device,
        dtype=dtype,
        attention=args.attention,
        compile=args.compile,
        max_queue=args.max_queue,
        max_size=args.max_size,
        max_pixels=args.max_batch_pixels,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        tls_keyfile=args.tls_keyfile,
        tls_certfile=args.tls_certfile,
        root_path=args.subpath or "",
        cors_origins=cors,
        cors_origin_regex=args.cors_allow_origins_regex,
    )
    if args.timeout_keep_alive is not None:
        settings.keep_alive_s = float(args.timeout_keep_alive)
    return settings, notes


def run_serve(args: argparse.Namespace) -> int:
    import logging

    from atelier.sd.serve import serve

    settings, notes = settings_from_args(args)
    for note in notes:
        print(f"atelier: note: {note}", file=sys.stderr)
    if args.loglevel:
        logging.getLogger().setLevel(args.loglevel)
    serve(settings)
    return 0
