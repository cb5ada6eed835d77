"""Write a `torch.save`-compatible file whose tensors arrive one at a time.

`torch.save` needs the whole object in memory. A Megatron rank file is known in
advance except for its tensor bytes (names, shapes and dtypes follow from the model's
sizes), so we pickle the object with placeholders first, exactly as `torch.save`
would pickle real tensors (`_rebuild_tensor_v2` over a persistent storage id), then
append each storage record as its tensor is produced. Memory: one tensor, not one
file. `torch.load` (also with `mmap=True` and `weights_only=True`) reads the result
like any other checkpoint; the tests check that.
"""

from __future__ import annotations

import io
import pickle
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

STORAGE_TYPES = {
    torch.float32: "FloatStorage",
    torch.float16: "HalfStorage",
    torch.bfloat16: "BFloat16Storage",
}


@dataclass(frozen=True)
class TensorSlot:
    """Stands in for a tensor in the pickled object; `key` names its storage record."""

    key: str
    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass(frozen=True)
class _StorageRef:
    slot: TensorSlot


def _stride(shape: tuple[int, ...]) -> tuple[int, ...]:
    out, step = [], 1
    for n in reversed(shape):
        out.append(step)
        step *= n
    return tuple(reversed(out))


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _StorageRef):
            s = obj.slot
            return (
                "storage",
                getattr(torch, STORAGE_TYPES[s.dtype]),
                s.key,
                "cpu",
                _numel(s.shape),
            )
        return None

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, TensorSlot):
            return (
                torch._utils._rebuild_tensor_v2,
                (_StorageRef(obj), 0, obj.shape, _stride(obj.shape), False, OrderedDict()),
            )
        return NotImplemented


def _writer(path: Path) -> Any:
    ser = torch.serialization
    try:
        return torch._C.PyTorchFileWriter(
            str(path), ser.get_crc32_options(), ser._get_storage_alignment()
        )
    except (AttributeError, TypeError):  # older torch: one-argument constructor
        return torch._C.PyTorchFileWriter(str(path))


class StreamingTorchFile:
    """One `torch.save` file being written: the object first, then tensors in slot order.

    Several can be open at once, so the TP ranks of a pipeline stage are written side
    by side and every input layer is read once.
    """

    def __init__(self, path: Path, obj: Any, slots: list[TensorSlot]) -> None:
        buf = io.BytesIO()
        _Pickler(buf, protocol=2).dump(obj)
        data = buf.getvalue()
        self._slots = iter(slots)
        self._w = _writer(path)
        self._w.write_record("data.pkl", data, len(data))
        self._w.write_record(".format_version", "1", 1)
        align = getattr(torch.serialization, "_get_storage_alignment", None)
        if align is not None:
            text = str(align())
            self._w.write_record(".storage_alignment", text, len(text))
        self._w.write_record("byteorder", sys.byteorder, len(sys.byteorder))

    def write(self, t: torch.Tensor) -> None:
        slot = next(self._slots)
        if tuple(t.shape) != slot.shape or t.dtype != slot.dtype:
            raise RuntimeError(
                f"bug: storage {slot.key} planned {slot.shape} {slot.dtype}, "
                f"produced {tuple(t.shape)} {t.dtype}"
            )
        t = t.contiguous()
        if t.storage_offset() != 0 or t.untyped_storage().nbytes() != t.nbytes:
            t = t.clone()
        self._w.write_record(f"data/{slot.key}", t.untyped_storage(), t.nbytes)

    def close(self) -> None:
        if next(self._slots, None) is not None:
            raise RuntimeError("bug: file closed before every planned tensor was written")
        self._w.write_end_of_file()


def save_streaming(
    path: Path, obj: Any, slots: list[TensorSlot], produce: Iterable[Callable[[], torch.Tensor]]
) -> None:
    """Save `obj` (holding `slots`) to `path`, calling `produce` in slot order for the bytes."""
    f = StreamingTorchFile(path, obj, slots)
    for make in produce:
        f.write(make())
    f.close()
