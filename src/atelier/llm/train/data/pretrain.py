"""Pretraining samples: megatron-core's GPTDataset and BlendedDataset, without megatron.

`GPTSamples` is one split of one prefix; `BlendedSamples` draws from several by weight.
`ds[i]` gives the i-th sample megatron-core's `BlendedMegatronDatasetBuilder` would give for
the same prefixes, weights, split, seq-length and seed (tests/llm/train/data proves it
against megatron-core itself), as numpy arrays.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from atelier.core.errors import AtelierError
from atelier.llm.data import indexed
from atelier.llm.data.indexed import IndexedReader
from atelier.llm.train.data.cache import cache_dir, cached_arrays, lengths_digest
from atelier.llm.train.data.gpt_index import blending_indices, gpt_indices
from atelier.llm.train.data.sampler import Sampled
from atelier.llm.train.data.spec import DataSpec, split_matrix, split_ranges

SPLITS = ("train", "valid", "test")
MID_LEVEL_SURPLUS = 0.005  # megatron-core's `mid_level_dataset_surplus` default
INDEX_VERSION = 1  # bump when the cached arrays' meaning changes


def ltor_fields(
    tokens: np.ndarray,
    eod: int,
    reset_position_ids: bool,
    reset_attention_mask: bool,
    eod_mask_loss: bool,
) -> dict[str, np.ndarray]:
    """loss_mask, position_ids (and segment_ids) of a left-to-right sample.

    megatron-core's `_get_ltor_masks_and_position_ids`, with the attention mask given as
    segment ids: a token after an EOD starts a new segment and attends only within it,
    which is exactly the mask `reset_attention_mask` builds (query j sees key k <= j when no
    EOD lies in [k, j)). Positions restart at 0 after each EOD with `reset_position_ids`.
    """
    n = len(tokens)
    is_eod = tokens == eod
    loss_mask = np.ones(n, dtype=np.float32)
    if eod_mask_loss:
        loss_mask[is_eod] = 0.0
    out = {"loss_mask": loss_mask}
    segment = np.zeros(n, dtype=np.int32)
    if n > 1:
        np.cumsum(is_eod[:-1], out=segment[1:])
    if reset_position_ids:
        starts = np.concatenate([[0], np.flatnonzero(is_eod[:-1]) + 1])
        out["position_ids"] = np.arange(n, dtype=np.int64) - starts[segment]
    else:
        out["position_ids"] = np.arange(n, dtype=np.int64)
    if reset_attention_mask:
        out["segment_ids"] = segment
    return out


def open_pretraining(prefix: str) -> IndexedReader:
    """The reader of one `--data-path` prefix, or a one-line error saying what to pass."""
    if indexed.exists(prefix):
        return IndexedReader.open(prefix)
    packed = f"{prefix}_packed_input_ids_document"
    if indexed.exists(packed):
        raise AtelierError(
            f"data_path {prefix}: an instruction dataset ({packed}.bin); set is_instruction "
            "(--is-instruction-dataset) to train on it"
        )
    hint = ""
    if indexed.exists(f"{prefix}_text_document"):
        hint = f" (did you mean {prefix}_text_document?)"
    raise AtelierError(
        f"data_path {prefix}: no dataset: looked for {prefix}.bin and {prefix}.idx{hint}; "
        "`atelier llm preprocess --input FILE --output-prefix OUT` writes OUT_text_document.bin/"
        ".idx for pretraining (pass OUT_text_document), and with an instruction --handler-name "
        "OUT_packed_{input_ids,attention_mask,labels}_document (pass OUT, with is_instruction)"
    )


class GPTSamples(Sampled):
    """One split of one prefix, as megatron-core's GPTDataset."""

    def __init__(
        self,
        reader: IndexedReader,
        documents: tuple[int, int],
        num_samples: int | None,
        split: str,
        spec: DataSpec,
    ) -> None:
        self.reader = reader
        self.spec = spec
        self.num_samples = num_samples
        self.split = split
        lengths = reader.lengths
        self.documents = documents
        beg, end = documents
        tokens = int(lengths[beg:end].astype(np.int64).sum())
        if end <= beg or tokens < 2:
            raise AtelierError(
                f"split {spec.split}: the {split} split of {reader.prefix} holds {end - beg} "
                f"sequences ({tokens} tokens) of {len(reader)}; change split or add data"
            )
        if spec.seq_length < 2:
            raise AtelierError(f"seq_length {spec.seq_length}: pretraining needs at least 2")
        self.description = {
            "kind": "GPTDataset",
            "version": INDEX_VERSION,
            "prefix": str(Path(reader.prefix).resolve()),
            "lengths_md5": lengths_digest(lengths),
            "documents": [beg, end],
            "num_samples": num_samples,
            "seq_length": spec.seq_length,
            "seed": spec.seed,
        }
        docs = np.arange(beg, end, dtype=np.int32)
        self.doc_index, self.sample_index, self.shuffle_index = cached_arrays(
            cache_dir(reader.prefix, "GPTDataset", spec.data_cache_path),
            "GPTDataset",
            split,
            self.description,
            ("document_index", "sample_index", "shuffle_index"),
            lambda: gpt_indices(lengths, docs, num_samples, spec.seq_length, spec.seed),
        )
        self._itemsize = reader.dtype.itemsize

    def __len__(self) -> int:
        return self.sample_index.shape[0] - 1

    def text(self, i: int) -> np.ndarray:
        """The `seq_length + 1` token ids of sample i (int64)."""
        k = int(self.shuffle_index[i])
        beg, beg_off = (int(v) for v in self.sample_index[k])
        end, end_off = (int(v) for v in self.sample_index[k + 1])
        reader = self.reader
        parts = []
        for j in range(beg, end + 1):
            seq = int(self.doc_index[j])
            start = int(reader.pointers[seq]) // self._itemsize
            lo = beg_off if j == beg else 0
            hi = end_off + 1 if j == end else int(reader.lengths[seq])
            parts.append(reader.data[start + lo : start + hi])
        text = np.concatenate(parts).astype(np.int64)
        want = self.spec.seq_length + 1
        if len(text) < want:  # only a partial last sample; megatron-core pads it
            text = np.concatenate([text, np.full(want - len(text), self.spec.megatron_pad)])
        return text

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        text = self.text(i % len(self))
        tokens, labels = text[:-1].copy(), text[1:].copy()
        spec = self.spec
        out = ltor_fields(
            tokens, spec.eod_id, spec.reset_position_ids, spec.reset_attention_mask,
            spec.eod_mask_loss,
        )  # fmt: skip
        pad = spec.megatron_pad
        out["loss_mask"][labels == pad] = 0.0
        tokens[tokens == pad] = 0
        labels[labels == pad] = 0
        return {"tokens": tokens, "labels": labels, **out}


