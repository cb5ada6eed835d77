"""Instruction (SFT) samples as MindSpeed-LLM's `DecoderPackedMTFDataset` gives them.

MindSpeed's order: the split's rows (Megatron's legacy split rounding) are shuffled once per
epoch by one `RandomState(seed)`, epochs appended until there are at least `num_samples`.
Its loss: the model reads every `input_ids` token and position t is trained on
`labels[t + 1]` where that is not -100 (MindSpeed drops the last logit and the first label).
We hand the engine that shift done: `labels[t]` is the target of `tokens[t]`, `loss_mask`
says which are trained, and masked labels are 0 (a valid id) like megatron-core's.

Packed rows (`preprocess --pack`) hold several samples, each ending in EOS. With
`reset_attention_mask` MindSpeed cuts the row into segments after every EOS (its flash
attention's `actual_seq_len`); with `reset_position_ids` as well, positions restart in each
segment. MindSpeed resets positions only together with the attention mask, and so do we.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from atelier.core.errors import AtelierError
from atelier.llm.data import indexed
from atelier.llm.data.indexed import IndexedReader
from atelier.llm.train.data.cache import cache_dir, cached_arrays, lengths_digest
from atelier.llm.train.data.pretrain import SPLITS, ltor_fields
from atelier.llm.train.data.sampler import Sampled
from atelier.llm.train.data.spec import IGNORE, DataSpec, legacy_split_ranges

INDEX_VERSION = 1
KEYS = ("input_ids", "attention_mask", "labels")


def packed_prefix(prefix: str, key: str) -> str:
    return f"{prefix}_packed_{key}_document"


def open_instruction(prefix: str) -> dict[str, IndexedReader]:
    """The `input_ids` and `labels` readers of an instruction prefix, checked to agree."""
    for key in KEYS:
        if prefix.endswith(f"_packed_{key}_document"):
            base = prefix[: -len(f"_packed_{key}_document")]
            raise AtelierError(
                f"data_path {prefix}: give the instruction prefix without its suffix: {base}"
            )
    ids_prefix = packed_prefix(prefix, "input_ids")
    if not indexed.exists(ids_prefix):
        if indexed.exists(prefix):
            raise AtelierError(
                f"data_path {prefix}: a pretraining dataset ({prefix}.bin), not an instruction "
                "one; drop is_instruction (--is-instruction-dataset) to pretrain on it"
            )
        raise AtelierError(
            f"data_path {prefix}: no instruction dataset: looked for {ids_prefix}.bin/.idx and "
            f"{packed_prefix(prefix, 'labels')}.bin/.idx; `atelier llm preprocess --input FILE "
            "--output-prefix OUT --handler-name AlpacaStyleInstructionHandler (or "
            "SharegptStyleInstructionHandler) --prompt-type NAME` writes "
            "OUT_packed_{input_ids,attention_mask,labels}_document (pass OUT)"
        )
    labels_prefix = packed_prefix(prefix, "labels")
    if not indexed.exists(labels_prefix):
        raise AtelierError(
            f"data_path {prefix}: {labels_prefix}.bin/.idx missing next to {ids_prefix}; "
            "write the dataset again with `atelier llm preprocess`"
        )
    ids, labels = IndexedReader.open(ids_prefix), IndexedReader.open(labels_prefix)
    if len(ids) != len(labels) or not np.array_equal(ids.lengths, labels.lengths):
        raise AtelierError(
            f"{labels_prefix}.idx: its rows do not match {ids_prefix}.idx ({len(labels)} vs "
            f"{len(ids)} rows, or different lengths); write the dataset again"
        )
    return {"input_ids": ids, "labels": labels}


def shuffle_rows(beg: int, end: int, num_samples: int, seed: int) -> np.ndarray:
    """MindSpeed's `_build_index_mappings`: epochs of shuffled rows until `num_samples`."""
    rng = np.random.RandomState(seed=seed)
    n = end - beg
    epochs = -(-num_samples // n) if num_samples > 0 else 0
    parts = []
    for _ in range(epochs):
        rows = np.arange(beg, end, dtype=np.int64)
        rng.shuffle(rows)
        parts.append(rows)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def prompt_spans(labels: np.ndarray) -> tuple[list[int], list[int]]:
    """Begins and ends of the runs of IGNORE labels (the prompts), as MindSpeed finds them."""
    ignored = np.concatenate([[False], labels == IGNORE, [False]])
    change = np.flatnonzero(ignored[1:] != ignored[:-1])
    return change[0::2].tolist(), change[1::2].tolist()


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """How much of a prompt and its reply to keep within `cutoff_len` (LLaMA-Factory's rule)."""
    if target_len * 2 < cutoff_len:
        max_target = cutoff_len
    elif source_len * 2 < cutoff_len:
        max_target = cutoff_len - source_len
    else:
        max_target = int(cutoff_len * (target_len / (source_len + target_len)))
    new_target = min(max_target, target_len)
    new_source = min(max(cutoff_len - new_target, 0), source_len)
    return new_source, new_target


def cut_turns(ids: np.ndarray, labels: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """MindSpeed's `_cut_instruction_token` for a sample longer than `limit`.

    Turn by turn (prompt = a run of IGNORE labels, reply = what follows), each kept
    proportionally in what room is left. As in MindSpeed, reply tokens are taken from the
    labels, and labels before the first prompt are dropped. MindSpeed's variant for
    `efficient_eos` templates writes -100 into input_ids; we do not reproduce it.
    """
    begins, ends = prompt_spans(labels)
    if len(ends) < len(begins):  # the sample ends inside a prompt: the run ends there
        ends.append(len(labels))
    out_ids: list[np.ndarray] = []
    out_labels: list[np.ndarray] = []
    total = 0
    for t, (b, e) in enumerate(zip(begins, ends, strict=True)):
        if total >= limit:
            break
        source, mask = ids[b:e], labels[b:e]
        target = labels[e : begins[t + 1]] if t + 1 < len(begins) else labels[e:]
        s_len, t_len = infer_seqlen(len(source), len(target), limit - total)
        total += s_len + t_len
        out_ids += [source[:s_len], target[:t_len]]
        out_labels += [mask[:s_len], target[:t_len]]
    if not out_ids:
        return ids[:0], labels[:0]
    return np.concatenate(out_ids), np.concatenate(out_labels)


class InstructionSamples(Sampled):
    """One split of an instruction prefix, in MindSpeed's order and with its labels."""

    def __init__(
        self,
        readers: dict[str, IndexedReader],
        rows: tuple[int, int],
        num_samples: int,
        split: str,
        spec: DataSpec,
    ) -> None:
        self.ids = readers["input_ids"]
        self.labels = readers["labels"]
        self.spec = spec
        self.split = split
        beg, end = rows
        description = {
            "kind": "DecoderPackedMTFDataset",
            "version": INDEX_VERSION,
            "prefix": str(Path(self.ids.prefix).resolve()),
            "lengths_md5": lengths_digest(self.ids.lengths),
            "rows": [beg, end],
            "num_samples": num_samples,
            "seed": spec.seed,
        }
        (self.order,) = cached_arrays(
            cache_dir(self.ids.prefix, "DecoderPackedMTFDataset", spec.data_cache_path),
            "DecoderPackedMTFDataset",
            split,
            description,
            ("shuffle_index",),
            lambda: (shuffle_rows(beg, end, num_samples, spec.seed),),
        )

    def __len__(self) -> int:
        return len(self.order)

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """input_ids and labels of sample i, cut to seq_length as MindSpeed cuts them."""
        r = int(self.order[i])
        ids = self.ids[r].astype(np.int64)
        labels = self.labels[r].astype(np.int64)
        limit = self.spec.seq_length
        if len(ids) > limit:
            if self.spec.reset_attention_mask:
                ids, labels = ids[:limit], labels[:limit]
            else:
                ids, labels = cut_turns(ids, labels, limit)
        return ids, labels

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        spec = self.spec
        ids, labels = self.row(i)
        n = len(ids)
        length = spec.seq_length if spec.pad_to_seq_length else n
        tokens = np.full(length, spec.fill_id, dtype=np.int64)
        tokens[:n] = ids
        target = np.full(length, IGNORE, dtype=np.int64)
        target[: max(n - 1, 0)] = labels[1:]
        loss_mask = (target != IGNORE).astype(np.float32)
        target[target == IGNORE] = 0
        # EOS boundaries come from the real tokens only; padding continues the last segment
        marks = np.full(length, -1, dtype=np.int64)
        marks[:n] = ids
        fields = ltor_fields(
            marks, spec.eod_id, spec.reset_position_ids and spec.reset_attention_mask,
            spec.reset_attention_mask, False,
        )  # fmt: skip
        return {
            "tokens": tokens,
            "labels": target,
            "loss_mask": loss_mask,
            "position_ids": fields["position_ids"],
            **({"segment_ids": fields["segment_ids"]} if spec.reset_attention_mask else {}),
        }


def build_instruction(spec: DataSpec, sizes: list[int]) -> list[InstructionSamples | None]:
    """MindSpeed's `build_train_valid_test_datasets` for `--is-instruction-dataset`."""
    prefixes, weights = spec.blend
    if len(prefixes) != 1 or weights is not None:
        raise AtelierError(
            f"data_path: instruction data takes one prefix without a weight (MindSpeed reads "
            f"only one), got {len(prefixes)} prefix(es){' with weights' if weights else ''}"
        )
    readers = open_instruction(prefixes[0])
    n = len(readers["input_ids"])
    out: list[InstructionSamples | None] = []
    for i, (beg, end) in enumerate(legacy_split_ranges(spec.split, n)):
        if end <= beg:
            out.append(None)
        else:
            out.append(InstructionSamples(readers, (beg, end), sizes[i], SPLITS[i], spec))
    return out
