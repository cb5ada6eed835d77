"""Entry points for the engine: the three splits, and the data-side checks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from atelier.core.errors import AtelierError
from atelier.llm.data.indexed import IndexedReader
from atelier.llm.train.data.instruction import (
    InstructionSamples,
    build_instruction,
    open_instruction,
)
from atelier.llm.train.data.pretrain import (
    BlendedSamples,
    GPTSamples,
    build_pretraining,
    open_pretraining,
)
from atelier.llm.train.data.spec import IGNORE, DataSpec

Dataset = GPTSamples | BlendedSamples | InstructionSamples

_CHUNK = 1 << 24  # tokens per max() pass: bounded memory on any dataset size


def build_datasets(
    spec: DataSpec, train_valid_test_num_samples: Sequence[int]
) -> tuple[Dataset | None, Dataset | None, Dataset | None]:
    """(train, valid, test): each a map-style dataset of at least that many samples, or None
    where the split is empty. Safe to call on every rank at once (see cache.py)."""
    sizes = [int(s) for s in train_valid_test_num_samples]
    if len(sizes) != 3 or any(s < 0 for s in sizes):
        raise ValueError(f"train_valid_test_num_samples {sizes}: need three counts >= 0")
    build = build_instruction if spec.is_instruction else build_pretraining
    built = build(spec, sizes)
    return built[0], built[1], built[2]


def _max_id(reader: IndexedReader, skip: int | None = None) -> int:
    best = -1
    for start in range(0, reader.num_tokens, _CHUNK):
        chunk = np.asarray(reader.data[start : start + _CHUNK])
        if skip is not None:
            chunk = chunk[chunk != skip]
        if chunk.size:
            best = max(best, int(chunk.max()))
    return best


def check_vocab(spec: DataSpec, vocab_size: int) -> None:
    """Fail (one line naming the file) if a token id in the data is >= the model's vocab."""
    for name, value in (("eod_id", spec.eod_id), ("pad_id", spec.pad_id)):
        if value is not None and value >= vocab_size:
            raise AtelierError(f"{name} {value}: >= the model's vocab size {vocab_size}")
    if spec.is_instruction:
        readers = open_instruction(spec.blend[0][0])
        named = [(readers["input_ids"], None), (readers["labels"], IGNORE)]
    else:
        named = [(open_pretraining(p), None) for p in spec.blend[0]]
    for reader, skip in named:
        if np.iinfo(reader.dtype).max < vocab_size:
            continue  # its dtype cannot hold an id that large
        top = _max_id(reader, skip)
        if top >= vocab_size:
            raise AtelierError(
                f"{reader.prefix}.bin: token id {top} >= the model's vocab size {vocab_size}; "
                "was the data tokenized with another tokenizer?"
            )


def check_positions(spec: DataSpec, max_position_embeddings: int) -> None:
    """Fail if a sample would be longer than the model's position table."""
    if spec.seq_length > max_position_embeddings:
        raise AtelierError(
            f"seq_length {spec.seq_length}: longer than the model's max_position_embeddings "
            f"{max_position_embeddings}; lower seq_length"
        )
