"""Streaming: every input layer is read exactly once, whatever T and P are.

(Peak memory itself is measured by bench/convert.py; see docs/benchmarks.md.)
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from atelier.llm.convert import Hf2MgOptions, hf2mg, mg2hf, mg2mg
from atelier.llm.convert.hf_checkpoint import HFSource
from atelier.llm.convert.megatron_checkpoint import MegatronSource


def _count_reads(monkeypatch, cls) -> Counter:
    reads: Counter = Counter()
    real = cls.layer

    def layer(self, i):
        reads[i] += 1
        return real(self, i)

    monkeypatch.setattr(cls, "layer", layer)
    return reads


def test_hf2mg_reads_each_layer_once(hf_model, tmp_path: Path, monkeypatch) -> None:
    reads = _count_reads(monkeypatch, HFSource)
    hf2mg(
        Hf2MgOptions(
            load_dir=hf_model("llama", 6),
            save_dir=tmp_path / "mg",
            tp=4,
            pp=3,
            num_layer_list=[1, 3, 2],
        )
    )
    assert reads == Counter(range(6))


def test_mg2hf_and_mg2mg_read_each_layer_once(hf_model, tmp_path: Path, monkeypatch) -> None:
    hf2mg(Hf2MgOptions(load_dir=hf_model("llama", 6), save_dir=tmp_path / "mg", tp=2, pp=2))
    reads = _count_reads(monkeypatch, MegatronSource)
    mg2hf(tmp_path / "mg", tmp_path / "hf")
    assert reads == Counter(range(6))
    reads.clear()
    mg2mg(tmp_path / "mg", tmp_path / "mg2", tp=4, pp=3)
    assert reads == Counter(range(6))
