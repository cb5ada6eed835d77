"""One request shape for every API, and the limits every API enforces.

Each HTTP API has its own field names (platform `num_inference_steps`, A1111
`steps`, OpenAI `size`); they all convert into `GenerationRequest` and go
through `check()`, so a limit is written once and named by the caller's field.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

MAX_STEPS = 150
MAX_BATCH = 8
MAX_ITER = 16


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


def check(req: GenerationRequest, max_size: int, samplers: list[str]) -> None:
    """Raise FieldError for the first field out of range."""
    n = req.names.get
    if not req.prompt or not req.prompt.strip():
        raise FieldError(n("prompt", "prompt"), "prompt must not be empty")
    for name, value in (("width", req.width), ("height", req.height)):
        if value % 8 or not 64 <= value <= max_size:
            raise FieldError(
                n(name, name), f"{name} must be a multiple of 8 in [64, {max_size}], got {value}"
            )
    if not 1 <= req.steps <= MAX_STEPS:
        raise FieldError(n("steps", "steps"), f"steps must be in [1, {MAX_STEPS}], got {req.steps}")
    if not 0.0 < req.high_noise_frac <= 1.0:
        raise FieldError(
            n("high_noise_frac", "high_noise_frac"),
            f"high_noise_frac must be in (0, 1], got {req.high_noise_frac}",
        )
    if not 0.0 <= req.cfg_scale <= 30.0:
        raise FieldError(
            n("cfg_scale", "cfg_scale"), f"cfg_scale must be in [0, 30], got {req.cfg_scale}"
        )
    if not 1 <= req.batch_size <= MAX_BATCH:
        raise FieldError(n("batch_size", "batch_size"), f"batch_size must be in [1, {MAX_BATCH}]")
    if not 1 <= req.n_iter <= MAX_ITER:
        raise FieldError(n("n_iter", "n_iter"), f"n_iter must be in [1, {MAX_ITER}]")
    if req.seed is not None and not 0 <= req.seed < 2**32:
        raise FieldError(
            n("seed", "seed"), "seed must be in [0, 2**32) (or absent / -1 for random)"
        )
    if req.sampler not in samplers:
        raise FieldError(
            n("sampler", "sampler"),
            f"unknown sampler {req.sampler!r}; known: {', '.join(samplers)}",
        )
