"""Handlers: records -> token ids (and labels), batch by batch, inside a worker.

Names follow MindSpeed-LLM's `--handler-name`. Each chunk's texts are tokenized in
one `encode_batch` call: per-document calls are what makes the reference slow.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from atelier.core.errors import AtelierError
from atelier.llm.data.conversation import (
    Conversation,
    RecordError,
    alpaca_conversation,
    sharegpt_conversation,
)
from atelier.llm.data.general_prompt import general_ids, general_prompts
from atelier.llm.data.render import assemble, messages
from atelier.llm.data.render import texts as element_texts
from atelier.llm.data.sources import Chunk
from atelier.llm.data.templates import Template
from atelier.llm.data.tokenizer import Backend, LoadedTokenizer

try:
    import orjson

    _loads = orjson.loads
    _JSONError: tuple[type[Exception], ...] = (orjson.JSONDecodeError,)
except ImportError:  # pragma: no cover - orjson is a declared dependency
    import json

    _loads = json.loads
    _JSONError = (ValueError,)

HANDLERS = {
    "GeneralPretrainHandler": "pretrain",
    "GeneralInstructionHandler": "alpaca",
    "AlpacaStyleInstructionHandler": "alpaca",
    "SharegptStyleInstructionHandler": "sharegpt",
}
INSTRUCTION_KEYS = ("input_ids", "attention_mask", "labels")
IGNORE = -100


def handler_kind(name: str) -> str:
    if name not in HANDLERS:
        raise AtelierError(f"--handler-name {name}: unknown; known: {', '.join(HANDLERS)}")
    return HANDLERS[name]


@dataclass(frozen=True)
class EncodeJob:
    """What a worker needs to encode chunks; pickled once per worker."""

    handler: str
    tokenizer: LoadedTokenizer
    json_keys: tuple[str, ...]
    append_eod: bool
    seq_length: int | None
    map_keys: dict[str, Any]
    template: Template | None

    @property
    def output_keys(self) -> tuple[str, ...]:
        return self.json_keys if handler_kind(self.handler) == "pretrain" else INSTRUCTION_KEYS


@dataclass
class ChunkResult:
    index: int
    # key -> (flat ids, sequence lengths, sequences per document)
    outputs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    read: int = 0
    written: int = 0
    tokens: int = 0
    nbytes: int = 0
    skipped: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    backend: str = "hf"  # the encoder that produced this chunk
    fell_back: str | None = None  # why this worker switched to hf (first chunk that did)


def _where(chunk: Chunk, number: int) -> str:
    unit = "line" if chunk.kind == "lines" else "record"
    return f"{chunk.path}: {unit} {number}"


def iter_records(chunk: Chunk, text_key: str) -> Iterator[tuple[int, Any]]:
    """(number, record or RecordError); blank lines are not records."""
    if chunk.kind == "records":
        yield from enumerate(chunk.payload, chunk.first)
        return
    lines = chunk.payload.split(b"\n")
    for number, line in enumerate(lines[:-1] if lines[-1] == b"" else lines, chunk.first):
        if not line.strip():
            continue
        if chunk.fmt == "text":
            try:
                yield number, {text_key: line.rstrip(b"\r").decode("utf-8")}
            except UnicodeDecodeError as e:
                yield number, RecordError(f"not valid UTF-8 ({e.reason} at byte {e.start})")
            continue
        try:
            yield number, _loads(line)
        except _JSONError as e:
            yield number, RecordError(f"malformed JSON ({str(e).split(':')[0]})")


def _flat(seqs: list[list[int]]) -> np.ndarray:
    total = sum(map(len, seqs))
    return np.fromiter(chain.from_iterable(seqs), dtype=np.int64, count=total)


class Encoder:
    def __init__(self, job: EncodeJob) -> None:
        self.job = job
        self.kind = handler_kind(job.handler)
        self.backend = Backend(job.tokenizer)
        # GeneralInstructionHandler without a template is MindSpeed's Prompter (general_prompt)
        self.general = job.handler == "GeneralInstructionHandler" and job.template is None
        if self.kind != "pretrain" and job.template is None and not self.general:
            raise AtelierError(f"{job.handler} needs --prompt-type")
        tok = job.tokenizer
        if self.kind == "pretrain" and job.append_eod and tok.eod is None:
            raise AtelierError("--append-eod: the tokenizer has no EOS/EOD token")
        if job.template is not None and job.template.efficient_eos and tok.eos is None:
            raise AtelierError(
                f"--prompt-type {job.template.name} uses EOS but the tokenizer has none"
            )

    def encode(self, chunk: Chunk) -> ChunkResult:
        already = self.backend.fell_back
        res = self._pretrain(chunk) if self.kind == "pretrain" else self._instruction(chunk)
        res.backend = self.backend.name
        if self.backend.fell_back is not None and already is None:
            res.fell_back = self.backend.fell_back
        return res

    # ------------------------------------------------------------- pretrain

    def _pretrain(self, chunk: Chunk) -> ChunkResult:
        job = self.job
        res = ChunkResult(chunk.index, {}, nbytes=chunk.nbytes)
        docs: list[list[list[str]]] = []  # per record: per key: sentences
        for number, rec in iter_records(chunk, job.json_keys[0]):
            res.read += 1
            try:
                if isinstance(rec, RecordError):
                    raise rec
                if not isinstance(rec, dict):
                    raise RecordError(f"expected a JSON object, got {type(rec).__name__}")
                per_key = []
                for key in job.json_keys:
                    if key not in rec:
                        present = ", ".join(sorted(map(str, rec))) or "none"
                        raise RecordError(
                            f"missing key {key!r} (keys present: {present}); set --json-keys"
                        )
                    value = rec[key]
                    sentences = value if isinstance(value, list) else [value]
                    if not all(isinstance(s, str) for s in sentences):
                        raise RecordError(f"key {key!r} must be text or a list of texts")
                    per_key.append(sentences)
                docs.append(per_key)
            except RecordError as e:
                res.errors.append(f"{_where(chunk, number)}: {e}")
                res.skipped["bad_record"] += 1
        texts = [s for per_key in docs for sentences in per_key for s in sentences]
        if len(texts) == len(docs) and len(job.json_keys) == 1:  # one text per document
            self._pretrain_flat(res, texts)
            return res
        ids = iter(
            self.backend.encode_batch(texts, job.tokenizer.pretrain_special) if texts else []
        )
        nkeys = len(job.json_keys)
        seqs: list[list[list[int]]] = [[] for _ in range(nkeys)]
        seq_lens: list[list[int]] = [[] for _ in range(nkeys)]
        per_doc: list[list[int]] = [[] for _ in range(nkeys)]
        for per_key in docs:
            encoded = [
                [ids_ for ids_ in (next(ids) for _ in sentences) if ids_] for sentences in per_key
            ]
            if any(not e for e in encoded):
                res.skipped["empty"] += 1
                continue
            if job.append_eod:
                for e in encoded:
                    e[-1] = [*e[-1], job.tokenizer.eod]
            if job.seq_length is not None and any(
                sum(map(len, e)) > job.seq_length for e in encoded
            ):
                res.skipped["too_long"] += 1
                continue
            res.written += 1
            for k, e in enumerate(encoded):
                seqs[k].extend(e)
                seq_lens[k].extend(map(len, e))
                per_doc[k].append(len(e))
        for k, key in enumerate(job.json_keys):
            flat = _flat(seqs[k])
            res.tokens += int(flat.size)
            res.outputs[key] = (
                flat,
                np.asarray(seq_lens[k], dtype=np.int32),
                np.asarray(per_doc[k], dtype=np.int64),
            )
        return res

    def _pretrain_flat(self, res: ChunkResult, texts: list[str]) -> None:
        """One text per document, all in numpy: no per-token Python objects.

        Same rules as the general path: empty documents are skipped, EOD goes after the
        document, documents longer than seq_length (EOD included) are skipped.
        """
        job = self.job
        ids, lens = self.backend.encode_flat(texts, job.tokenizer.pretrain_special)
        keep = lens > 0
        if n_empty := int(len(lens) - keep.sum()):
            res.skipped["empty"] += n_empty
        out_lens = lens + 1 if job.append_eod else lens
        if job.seq_length is not None:
            too_long = keep & (out_lens > job.seq_length)
            if n_long := int(too_long.sum()):
                res.skipped["too_long"] += n_long
                keep &= ~too_long
        kept = ids if keep.all() else ids[np.repeat(keep, lens)]
        if job.append_eod:
            kept = np.insert(kept, np.cumsum(lens[keep]), job.tokenizer.eod)
        res.written = int(keep.sum())
        res.tokens = int(kept.size)
        res.outputs[job.json_keys[0]] = (
            kept,
            out_lens[keep].astype(np.int32),
            np.ones(res.written, dtype=np.int64),
        )

    # ------------------------------------------------------------- instruction

    def _conversation(self, rec: Any) -> Conversation:
        if self.kind == "sharegpt":
            return sharegpt_conversation(rec, self.job.map_keys)
        return alpaca_conversation(rec, self.job.map_keys)

    def _instruction(self, chunk: Chunk) -> ChunkResult:
        job = self.job
        tok = job.tokenizer
        t = job.template
        res = ChunkResult(chunk.index, {}, nbytes=chunk.nbytes)
        convs = []  # per conversation: per message, its template elements (render.py)
        for number, rec in iter_records(chunk, "text"):
            res.read += 1
            try:
                if isinstance(rec, RecordError):
                    raise rec
                if t is None:
                    convs.append(general_prompts(rec, job.map_keys))
                else:
                    convs.append(messages(t, self._conversation(rec)))
            except RecordError as e:
                res.errors.append(f"{_where(chunk, number)}: {e}")
                res.skipped["bad_record"] += 1
        texts = [e for msgs in convs for e in (msgs if t is None else element_texts(msgs))]
        # MindSpeed's Prompter tokenizes with the tokenizer's special tokens, templates without
        encoded = iter(self.backend.encode_batch(texts, t is None) if texts else [])
        all_ids: list[list[int]] = []
        all_labels: list[list[int]] = []
        for msgs in convs:
            if t is None:
                ids, labels = general_ids(next(encoded), next(encoded))
            else:
                ids, labels = assemble(t, msgs, encoded, tok.bos, tok.eos)
            if not ids:
                res.skipped["empty"] += 1
                continue
            if job.seq_length is not None and len(ids) > job.seq_length:
                res.skipped["too_long"] += 1
                continue
            all_ids.append(ids)
            all_labels.append(labels)
        res.written = len(all_ids)
        lens = np.fromiter(map(len, all_ids), dtype=np.int32, count=len(all_ids))
        ones = np.ones(len(all_ids), dtype=np.int64)
        flat_ids = _flat(all_ids)
        res.tokens = int(flat_ids.size)
        res.outputs = {
            "input_ids": (flat_ids, lens, ones),
            "attention_mask": (np.ones(flat_ids.size, dtype=np.int64), lens, ones),
            "labels": (_flat(all_labels), lens, ones),
        }
        return res
