"""The engine: loads SDXL base (+ refiner) once and runs one generation at a time.

Everything device-specific lives here. Seeds drive CPU generators, so the same
seed, parameters and device give the same image bytes however the request came.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atelier.core.errors import AtelierError
from atelier.sd.infotext import infotext, png_bytes
from atelier.sd.params import GenerationRequest
from atelier.sd.samplers import SAMPLERS, make_scheduler
from atelier.sd.settings import ServeSettings

log = logging.getLogger("atelier.sd")


class Cancelled(Exception):
    """The job was cancelled (DELETE /v1/jobs/{id} or A1111 interrupt)."""


class EngineError(Exception):
    """Generation failed for a reason the caller should see (e.g. device OOM)."""


@dataclass
class GeneratedImage:
    png: bytes
    seed: int
    infotext: str


@dataclass
class GenerationResult:
    images: list[GeneratedImage]
    seed: int
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)


def check_model_path(path: str, flag: str) -> Path:
    p = Path(path)
    if p.is_dir():
        if not (p / "model_index.json").is_file():
            raise AtelierError(f"{flag} {path}: not a diffusers folder (no model_index.json)")
        return p
    if p.is_file():
        if p.suffix not in (".safetensors", ".ckpt"):
            raise AtelierError(f"{flag} {path}: expected a diffusers folder or a .safetensors file")
        return p
    raise AtelierError(f"{flag} {path}: no such file or folder")


def model_name(path: str | None) -> str | None:
    return Path(path).stem if path else None


def _diffusers_at_least(version: str) -> bool:
    from importlib.metadata import version as installed

    from packaging.version import Version

    return Version(installed("diffusers")) >= Version(version)


def quiet_libraries() -> None:
    """Loading bars and import-time notices (e.g. transformers on a missing torchvision)
    belong to notebooks, not to a service's log; call before importing pipelines."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()


