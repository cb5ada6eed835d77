"""A1111 sampler names -> diffusers schedulers (built from the model's own config)."""

from __future__ import annotations

from typing import Any

# name: (diffusers class, extra config, A1111 aliases)
SAMPLERS: dict[str, tuple[str, dict[str, Any], list[str]]] = {
    "Euler": ("EulerDiscreteScheduler", {}, ["k_euler"]),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}, ["k_euler_a", "k_euler_ancestral"]),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}, ["k_dpmpp_2m"]),
    "DPM++ 2M Karras": (
        "DPMSolverMultistepScheduler",
        {"use_karras_sigmas": True},
        ["k_dpmpp_2m_ka"],
    ),
    "DPM++ 2M SDE": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++"},
        ["k_dpmpp_2m_sde"],
    ),
    "DDIM": ("DDIMScheduler", {}, ["ddim"]),
    "UniPC": ("UniPCMultistepScheduler", {}, ["unipc"]),
    "LMS": ("LMSDiscreteScheduler", {}, ["k_lms"]),
    "Heun": ("HeunDiscreteScheduler", {}, ["k_heun"]),
}
ALIASES = {alias: name for name, (_, _, aliases) in SAMPLERS.items() for alias in aliases}


def canonical(name: str | None, default: str = "Euler") -> str:
    """A1111 accepts names and aliases, case-insensitively; unknown names pass through
    so validation can report them."""
    if not name:
        return default
    for known in SAMPLERS:
        if known.lower() == name.lower():
            return known
    return ALIASES.get(name.lower(), name)


def make_scheduler(name: str, base_config: dict[str, Any]) -> Any:
    import diffusers

    cls_name, extra, _ = SAMPLERS[name]
    cls = getattr(diffusers, cls_name)
    return cls.from_config(base_config, **extra)
