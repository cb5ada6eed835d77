"""LLaMA-Factory's SFT processor: rendered messages -> (input_ids, labels), chunk by chunk.

The same rules as `SupervisedDatasetProcessor._encode_data_example` of LLaMA-Factory
0.9.5: (prompt, reply) pairs; with a cutoff (`--seq-length`, LF's `cutoff_len`) each pair
is cut by `infer_seqlen` and later pairs are dropped once the cutoff is reached (samples
are truncated, never skipped); prompts are masked unless `train_on_prompt`; with
`mask_history` only the last reply is trained and the last turns are kept first;
`efficient_eos` labels each later prompt's first token with EOS and closes with one EOS.
All text slots of a chunk are tokenized in one batch call.
"""

from __future__ import annotations

import numpy as np

from atelier.llm.data.conversation import RecordError, alpaca_conversation, sharegpt_conversation
from atelier.llm.data.lf_templates import LFTemplate, Mark, render
from atelier.llm.data.sources import Chunk

IGNORE = -100


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """LLaMA-Factory's split of a cutoff between a prompt and its reply."""
    if target_len * 2 < cutoff_len:  # truncate source
        max_target_len = cutoff_len
    elif source_len * 2 < cutoff_len:  # truncate target
        max_target_len = cutoff_len - source_len
    else:  # truncate both
        max_target_len = int(cutoff_len * (target_len / (source_len + target_len)))
    new_target_len = min(max_target_len, target_len)
    max_source_len = max(cutoff_len - new_target_len, 0)
    return min(max_source_len, source_len), new_target_len


def supervise(
    t: LFTemplate, messages: list[list[int]], eos: int | None, cutoff: int | None
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one sample from its per-message ids."""
    pairs = [(messages[i], messages[i + 1]) for i in range(0, len(messages), 2)]
    total = 1 if t.efficient_eos else 0
    if t.mask_history:
        pairs = pairs[::-1]  # high priority for the last turns
    input_ids: list[int] = []
    labels: list[int] = []
    for turn, (source, target) in enumerate(pairs):
        if cutoff is not None:
            if total >= cutoff:
                break
            n_source, n_target = infer_seqlen(len(source), len(target), cutoff - total)
            source, target = source[:n_source], target[:n_target]
        total += len(source) + len(target)
        if t.train_on_prompt:
            source_label = source
        elif t.efficient_eos and turn != 0 and source:  # (LF: one label too many if empty)
            source_label = [eos] + [IGNORE] * (len(source) - 1)  # type: ignore[list-item]
        else:
            source_label = [IGNORE] * len(source)
        target_label = [IGNORE] * len(target) if t.mask_history and turn != 0 else target
        if t.mask_history:
            input_ids = source + target + input_ids
            labels = source_label + target_label + labels
        else:
            input_ids += source + target
            labels += source_label + target_label
    if t.efficient_eos:
        input_ids.append(eos)  # type: ignore[arg-type]
        labels.append(eos)  # type: ignore[arg-type]
    return input_ids, labels


LF_COLUMNS = {"system": "system", "tools": "tools", "history": "history"}


class LFChunkEncoder:
    """Encodes instruction chunks with an `LFTemplate`; built by `handlers.Encoder`."""

    def __init__(self, job, backend, kind: str) -> None:
        self.job = job
        self.backend = backend
        self.kind = kind  # "alpaca" | "sharegpt"
        self.template: LFTemplate = job.template
        self.token_ids = dict(self.template.token_ids)  # looked up by template_sources
        # unlike MindSpeed's defaults, the system/tools/history columns are read whenever
        # present (as a LLaMA-Factory dataset_info.json that maps them); --map-keys renames
        self.map_keys = {**LF_COLUMNS, **job.map_keys}

    def _conversation(self, rec):
        if self.kind == "sharegpt":
            return sharegpt_conversation(rec, self.map_keys)
        return alpaca_conversation(rec, self.map_keys)

    def _marker(self, slot: Mark) -> list[int]:
        tok = self.job.tokenizer
        if slot.kind == "bos":
            return [] if tok.bos is None else [tok.bos]
        if slot.kind == "eos":
            return [] if tok.eos is None else [tok.eos]
        return [self.token_ids[slot.value]]

    def encode(self, chunk: Chunk, res):
        """Fill `res` (a handlers.ChunkResult) from the chunk's records."""
        from atelier.llm.data.handlers import iter_records

        unit = "line" if chunk.kind == "lines" else "record"
        samples: list[list[list[str | Mark]]] = []
        for number, rec in iter_records(chunk, "text"):
            res.read += 1
            try:
                if isinstance(rec, RecordError):
                    raise rec
                samples.append(render(self.template, self._conversation(rec)))
            except RecordError as e:
                res.errors.append(f"{chunk.path}: {unit} {number}: {e}")
                res.skipped["bad_record"] += 1
        texts = [s for msgs in samples for m in msgs for s in m if isinstance(s, str) and s]
        encoded = iter(self.backend.encode_batch(texts, False) if texts else [])
        eos = self.job.tokenizer.eos
        all_ids: list[list[int]] = []
        all_labels: list[list[int]] = []
        for msgs in samples:
            per_message = []
            for m in msgs:
                ids: list[int] = []
                for s in m:
                    if isinstance(s, Mark):
                        ids += self._marker(s)
                    elif s:
                        ids += next(encoded)
                per_message.append(ids)
            ids, labels = supervise(self.template, per_message, eos, self.job.seq_length)
            if not ids:
                res.skipped["empty"] += 1
                continue
            all_ids.append(ids)
            all_labels.append(labels)
        res.written = len(all_ids)
        lens = np.fromiter(map(len, all_ids), dtype=np.int32, count=len(all_ids))
        ones = np.ones(len(all_ids), dtype=np.int64)
        flat = np.fromiter((i for s in all_ids for i in s), dtype=np.int64, count=int(lens.sum()))
        flat_labels = np.fromiter(
            (i for s in all_labels for i in s), dtype=np.int64, count=int(lens.sum())
        )
        res.tokens = int(flat.size)
        res.outputs = {
            "input_ids": (flat, lens, ones),
            "attention_mask": (np.ones(flat.size, dtype=np.int64), lens, ones),
            "labels": (flat_labels, lens, ones),
        }
        return res


def encode_records(job, records: list) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) per record, through the same Encoder a preprocess run uses.

    For checks against LLaMA-Factory (tests, scripts/make_lf_goldens.py); the first bad
    record is an AtelierError.
    """
    from atelier.core.errors import AtelierError
    from atelier.llm.data.handlers import Encoder

    chunk = Chunk(0, "<records>", 1, "records", "json", list(records), 0)
    res = Encoder(job).encode(chunk)
    if res.errors:
        raise AtelierError(res.errors[0])
    ids, lens, _ = res.outputs["input_ids"]
    labels = res.outputs["labels"][0]
    out = []
    start = 0
    for n in lens.tolist():
        out.append((ids[start : start + n].tolist(), labels[start : start + n].tolist()))
        start += n
    return out
