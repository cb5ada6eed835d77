"""Small datasets for the trainer's data tests, written with Atelier's own writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from atelier.core.atomic import commit_files
from atelier.llm.data.indexed import IndexedWriter

EOD = 2
PAD = 1
VOCAB = 500


def write_pretraining(
    prefix: Path, seed: int, n_docs: int, max_len: int = 40, stray_pad: bool = True
) -> list[np.ndarray]:
    """Documents of random ids, each ending in EOD (as `--append-eod` writes them)."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        body = rng.integers(3, VOCAB, size=int(rng.integers(1, max_len)))
        if stray_pad and rng.random() < 0.3:  # a pad id inside the text: megatron-core masks it
            body[0] = PAD
        docs.append(np.concatenate([body, [EOD]]))
    w = IndexedWriter(prefix, np.uint16)
    w.add_documents(np.concatenate(docs), np.array([len(d) for d in docs]))
    commit_files(w.finish())
    return docs


def write_instruction(
    prefix: Path, rows: list[tuple[list[int], list[int]]], pad: int | None = None
) -> None:
    """`{prefix}_packed_{input_ids,attention_mask,labels}_document` of (ids, labels) rows."""
    for key in ("input_ids", "attention_mask", "labels"):
        w = IndexedWriter(f"{prefix}_packed_{key}_document", np.int32)
        for ids, labels in rows:
            if key == "input_ids":
                arr = ids
            elif key == "labels":
                arr = labels
            else:
                arr = [
                    0 if (pad is not None and i == pad and lab == -100) else 1
                    for i, lab in zip(ids, labels, strict=True)
                ]
            w.add_sequence(np.array(arr, dtype=np.int32))
        commit_files(w.finish())
