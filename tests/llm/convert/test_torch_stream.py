"""The streaming rank-file writer produces what torch.save produces."""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

import pytest
import torch

from atelier.llm.convert.torch_stream import TensorSlot, save_streaming


def test_same_bytes_as_torch_save(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tensors = {
        "a": torch.randn(3, 4).to(torch.bfloat16),
        "b": torch.randn(5),
        "c": torch.randn(2, 2).half(),
    }
    slots = {
        k: TensorSlot(str(i), tuple(v.shape), v.dtype) for i, (k, v) in enumerate(tensors.items())
    }
    args = argparse.Namespace(num_layers=2, params_dtype=torch.bfloat16)

    def obj(parts: dict) -> dict:
        return {
            "args": args,
            "checkpoint_version": 3.0,
            "model": {"language_model": {"a": parts["a"]}, "b": parts["b"], "c": parts["c"]},
        }

    ours, theirs = tmp_path / "ours.pt", tmp_path / "theirs.pt"
    save_streaming(
        ours, obj(slots), list(slots.values()), [lambda v=v: v for v in tensors.values()]
    )
    torch.save(obj(tensors), theirs)
    a, b = zipfile.ZipFile(ours), zipfile.ZipFile(theirs)
    for name in ("data.pkl", "byteorder", "data/0", "data/1", "data/2"):
        assert a.read(f"ours/{name}") == b.read(f"theirs/{name}"), name
    with torch.serialization.safe_globals([argparse.Namespace]):
        for mmap in (False, True):
            got = torch.load(ours, weights_only=True, mmap=mmap)
            assert torch.equal(got["model"]["language_model"]["a"], tensors["a"])
            assert got["model"]["c"].dtype == torch.float16


def test_shape_mismatch_is_a_bug_not_a_silent_file(tmp_path: Path) -> None:
    slot = TensorSlot("0", (2, 2), torch.float32)
    with pytest.raises(RuntimeError, match="planned"):
        save_streaming(tmp_path / "x.pt", {"t": slot}, [slot], [lambda: torch.zeros(3)])
