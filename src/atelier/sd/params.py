"""One request shape for every API, and the limits every API enforces.

Each HTTP API has its own field names (platform `num_inference_steps`, A1111
`steps`, OpenAI `size`); they all convert into `GenerationRequest` and go
through `check()`, so a limit is written once and named by the caller's field.
Messages never repeat the caller's value: a 422 must stay small and encodable
whatever was sent.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

MAX_STEPS = 150
MAX_BATCH = 8
MAX_ITER = 16
MAX_SEED = 2**32 - 1
# CLIP truncates at 77 tokens (a few hundred characters); A1111-style prompts with weights
# and long negative lists reach a couple of thousand. Beyond this it is a mistake or abuse.
MAX_PROMPT_CHARS = 8000
MAX_CFG = 30.0


class FieldError(ValueError):
    """A request field out of range: reported as HTTP 422 naming `field`."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name
        self.message = message


@dataclass
class GenerationRequest:
    prompt: str
    negative_prompt: str = ""
    steps: int = 40
    width: int = 1024
    height: int = 1024
    cfg_scale: float = 5.0
    sampler: str = "Euler"
    seed: int | None = None  # None: random, chosen at run time and returned
    batch_size: int = 1
    n_iter: int = 1
    refiner: bool = True
    high_noise_frac: float = 0.8
    # the caller's names for fields, so errors speak the caller's language
    names: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def public(self) -> dict:
        out = asdict(self)
        out.pop("names")
        return out


def unpaired_surrogate(text: str) -> bool:
    """JSON may carry `"\\ud800"`, which no UTF-8 encoder (tokenizer, PNG text, response)
    accepts; such a string must be refused at the door, not crash a job or a response."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_text(name: str, text: str, max_chars: int = MAX_PROMPT_CHARS) -> None:
    if len(text) > max_chars:
        raise FieldError(name, f"{name} is longer than {max_chars} characters")
    if unpaired_surrogate(text):
        raise FieldError(name, f"{name} contains an unpaired UTF-16 surrogate; send valid Unicode")
    if "\x00" in text:
        raise FieldError(name, f"{name} contains a NUL character")


def check(req: GenerationRequest, max_size: int, samplers: list[str], max_pixels: int) -> None:
    """Raise FieldError for the first field out of range."""

    def n(key: str) -> str:
        return req.names.get(key, key)

    check_text(n("prompt"), req.prompt)
    if not req.prompt.strip():
        raise FieldError(n("prompt"), "prompt must not be empty")
    check_text(n("negative_prompt"), req.negative_prompt)
    for key, value in (("width", req.width), ("height", req.height)):
        if value % 8 or not 64 <= value <= max_size:
            raise FieldError(n(key), f"{n(key)} must be a multiple of 8 in [64, {max_size}]")
    if not 1 <= req.steps <= MAX_STEPS:
        raise FieldError(n("steps"), f"{n('steps')} must be in [1, {MAX_STEPS}]")
    if not (math.isfinite(req.high_noise_frac) and 0.0 < req.high_noise_frac <= 1.0):
        raise FieldError(n("high_noise_frac"), f"{n('high_noise_frac')} must be in (0, 1]")
    if not (math.isfinite(req.cfg_scale) and 0.0 <= req.cfg_scale <= MAX_CFG):
        raise FieldError(n("cfg_scale"), f"{n('cfg_scale')} must be in [0, {MAX_CFG:g}]")
    if not 1 <= req.batch_size <= MAX_BATCH:
        raise FieldError(n("batch_size"), f"{n('batch_size')} must be in [1, {MAX_BATCH}]")
    if not 1 <= req.n_iter <= MAX_ITER:
        raise FieldError(n("n_iter"), f"{n('n_iter')} must be in [1, {MAX_ITER}]")
    if req.seed is not None and not 0 <= req.seed <= MAX_SEED:
        raise FieldError(n("seed"), f"{n('seed')} must be -1 (random) or in [0, {MAX_SEED}]")
    if req.sampler not in samplers:
        raise FieldError(n("sampler"), f"unknown {n('sampler')}; known: {', '.join(samplers)}")
    # one batch is denoised at once: its latents and activations grow with the pixel count
    if req.batch_size * req.width * req.height > max_pixels:
        raise FieldError(
            n("batch_size"),
            f"{n('batch_size')} x {n('width')} x {n('height')} is over this service's "
            f"{max_pixels} pixels per batch; use fewer or smaller images (or more iterations)",
        )