class BlendedSamples(Sampled):
    """megatron-core's BlendedDataset: sample s comes from dataset `which[s]`."""

    def __init__(
        self, datasets: list[GPTSamples], weights: list[float], size: int, spec: DataSpec
    ) -> None:
        self.datasets = datasets
        self.weights = weights
        self.split = datasets[0].split
        description = {
            "kind": "BlendedDataset",
            "version": INDEX_VERSION,
            "datasets": [d.description for d in datasets],
            "weights": weights,
            "size": size,
        }
        self.which, self.nth = cached_arrays(
            cache_dir(datasets[0].reader.prefix, "BlendedDataset", spec.data_cache_path),
            "BlendedDataset",
            self.split,
            description,
            ("dataset_index", "dataset_sample_index"),
            lambda: blending_indices(weights, size),
        )
        counts = np.bincount(np.asarray(self.which), minlength=len(datasets))
        for d, c in zip(datasets, counts, strict=True):
            if c > len(d):
                raise AtelierError(
                    f"data_path: the {self.split} blend asks {c} samples of {d.reader.prefix}, "
                    f"which holds {len(d)}; this blend oversamples it (raise its share of the "
                    "data, or its epochs, by requesting more samples)"
                )

    def __len__(self) -> int:
        return len(self.which)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return self.datasets[int(self.which[i])][int(self.nth[i])]


def normalize(weights: list[float]) -> list[float]:
    w = np.array(weights, dtype=np.float64)
    return (w / w.sum()).tolist()


def _splits_of(
    reader: IndexedReader, spec: DataSpec, sizes: list[int | None]
) -> list[GPTSamples | None]:
    out: list[GPTSamples | None] = []
    for i, bounds in enumerate(split_ranges(spec.split, len(reader))):
        if bounds is None:
            out.append(None)
            continue
        beg, end = bounds
        if end <= beg and sizes[i] == 0:
            out.append(None)  # nothing there and nothing asked for
            continue
        out.append(GPTSamples(reader, (beg, end), sizes[i], SPLITS[i], spec))
    return out


def build_pretraining(spec: DataSpec, sizes: list[int]) -> list[GPTSamples | BlendedSamples | None]:
    """The train, valid and test datasets, as `BlendedMegatronDatasetBuilder.build()`."""
    prefixes, weights = spec.blend
    readers = [open_pretraining(p) for p in prefixes]
    if len(prefixes) == 1 and weights is None:
        return list(_splits_of(readers[0], spec, list(sizes)))
    matrix = split_matrix(spec.split)
    if weights is not None:
        weights = normalize(weights)
        target = [[math.ceil(s * w) for s in sizes] for w in weights]
        buffer: list[list[int | None]] = [
            [math.ceil(math.ceil(s * w) * (1 + MID_LEVEL_SURPLUS)) for s in sizes] for w in weights
        ]
    else:
        buffer = [[None, None, None] for _ in prefixes]
    mids = [_splits_of(r, spec, buffer[j]) for j, r in enumerate(readers)]
    out: list[GPTSamples | BlendedSamples | None] = []
    for i in range(3):
        parts = [m[i] for m in mids]
        if matrix[i] is None or any(p is None for p in parts):
            out.append(None)
            continue
        if weights is not None:
            size, w_i = sum(t[i] for t in target), weights
        else:
            w_i = [float(len(p)) for p in parts]  # type: ignore[arg-type]
            size = min(sizes[i], int(sum(w_i)))
        out.append(BlendedSamples(parts, normalize(w_i), size, spec))  # type: ignore[arg-type]
    return out