class Engine:
    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.state = "loading"
        self.error: str | None = None
        self.ready = threading.Event()
        self.base: Any = None
        self.refiner: Any = None
        self.device = "cpu"
        self.load_seconds = 0.0

    # ------------------------------------------------------------ loading

    def load(self) -> None:
        """Load the pipelines; never raises: failures are reported by /health."""
        t0 = time.perf_counter()
        try:
            self._load()
            self.state = "ready"
            self.load_seconds = time.perf_counter() - t0
            log.info("model ready in %.1f s on %s", self.load_seconds, self.device)
        except Exception as e:
            self.state = "failed"
            self.error = f"{type(e).__name__}: {e}"
            log.error("model failed to load: %s", self.error)
        finally:
            self.ready.set()

    def _dtype(self) -> Any:
        import torch

        name = self.settings.dtype
        if name == "auto":
            name = "fp32" if self.device == "cpu" else "fp16"
        return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]

    def _load(self) -> None:
        quiet_libraries()
        import torch
        from diffusers import (
            AutoencoderKL,
            StableDiffusionXLImg2ImgPipeline,
            StableDiffusionXLPipeline,
        )

        from atelier.core.device import resolve_device_name

        s = self.settings
        self.device = resolve_device_name(s.device)
        dtype = self._dtype()
        # diffusers >= 0.36 names it `dtype`; older releases only know `torch_dtype`
        dtype_key = "dtype" if _diffusers_at_least("0.36") else "torch_dtype"
        kw: dict[str, Any] = {dtype_key: dtype, "local_files_only": True}
        path = check_model_path(s.model, "--model")
        if path.is_dir():
            base = StableDiffusionXLPipeline.from_pretrained(str(path), **kw)
        else:
            if not s.config_dir:
                raise AtelierError(
                    "--model is a single-file checkpoint: pass --config-dir, a diffusers SDXL "
                    "folder with configs and tokenizers (weights not needed)"
                )
            base = StableDiffusionXLPipeline.from_single_file(str(path), config=s.config_dir, **kw)
        if s.vae:
            vae_path = Path(s.vae)
            vae = (
                AutoencoderKL.from_pretrained(str(vae_path), **kw)
                if vae_path.is_dir()
                else AutoencoderKL.from_single_file(str(vae_path), **kw)
            )
            base.vae = vae
        elif dtype == torch.float16:
            # SDXL's VAE overflows in fp16: decode in fp32 unless an fp16-fixed VAE is given.
            base.vae.config.force_upcast = True
        base.to(self.device)
        base.set_progress_bar_config(disable=True)
        refiner = None
        if s.refiner:
            rpath = check_model_path(s.refiner, "--refiner")
            shared = {"text_encoder_2": base.text_encoder_2, "vae": base.vae}
            if rpath.is_dir():
                refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(
                    str(rpath), **shared, **kw
                )
            else:
                refiner = StableDiffusionXLImg2ImgPipeline.from_single_file(
                    str(rpath), config=s.config_dir, **shared, **kw
                )
            refiner.to(self.device)
            refiner.set_progress_bar_config(disable=True)
        if s.compile:
            base.unet = torch.compile(base.unet)
            if refiner is not None:
                refiner.unet = torch.compile(refiner.unet)
        self.base, self.refiner = base, refiner
        self._base_sched = dict(base.scheduler.config)
        self._ref_sched = dict(refiner.scheduler.config) if refiner is not None else None

    # ------------------------------------------------------------ generation

    @property
    def samplers(self) -> list[str]:
        return list(SAMPLERS)

    @contextlib.contextmanager
    def _attention(self) -> Iterator[None]:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        mode = self.settings.attention
        if mode == "math":
            with sdpa_kernel(SDPBackend.MATH):
                yield
        elif mode == "flash":
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                yield
        else:
            yield

    def generate(
        self,
        req: GenerationRequest,
        on_step: Callable[[int, int], None] = lambda done, total: None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> GenerationResult:
        import torch

        if self.state != "ready":
            raise EngineError(f"model is {self.state}" + (f": {self.error}" if self.error else ""))
        t0 = time.perf_counter()
        seed = req.seed if req.seed is not None else secrets.randbelow(2**32)
        use_refiner = bool(req.refiner and self.refiner is not None and req.high_noise_frac < 1.0)
        self.base.scheduler = make_scheduler(req.sampler, self._base_sched)
        if use_refiner:
            self.refiner.scheduler = make_scheduler(req.sampler, self._ref_sched)
        total = req.steps * req.n_iter
        done = 0

        def step_end(pipe: Any, i: int, t: Any, kwargs: dict) -> dict:
            nonlocal done
            done = min(done + 1, total)
            on_step(done, total)
            if cancelled():
                # leave the pipeline now: its own `_interrupt` would still run the VAE decode
                # (seconds for a large batch); each job gets fresh schedulers, so nothing is
                # left half-stepped for the next one
                raise Cancelled
            return kwargs

        images: list[GeneratedImage] = []
        base_name = model_name(self.settings.model) or "model"
        refiner_name = model_name(self.settings.refiner) if use_refiner else None
        try:
            for it in range(req.n_iter):
                seeds = [(seed + it * req.batch_size + b) % 2**32 for b in range(req.batch_size)]
                gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
                common = dict(
                    prompt=req.prompt,
                    negative_prompt=req.negative_prompt or None,
                    num_inference_steps=req.steps,
                    guidance_scale=req.cfg_scale,
                    num_images_per_prompt=req.batch_size,
                    generator=gens,
                    callback_on_step_end=step_end,
                )
                with torch.inference_mode(), self._attention():
                    if use_refiner:
                        latents = self.base(
                            **common,
                            width=req.width,
                            height=req.height,
                            denoising_end=req.high_noise_frac,
                            output_type="latent",
                        ).images
                        if cancelled():
                            raise Cancelled
                        out = self.refiner(
                            **common, image=latents, denoising_start=req.high_noise_frac
                        ).images
                    else:
                        out = self.base(**common, width=req.width, height=req.height).images
                if cancelled():
                    raise Cancelled
                for s, image in zip(seeds, out, strict=True):
                    text = infotext(req, s, base_name, refiner_name)
                    images.append(GeneratedImage(png_bytes(image, text), s, text))
        except torch.OutOfMemoryError:
            self._free()
            raise EngineError(
                "the device ran out of memory: lower width/height or batch_size"
            ) from None
        params = req.public() | {"seed": seed, "refiner": use_refiner}
        return GenerationResult(images, seed, time.perf_counter() - t0, params)

    def _free(self) -> None:
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()
