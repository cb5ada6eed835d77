"""`atelier llm preprocess`: inputs -> Megatron indexed datasets, in parallel, atomically.

The main process reads raw blocks and writes results in input order; workers
parse and tokenize whole chunks. Output is therefore identical for any
`--workers`, and memory holds only the chunks in flight plus 4 bytes per sample.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from atelier.core.atomic import commit_files, temp_dir_sibling
from atelier.core.errors import AtelierError, disk_full_at
from atelier.core.log import get_logger
from atelier.core.paths import output_folder
from atelier.core.progress import interactive, progress_bar
from atelier.llm.data import line_ranges, sources
from atelier.llm.data.encode_job import build_job, input_sample, output_prefixes
from atelier.llm.data.encode_pool import Setup, encoders
from atelier.llm.data.handler_kinds import handler_kind
from atelier.llm.data.handlers import EncodeJob, Encoder
from atelier.llm.data.indexed import IndexedWriter, optimal_dtype
from atelier.llm.data.packing import pack_rows
from atelier.llm.data.special_ids import template_eos, template_pad
from atelier.llm.data.tokenizer import TokenizerSpec

# progress lines (non-interactive) at most this often: each costs rich ~4 ms of the main
# process, which shares the cores with the workers
LOG_EVERY_S = 1.0

log = get_logger(__name__)


@dataclass
class PreprocessConfig:
    input: str
    output_prefix: str
    tokenizer: TokenizerSpec
    handler_name: str = "GeneralPretrainHandler"
    json_keys: tuple[str, ...] = ("text",)
    append_eod: bool = False
    seq_length: int | None = None
    workers: int = 1
    log_interval: int = 1000
    map_keys: str | None = None
    prompt_type: str | None = None
    prompt_type_path: str | None = None
    pack: bool = False
    neat_pack: bool = False  # MindSpeed --neat-pack: per-sample attention ids in packed rows
    mask_padding: bool = False  # packed rows: attention_mask 0 on padding (MindSpeed writes 1)
    empty_documents: bool = True  # a sample dropped by --seq-length leaves an empty document
    token_dtype: str = "int32"  # pretraining ids: int32 (MindSpeed) | auto (Megatron-LM)
    placeholder_token: str = "ки"  # process reward: the step marker (MindSpeed's default)
    reward_tokens: tuple[str, ...] = ()
    shard: int = 0
    num_shards: int = 1
    skip_bad_records: bool = False
    # Set by the Ray driver for its tasks: an explicit record range instead of --shard, and
    # no error for a range whose records were all skipped (the driver checks the total).
    record_range: tuple[int, int] | None = None
    allow_empty: bool = False
    # --template-source (template_sources.py) and LLaMA-Factory's SFT options
    template_source: str = "mindspeed"
    train_on_prompt: bool = False
    mask_history: bool = False
    tool_date: str | None = None
    default_system: str | None = None
    enable_thinking: bool = True
    # a template token the tokenizer lacks is an error, not a warning (template_tokens.py)
    strict: bool = False
    # "mindspeed" (byte-identical) or "fixed": MindSpeed's template quirks corrected (render.py)
    template_quirks: str = "mindspeed"


@dataclass
class Report:
    read: int = 0
    written: int = 0
    tokens: int = 0
    seconds: float = 0.0
    skipped: Counter = field(default_factory=Counter)
    outputs: list[str] = field(default_factory=list)
    packed_rows: int | None = None
    backend: str = "hf"
    notices: list[str] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def lines(self) -> list[str]:
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
        out = [
            f"documents read     {self.read}",
            f"documents written  {self.written}",
            f"skipped            {sum(self.skipped.values())} ({skipped})",
            f"tokens             {self.tokens}",
            f"seconds            {self.seconds:.2f}",
            f"tokens/s           {self.tokens_per_s:,.0f}",
            f"docs/s             {self.read / self.seconds if self.seconds else 0:,.0f}",
        ]
        if self.packed_rows is not None:
            out.append(f"packed rows        {self.packed_rows}")
        out.append(f"tokenizer backend  {self.backend}")
        out += [f"note               {n}" for n in self.notices]
        out += [f"output             {p}" for p in self.outputs]
        return out


def _check(cfg: PreprocessConfig) -> None:
    if cfg.workers < 1:
        raise AtelierError(f"--workers {cfg.workers}: must be at least 1")
    if cfg.num_shards < 1 or not 0 <= cfg.shard < cfg.num_shards:
        raise AtelierError(f"--shard {cfg.shard} --num-shards {cfg.num_shards}: need 0 <= I < N")
    if cfg.seq_length is not None and cfg.seq_length < 1:
        raise AtelierError(f"--seq-length {cfg.seq_length}: must be positive")
    if cfg.pack and cfg.seq_length is None:
        raise AtelierError("--pack needs --seq-length (the length of each packed row)")
    if cfg.pack and cfg.seq_length is not None and cfg.seq_length < 2:
        raise AtelierError("--seq-length with --pack: at least 2 (one token is kept for padding)")
    if cfg.neat_pack and not cfg.pack:
        raise AtelierError("--neat-pack needs --pack (MindSpeed: 'Require set --pack')")
    if cfg.mask_padding and not cfg.pack:
        raise AtelierError("--mask-padding goes with --pack")
    if cfg.token_dtype not in ("int32", "auto"):
        raise AtelierError(f"--token-dtype {cfg.token_dtype}: use int32 or auto")
    if not cfg.output_prefix:
        raise AtelierError("--output-prefix is required")
    if not cfg.json_keys:
        raise AtelierError("--json-keys needs at least one key")
    if Path(cfg.output_prefix).is_dir():
        raise AtelierError(
            f"--output-prefix {cfg.output_prefix} is a folder; give a file prefix inside it, "
            f"e.g. {Path(cfg.output_prefix) / 'data'}"
        )
    output_folder(Path(cfg.output_prefix).parent, "--output-prefix")


# ------------------------------------------------------------------ run


def preprocess(cfg: PreprocessConfig) -> Report:
    """Run; a full disk is reported at the output folder, nothing half-written stays."""
    _check(cfg)
    with disk_full_at(Path(cfg.output_prefix).parent):
        return _preprocess(cfg)


def _preprocess(cfg: PreprocessConfig) -> Report:
    srcs = sources.resolve_inputs(cfg.input)
    # workers start first: they import while this process loads the tokenizer
    pool = encoders(cfg.workers)
    try:
        return _run(cfg, srcs, pool)
    finally:
        pool.close()


def _run(
    cfg: PreprocessConfig,
    srcs: list[sources.SourceFile],
    pool: Any,
) -> Report:
    job = build_job(cfg, srcs)
    setup = Setup(job, cfg.tokenizer.backend, input_sample(cfg, srcs))
    t0 = time.perf_counter()  # the report's seconds include the encoders' start-up, as before
    backend, notice = pool.start(setup)
    if notice:
        log.warning("tokenizer backend: %s", notice)
    job = replace(job, tokenizer=replace(job.tokenizer, backend=backend))
    finals = output_prefixes(job, cfg.output_prefix)
    is_pretrain = handler_kind(job.handler) == "pretrain"
    # MindSpeed builds every output with IndexedDatasetBuilder's default dtype, int32;
    # `auto` is Megatron-LM's tools/preprocess_data.py rule (uint16 under 65,500 ids)
    auto = is_pretrain and cfg.token_dtype == "auto"
    dtype = optimal_dtype(job.tokenizer.vocab_size) if auto else np.int32

    start, stop = 0, None
    total = sources.total_bytes(srcs)
    if cfg.record_range is not None:
        start, stop = cfg.record_range
    elif cfg.num_shards > 1:
        count = sources.count_total(srcs)
        start, stop = sources.shard_range(count, cfg.shard, cfg.num_shards)
        total = total * (stop - start) // max(count, 1)

    scratch = temp_dir_sibling(Path(f"{cfg.output_prefix}.pack")) if cfg.pack else None
    targets = {k: str(scratch / k) if scratch else p for k, p in finals.items()}
    writers = {k: IndexedWriter(p, dtype) for k, p in targets.items()}
    report = Report(backend=job.tokenizer.backend)
    try:
        done_bytes = 0
        next_log = cfg.log_interval
        last_log = -math.inf
        ranged = start > 0 or stop is not None
        planned: dict[int, sources.Chunk] = {}  # chunks in flight, for an error's line number
        chunks = (
            sources.iter_chunks(srcs, start, stop)
            if ranged
            else _kept(line_ranges.iter_chunks_at_offsets(srcs), planned)
        )
        results = pool.map(chunks)
        # closing(): on an error or Ctrl-C the pool is shut down here, workers joined,
        # not whenever the generator happens to be collected (after the parent's exit,
        # a worker still starting up finds its semaphores gone and prints a traceback)
        with progress_bar("preprocess", total, unit="bytes") as bar, contextlib.closing(results):
            for res in results:
                chunk = planned.pop(res.index, None)
                if res.errors and not cfg.skip_bad_records:
                    first = res.errors[0] if chunk is None else _renumbered_error(job, chunk)
                    raise AtelierError(f"{first} (fix it, or pass --skip-bad-records)")
                for key, (flat, lens, per_doc) in res.outputs.items():
                    writers[key].add_documents(flat, lens, per_doc)
                report.read += res.read
                report.written += res.written
                report.tokens += res.tokens
                report.skipped.update(res.skipped)
                if res.fell_back is not None:
                    log.warning("tokenizer backend: %s; chunk redone with hf", res.fell_back)
                    report.notices.append(f"{res.fell_back}; switched to hf")
                    report.backend = f"{job.tokenizer.backend}, then hf"
                done_bytes += res.nbytes
                bar.update(0, completed=done_bytes, status=f"{report.written} docs")
                now = time.perf_counter()
                if (
                    not interactive()
                    and cfg.log_interval
                    and report.read >= next_log
                    and now - last_log >= LOG_EVERY_S
                ):
                    last_log = now
                    elapsed = now - t0
                    log.info(
                        "Processed %d documents (%.0f docs/s, %.1f MB/s).",
                        report.read,
                        report.read / elapsed,
                        done_bytes / elapsed / 2**20,
                    )
                    next_log = (report.read // cfg.log_interval + 1) * cfg.log_interval
        if report.read == 0:
            where = f" in --shard {cfg.shard} of {cfg.num_shards}" if cfg.num_shards > 1 else ""
            raise AtelierError(
                f"--input {cfg.input}: no records found{where} (empty input); "
                "nothing was written or replaced"
            )
        if report.written == 0 and not cfg.allow_empty:
            raise AtelierError(_nothing_written(cfg, report))
        pairs = [pair for w in writers.values() for pair in w.finish()]
        if scratch is not None:
            commit_files(pairs)
            pairs = _pack(job, cfg, targets, finals, report)
        commit_files(pairs)
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    report.seconds = time.perf_counter() - t0
    report.outputs = list(finals.values())
    return report


def _kept(chunks: Iterator[sources.Chunk], planned: dict[int, sources.Chunk]) -> Iterator[Any]:
    for chunk in chunks:
        if chunk.offset is not None:
            planned[chunk.index] = chunk
        yield chunk


def _renumbered_error(job: EncodeJob, chunk: sources.Chunk) -> str:
    """The first error of a chunk a worker read at an offset (its lines counted from 1),
    with true line numbers: the chunk encoded again here, as a single process numbers it."""
    true = replace(
        line_ranges.loaded(chunk), first=1 + line_ranges.lines_before(chunk.path, chunk.offset)
    )
    return Encoder(job).encode(true).errors[0]


_HINTS = {
    "too_long": "raise --seq-length",
    "bad_record": "fix those records",
    "empty": "check --json-keys / --map-keys",
}


def _nothing_written(cfg: PreprocessConfig, report: Report) -> str:
    """Why a run produced no documents; the old outputs stay as they were."""
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(report.skipped.items())) or "none"
    hints = [h for k, h in _HINTS.items() if report.skipped.get(k)]
    if "too_long" in report.skipped and cfg.seq_length is not None:
        hints[hints.index("raise --seq-length")] = f"raise --seq-length {cfg.seq_length}"
    fix = f"; {', '.join(hints)}" if hints else ""
    return (
        f"--input {cfg.input}: 0 of {report.read} documents written (skipped: {reasons}); "
        f"nothing was replaced{fix}"
    )


def pack_dataset(
    job: EncodeJob, cfg: PreprocessConfig, unpacked: dict[str, str], report: Report
) -> None:
    """Pack finished unpacked datasets (key -> prefix) into cfg's outputs and commit them."""
    commit_files(_pack(job, cfg, unpacked, output_prefixes(job, cfg.output_prefix), report))


def _pack(
    job: EncodeJob,
    cfg: PreprocessConfig,
    unpacked: dict[str, str],
    finals: dict[str, str],
    report: Report,
) -> list[tuple[Path, Path]]:
    assert cfg.seq_length is not None
    pad = template_pad(job.tokenizer, template_eos(job.tokenizer, job.template))
    rows, pairs = pack_rows(
        unpacked, finals, cfg.seq_length, pad, neat=cfg.neat_pack, mask_padding=cfg.mask_padding
    )
    report.packed_rows = rows
    return pairs
