"""Small helpers for the LLM data tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from atelier.llm.data.indexed import IndexedReader
from atelier.llm.data.preprocess import PreprocessConfig, Report, preprocess
from atelier.llm.data.tokenizer import TokenizerSpec


def run(tok_dir: Path, input: Path | str, prefix: Path, **kw) -> Report:
    cfg = PreprocessConfig(
        input=str(input),
        output_prefix=str(prefix),
        tokenizer=TokenizerSpec(name_or_path=str(tok_dir)),
        **kw,
    )
    return preprocess(cfg)


def instruction_rows(prefix: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(input_ids, attention_mask, labels) per sample of an instruction dataset."""
    ids, mask, labels = (
        IndexedReader.open(f"{prefix}_packed_{k}_document")
        for k in ("input_ids", "attention_mask", "labels")
    )
    assert len(ids) == len(mask) == len(labels)
    return [(ids[i], mask[i], labels[i]) for i in range(len(ids))]


def runs(ids: np.ndarray, labels: np.ndarray) -> list[tuple[bool, list[int]]]:
    """Consecutive (trained, ids) runs."""
    out: list[tuple[bool, list[int]]] = []
    for i, lab in zip(ids.tolist(), labels.tolist(), strict=True):
        trained = lab != -100
        if out and out[-1][0] == trained:
            out[-1][1].append(i)
        else:
            out.append((trained, [i]))
    return out


def files_bytes(prefix: Path, keys: list[str]) -> dict[str, bytes]:
    out = {}
    for k in keys:
        for ext in ("bin", "idx"):
            out[f"{k}.{ext}"] = Path(f"{prefix}_{k}_document.{ext}").read_bytes()
    return out
