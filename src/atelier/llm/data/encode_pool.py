"""The encoders of `preprocess`: worker processes started before the tokenizer is loaded.

Why: with an encoder 30-70x faster than `tokenizers`, start-up is a large part of a run.
The main process imports transformers (~3 s) and loads the tokenizer; each worker imports
numpy, tokenizers and the fast backend, then builds the reference and the fast encoder
(~2 s for Llama-3). So the workers are started first and import while the main process
loads; the job (with the 6-9 MB tokenizer JSON) reaches each of them once, pickled once,
through a queue; and each worker runs the load-time identity check (`pick_backend`) on the
encoders it builds anyway, instead of the main process building a third pair.

Every worker reports its verdict (backend, notice) and waits for the main process's
decision: all agree -> that backend; they differ (a backend that failed in one worker) ->
every worker uses hf, with the failing worker's notice. The report therefore says what an
in-process check says, and `--workers 1` runs the same check in-process (where a test's
monkeypatched backend table applies).
"""

from __future__ import annotations

import multiprocessing
import pickle
import queue
import signal
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from atelier.core.errors import AtelierError
from atelier.core.workers import children_ignore_sigint, process_pool
from atelier.llm.data import sources
from atelier.llm.data import tokenizer_backends as backends
from atelier.llm.data.handlers import ChunkResult, EncodeJob, Encoder
from atelier.llm.data.tokenizer import pick_backend
from atelier.llm.data.tokenizer_backends import single_threaded

POLL_S = 0.2  # how often the main process looks for a dead worker while it waits


@dataclass(frozen=True)
class Setup:
    """What each encoder starts from."""

    job: EncodeJob
    wanted: str  # --tokenizer-backend, to check
    sample: Sequence[str] = ()  # the input's first texts, for the load-time check


def checked_encoder(setup: Setup) -> tuple[Encoder, str | None]:
    """The encoder with the backend the load-time check allows, and its notice."""
    tok = setup.job.tokenizer
    try:
        loaded, notice, built = pick_backend(tok, setup.wanted, setup.sample)
    except Exception as e:  # a backend that breaks (not just refuses) in this process
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        loaded, built = replace(tok, backend="hf"), None
        notice = f"{setup.wanted} failed to start ({first}); using hf"
    return Encoder(replace(setup.job, tokenizer=loaded), built), notice


def agree(verdicts: list[tuple[str, str | None]]) -> tuple[str, str | None]:
    """One decision from every worker's (backend, notice): theirs if all agree, else hf."""
    names = [b for b, _ in verdicts]
    if len(set(names)) == 1:
        return verdicts[0]
    notes = [n for b, n in verdicts if b == "hf" and n]
    why = notes[0] if notes else f"workers disagreed ({', '.join(sorted(set(names)))}); using hf"
    return "hf", why


class InProcess:
    """`--workers 1`: the same check and encoder, in this process."""

    def __init__(self) -> None:
        self.encoder: Encoder | None = None

    def start(self, setup: Setup) -> tuple[str, str | None]:
        single_threaded()
        self.encoder, notice = checked_encoder(setup)
        return self.encoder.backend.name, notice

    def map(self, chunks: Iterator[sources.Chunk]) -> Iterator[ChunkResult]:
        assert self.encoder is not None
        for chunk in chunks:
            yield self.encoder.encode(chunk)

    def close(self) -> None:
        pass


