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
from atelier.llm.data.handler_kinds import (
    OUTPUT_KEYS,
    SFT_KINDS,
    handler_kind,
)
from atelier.llm.data.line_ranges import loaded
from atelier.llm.data.render import assemble, messages
from atelier.llm.data.render import texts as element_texts
from atelier.llm.data.sources import Chunk
from atelier.llm.data.template_sources import is_lf
from atelier.llm.data.templates import Template
from atelier.llm.data.tokenizer import Backend, Built, LoadedTokenizer

try:
    import orjson

    _loads = orjson.loads
    _JSONError: tuple[type[Exception], ...] = (orjson.JSONDecodeError,)
except ImportError:  # pragma: no cover - orjson is a declared dependency
    import json

    _loads = json.loads
    _JSONError = (ValueError,)

IGNORE = -100


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
    # MindSpeed drops a sample of >= seq_length tokens but still ends its document, so an
    # empty document stays in every output; False leaves no trace (--no-empty-documents).
    empty_documents: bool = True
    # --neat-pack keeps long samples (cut at packing time) instead of dropping them
    drop_long: bool = True
    eod_id: int | None = None  # EOD of instruction data: the template's EOS (template_eos)
    placeholder_id: int | None = None  # process reward: the step marker's id
    reward_ids: dict[str, int] = field(default_factory=dict)  # process reward: label -> id

    @property
    def output_keys(self) -> tuple[str, ...]:
        kind = handler_kind(self.handler)
        return self.json_keys if kind == "pretrain" else OUTPUT_KEYS[kind]

    def too_long(self, length: int) -> bool:
        """MindSpeed's rule: a sample of seq_length tokens or more is dropped."""
        return self.drop_long and self.seq_length is not None and length >= self.seq_length


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


def store_samples(
    res: ChunkResult, job: EncodeJob, samples: list[tuple[list[int], ...] | None]
) -> None:
    """Per document one sequence per output key; None is a sample dropped as too long,
    which leaves an empty document when `job.empty_documents` (as MindSpeed writes)."""
    kept = [s for s in samples if s is not None]
    per_doc = np.asarray(
        [0 if s is None else 1 for s in samples if s is not None or job.empty_documents],
        dtype=np.int64,
    )
    res.written = len(kept)
    if dropped := len(samples) - len(kept):
        res.skipped["too_long"] += dropped
    for k, key in enumerate(job.output_keys):
        seqs = [s[k] for s in kept]
        lens = np.fromiter(map(len, seqs), dtype=np.int32, count=len(seqs))
        flat = _flat(seqs)
        if k == 0:
            res.tokens = int(flat.size)
        res.outputs[key] = (flat, lens, per_doc)


