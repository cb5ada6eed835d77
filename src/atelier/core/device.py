"""Device choice shared by every suite that runs torch.

`auto` prefers CUDA, then Ascend NPU (through `torch_npu`, which registers the
`npu` device when imported), then CPU, so no suite ever hard-codes a device.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from atelier.core.errors import AtelierError

if TYPE_CHECKING:
    import torch

KNOWN = ("auto", "cpu", "cuda", "npu", "mps")


def npu_available() -> bool:
    if importlib.util.find_spec("torch_npu") is None:
        return False
    import torch
    import torch_npu  # noqa: F401  (registers torch.npu)

    return bool(torch.npu.is_available())


def resolve_device_name(requested: str = "auto") -> str:
    """Turn a user's `--device` into a concrete torch device string."""
    import torch

    name = requested.strip().lower()
    kind = name.split(":", 1)[0]
    if kind not in KNOWN:
        raise AtelierError(f"--device {requested!r}: unknown device; use one of {', '.join(KNOWN)}")
    if kind == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if npu_available():
            return "npu"
        return "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        raise AtelierError("--device cuda: no CUDA device is visible; use --device auto or cpu")
    if kind == "npu" and not npu_available():
        raise AtelierError(
            "--device npu: torch_npu is not installed or sees no NPU; use auto or cpu"
        )
    if kind == "mps" and not torch.backends.mps.is_available():
        raise AtelierError("--device mps: MPS is not available here; use --device auto or cpu")
    return name


def pick_device(requested: str = "auto") -> torch.device:
    import torch

    return torch.device(resolve_device_name(requested))


def distributed_backend(device_type: str) -> str:
    """The torch.distributed backend for a device type: nccl, hccl (Ascend) or gloo."""
    return {"cuda": "nccl", "npu": "hccl"}.get(device_type, "gloo")