class WorkerPool:
    """`workers` processes, started now, encoding chunks once `start` gave them the job.

    Use as: pool = WorkerPool(n) (as early as possible), then `start(setup)`, `map(chunks)`
    and always `close()` (also on errors and Ctrl-C: workers still waiting for the job are
    released, then joined).
    """

    def __init__(self, workers: int) -> None:
        ctx = multiprocessing.get_context("spawn")  # process_pool spawns too
        self.workers = workers
        self.setups: Any = ctx.Queue()
        self.verdicts: Any = ctx.Queue()
        self.decisions: Any = ctx.Queue()
        self.fallback = ctx.Event()  # set when any worker had to switch to hf mid-run
        self.pool = process_pool(
            workers, _init_worker, (self.setups, self.verdicts, self.decisions, self.fallback)
        )
        # ProcessPoolExecutor spawns on submit: one no-op per worker starts them all now
        with children_ignore_sigint():
            submit = ProcessPoolExecutor.submit  # not the pool's: it installs a SIGINT handler
            self.started = [submit(self.pool, _ready) for _ in range(workers)]
        self.decided = False

    def start(self, setup: Setup) -> tuple[str, str | None]:
        """Hand every worker the job; (backend, notice) they agreed on."""
        blob = pickle.dumps(setup, protocol=pickle.HIGHEST_PROTOCOL)  # once, not per worker
        for _ in range(self.workers):
            self.setups.put(blob)
        verdicts = [self._verdict() for _ in range(self.workers)]
        errors = [v[1] for v in verdicts if v[0] == "error"]
        decision = agree(verdicts) if not errors else ("hf", None)
        for _ in range(self.workers):
            self.decisions.put(decision[0])
        self.decided = True
        if errors:
            raise AtelierError(errors[0])
        return decision

    def _verdict(self) -> tuple[str, str | None]:
        while True:
            try:
                return self.verdicts.get(timeout=POLL_S)
            except queue.Empty:
                for f in self.started:  # a worker that died: the pool is broken
                    if f.done() and (e := f.exception()) is not None:
                        raise e from None

    def map(self, chunks: Iterator[sources.Chunk]) -> Iterator[ChunkResult]:
        """Results in input order; at most 2 chunks per worker are in flight."""
        pending: deque[Future[ChunkResult]] = deque()
        for chunk in chunks:
            pending.append(self.pool.submit(_encode_in_worker, chunk))
            if len(pending) >= 2 * self.workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def close(self) -> None:
        if not self.decided:  # release workers still waiting for the job or the decision
            for q in (self.setups, self.decisions):
                for _ in range(self.workers):
                    q.put(None)
        self.pool.shutdown(wait=True, cancel_futures=True)
        for q in (self.setups, self.verdicts, self.decisions):
            q.close()
            q.cancel_join_thread()


def encoders(workers: int) -> InProcess | WorkerPool:
    return WorkerPool(workers) if workers > 1 else InProcess()


# ------------------------------------------------------------------ in the worker

_encoder: Encoder | None = None
_fallback: Any = None  # an Event set when any worker had to switch to hf


def _init_worker(setups: Any, verdicts: Any, decisions: Any, fallback: Any) -> None:
    """Import, wait for the job, build and check the encoder, adopt the common decision."""
    global _encoder, _fallback
    # Ctrl-C reaches the whole process group: the main process alone handles it and shuts
    # the pool down (a worker interrupted mid-import would print a traceback)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    single_threaded()
    _fallback = fallback
    for name in backends.FAST_BACKENDS:  # import them while the main process loads
        backends.available(name)
    import tokenizers  # noqa: F401

    blob = setups.get()
    if blob is None:  # the main process failed before it had a job
        return
    try:
        encoder, notice = checked_encoder(pickle.loads(blob))
        verdicts.put((encoder.backend.name, notice))
    except AtelierError as e:
        verdicts.put(("error", str(e)))
        decisions.get()
        return
    decision = decisions.get()
    if decision is None:
        return
    if decision != encoder.backend.name:  # another worker's backend failed: all use hf
        encoder.backend.use_reference("another worker's backend failed its check")
    _encoder = encoder


def _ready() -> None:
    """A no-op task: submitting one per worker makes the pool start them all at once."""


def _encode_in_worker(chunk: sources.Chunk) -> ChunkResult:
    if _encoder is None:
        raise RuntimeError("this worker has no encoder (its start-up was cancelled)")
    if _fallback.is_set():
        _encoder.backend.use_reference("another worker found a difference")
    res = _encoder.encode(chunk)
    if res.fell_back is not None:
        _fallback.set()
    return res