class Encoder:
    def __init__(self, job: EncodeJob, built: Built | None = None) -> None:
        self.job = job
        self.kind = handler_kind(job.handler)
        self.backend = Backend(job.tokenizer, built)  # built: encoders the check made
        # GeneralInstructionHandler without a template is MindSpeed's Prompter (general_prompt)
        self.general = job.handler == "GeneralInstructionHandler" and job.template is None
        needs = self.kind not in ("pretrain", "process_reward")
        if needs and job.template is None and not self.general:
            raise AtelierError(f"{job.handler} needs --prompt-type")
        tok = job.tokenizer
        if self.kind == "pretrain" and job.append_eod and tok.eod is None:
            raise AtelierError("--append-eod: the tokenizer has no EOS/EOD token")
        self._lf = None  # LLaMA-Factory template source: its own renderer and SFT rules
        if self.kind != "pretrain" and is_lf(job.template):
            from atelier.llm.data.lf_supervised import LFChunkEncoder

            self._lf = LFChunkEncoder(job, self.backend, self.kind)
        elif job.template is not None and job.template.efficient_eos and tok.eos is None:
            raise AtelierError(
                f"--prompt-type {job.template.name} uses EOS but the tokenizer has none"
            )

    def encode(self, chunk: Chunk) -> ChunkResult:
        chunk = loaded(chunk)  # a chunk planned at an offset is read here
        already = self.backend.fell_back
        if self._lf is not None:
            res = self._lf.encode(chunk, ChunkResult(chunk.index, {}, nbytes=chunk.nbytes))
        elif self.kind == "pretrain":
            res = self._pretrain(chunk)
        elif self.kind in SFT_KINDS:
            res = self._instruction(chunk)
        else:
            from atelier.llm.data import rlhf_handlers

            res = rlhf_handlers.encode(self, chunk)
        res.backend = self.backend.name
        if self.backend.fell_back is not None and already is None:
            res.fell_back = self.backend.fell_back
        return res

    # ------------------------------------------------------------- pretrain

    def _pretrain(self, chunk: Chunk) -> ChunkResult:
        job = self.job
        res = ChunkResult(chunk.index, {}, nbytes=chunk.nbytes)
        quick = self._one_text_per_line(chunk)
        if quick is not None:
            res.read = len(quick)
            self._pretrain_flat(res, quick)
            return res
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
        keep_empty = job.empty_documents  # a text that encodes to no ids, as in _pretrain_flat
        seqs: list[list[list[int]]] = [[] for _ in range(nkeys)]
        seq_lens: list[list[int]] = [[] for _ in range(nkeys)]
        per_doc: list[list[int]] = [[] for _ in range(nkeys)]
        for per_key in docs:
            encoded = [
                [e for s, e in ((s, next(ids)) for s in sentences) if s and (e or keep_empty)]
                for sentences in per_key
            ]
            if any(not e for e in encoded):
                res.skipped["empty"] += 1
                continue
            if job.append_eod:
                for e in encoded:
                    e[-1] = [*e[-1], job.tokenizer.eod]
            if any(job.too_long(sum(map(len, e))) for e in encoded):
                res.skipped["too_long"] += 1
                if job.empty_documents:
                    for k in range(nkeys):
                        per_doc[k].append(0)
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

    def _one_text_per_line(self, chunk: Chunk) -> list[str] | None:
        """The common case in one pass: JSON lines, one object with one text each.

        None when anything is unusual (a blank or malformed line, a missing key, a list
        of sentences): the general loop then reads the chunk and names the odd record.
        Same texts as that loop, without its per-record Python objects and checks.
        """
        if chunk.kind != "lines" or chunk.fmt != "jsonl" or len(self.job.json_keys) != 1:
            return None
        lines = chunk.payload.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        key = self.job.json_keys[0]
        try:
            texts = [_loads(line)[key] for line in lines]
        except (KeyError, TypeError, IndexError, *_JSONError):
            return None
        return texts if set(map(type, texts)) <= {str} else None

    def _pretrain_flat(self, res: ChunkResult, texts: list[str]) -> None:
        """One text per document, all in numpy: no per-token Python objects.

        Same rules as the general path: empty texts are skipped, EOD goes after the
        document, documents of seq_length tokens or more (EOD included) are dropped and,
        as MindSpeed does, leave an empty document (unless `job.empty_documents` is off).
        """
        job = self.job
        ids, lens = self.backend.encode_flat(texts, job.tokenizer.pretrain_special)
        # MindSpeed skips an empty text and keeps one that encodes to no ids (a 0-length
        # sequence); without empty documents neither is written
        keep = np.fromiter(map(bool, texts), dtype=bool, count=len(texts))
        if not job.empty_documents:
            keep &= lens > 0
        if n_empty := int(len(lens) - keep.sum()):
            res.skipped["empty"] += n_empty
        out_lens = lens + 1 if job.append_eod else lens
        per_doc = np.ones(int(keep.sum()), dtype=np.int64)
        if job.drop_long and job.seq_length is not None:
            too_long = keep & (out_lens >= job.seq_length)
            if n_long := int(too_long.sum()):
                res.skipped["too_long"] += n_long
                if job.empty_documents:
                    per_doc = (~too_long[keep]).astype(np.int64)
                else:
                    per_doc = per_doc[: int(keep.sum()) - n_long]
                keep &= ~too_long
        # the narrowest type that holds these ids (and EOD): uint16 for a vocabulary under
        # 65,536 is a quarter of int64's bytes to pickle back to the main process, and what
        # the writer stores for Megatron's dtype rule without converting
        top = max(int(ids.max()) if ids.size else 0, job.tokenizer.eod or 0)
        ids = ids.astype(np.uint16 if top <= 0xFFFF else np.int32)
        kept = ids if keep.all() else ids[np.repeat(keep, lens)]
        if job.append_eod:
            kept = np.insert(kept, np.cumsum(lens[keep]), job.tokenizer.eod)
        res.written = int(keep.sum())
        res.tokens = int(kept.size)
        res.outputs[job.json_keys[0]] = (kept, out_lens[keep].astype(np.int32), per_doc)

    # ------------------------------------------------------------- instruction

    def _conversation(self, rec: Any) -> Conversation:
        return self._conversation_with(rec, self.job.map_keys)

    def _conversation_with(self, rec: Any, map_keys: dict[str, Any]) -> Conversation:
        if self.kind.startswith("sharegpt"):
            return sharegpt_conversation(rec, map_keys)
        return alpaca_conversation(rec, map_keys)

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
        samples: list[tuple[list[int], ...] | None] = []
        eod = job.eod_id
        for msgs in convs:
            if t is None:
                ids, labels = general_ids(next(encoded), next(encoded))
            else:
                ids, labels = assemble(t, msgs, encoded, tok.bos, tok.eos)
            if not ids:
                res.skipped["empty"] += 1
                continue
            if job.append_eod and eod is not None:  # MindSpeed: a trained EOD after each sample
                ids.append(eod)
                labels.append(eod)
            too_long = job.too_long(len(ids))
            samples.append(None if too_long else (ids, [1] * len(ids), labels))
        store_samples(res, job, samples)
        return res
