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

import contextlib
import errno
import io
import os
import pickle
import shutil
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


def _write_failed(path: Path, e: RuntimeError, nbytes: int) -> OSError:
    """The `OSError` behind a C++ stream failure (it keeps no errno): a full disk when
    the free space is short of what was being written, else an I/O error."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = 0
    if free < nbytes + (1 << 20):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return OSError(errno.EIO, f"write failed ({e})", str(path))


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
        self._path = path
        self._done = False
        self._w = _writer(path)
        align = getattr(torch.serialization, "_get_storage_alignment", None)
        text = str(align()) if align is not None else None
        self._guarded(
            lambda: (
                self._w.write_record("data.pkl", data, len(data)),
                self._w.write_record(".format_version", "1", 1),
                text is not None and self._w.write_record(".storage_alignment", text, len(text)),
                self._w.write_record("byteorder", sys.byteorder, len(sys.byteorder)),
            ),
            len(data),
        )

    def _guarded(self, fn: Callable[[], Any], nbytes: int) -> None:
        """Run a C++ write; on failure finalize the writer and raise an `OSError`.

        A `PyTorchFileWriter` destroyed unfinalized after a failed write throws from
        its destructor: `std::terminate`, SIGABRT, rc 134 (seen on a full disk).
        """
        try:
            fn()
        except RuntimeError as e:
            self.abandon()
            raise _write_failed(self._path, e, nbytes) from None

    def abandon(self) -> None:
        """Finalize the writer without raising; the file is then discarded by the caller."""
        if not self._done:
            self._done = True
            with contextlib.suppress(RuntimeError):
                self._w.write_end_of_file()

    def __del__(self) -> None:
        self.abandon()

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
        self._guarded(
            lambda: self._w.write_record(f"data/{slot.key}", t.untyped_storage(), t.nbytes),
            t.nbytes,
        )

    def close(self) -> None:
        if next(self._slots, None) is not None:
            self.abandon()
            raise RuntimeError("bug: file closed before every planned tensor was written")
        self._guarded(self._w.write_end_of_file, 1 << 16)
        self._done = True


def save_streaming(
    path: Path, obj: Any, slots: list[TensorSlot], produce: Iterable[Callable[[], torch.Tensor]]
) -> None:
    """Save `obj` (holding `slots`) to `path`, calling `produce` in slot order for the bytes."""
    f = StreamingTorchFile(path, obj, slots)
    for make in produce:
        f.write(make())
    f.close()
