"""Every random generator a training step draws from, per rank, captured and restored.

Exact resume needs Python's `random`, NumPy's global generator, torch's CPU generator and
the accelerator's (CUDA or NPU, through `torch.get_device_module`). Each rank has its own
(dropout masks differ per data-parallel rank), so each is saved under its own rank.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def _device_module(device_type: str) -> Any | None:
    if device_type in ("cpu", "meta"):
        return None
    try:
        mod = torch.get_device_module(device_type)
    except (RuntimeError, AttributeError):
        return None
    return mod if hasattr(mod, "get_rng_state") else None


def capture_rng(device_type: str = "cpu") -> dict[str, Any]:
    mod = _device_module(device_type)
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "device_type": device_type,
        "device": mod.get_rng_state() if mod is not None else None,
    }


def restore_rng(state: dict[str, Any], device_type: str = "cpu") -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    mod = _device_module(device_type)
    if mod is not None and state.get("device") is not None and state["device_type"] == device_type:
        mod.set_rng_state(state["device"])
