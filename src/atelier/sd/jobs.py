"""The job queue: one device, one job at a time, everything else waits in order.

Synchronous routes are thin wrappers: they submit a job and wait for it. Callers
behind a short gateway timeout submit with POST /v1/jobs and poll or stream.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from atelier.sd.engine import Cancelled, Engine, EngineError, GenerationResult
from atelier.sd.params import GenerationRequest

log = logging.getLogger("atelier.sd.jobs")
TERMINAL = ("succeeded", "failed", "cancelled")
RECENT = 20  # jobs (and steps x 10) the time estimates look back on
RETRY_AFTER_RANGE = (1, 120)  # seconds; a client told to wait 30 minutes just gives up


class QueueFull(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__("queue is full")
        self.retry_after = retry_after


@dataclass
class Job:
    request: GenerationRequest
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: str = "queued"
    step: int = 0
    total: int = 0
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    result: GenerationResult | None = None
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    version: int = 0  # bumped on every change, for server-sent events
    _listeners: list[tuple[Any, Any]] = field(default_factory=list, repr=False)

    def touch(self) -> None:
        """Record a change and wake every asyncio listener (called from the worker)."""
        self.version += 1
        for loop, event in list(self._listeners):
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that listener's event loop is closed: it left
                self.unlisten(event)

    def listen(self) -> Any:
        """An asyncio.Event set on each change; call from the event loop."""
        import asyncio

        event = asyncio.Event()
        self._listeners.append((asyncio.get_running_loop(), event))
        return event

    def unlisten(self, event: Any) -> None:
        self._listeners[:] = [(lp, ev) for lp, ev in self._listeners if ev is not event]

    @property
    def progress(self) -> float:
        if self.state == "succeeded":
            return 1.0
        return self.step / self.total if self.total else 0.0

    @property
    def kept_bytes(self) -> int:
        """What this job holds in memory once finished (its PNGs)."""
        return sum(len(im.png) for im in self.result.images) if self.result else 0


@dataclass(frozen=True)
class Retention:
    """How much of finished jobs is kept for GET /v1/jobs/{id}: the oldest go first once
    any bound is passed, so a burst of large images cannot grow the process without end."""

    jobs: int = 256
    bytes: int = 256 << 20
    seconds: float = 3600.0


class JobQueue:
    def __init__(
        self,
        engine: Engine,
        max_queue: int,
        keep: Retention | None = None,
        metrics: Any = None,
    ) -> None:
        self.engine = engine
        self.max_queue = max_queue
        self.metrics = metrics
        self._pending: collections.deque[Job] = collections.deque()
        self._jobs: dict[str, Job] = {}
        self._finished: collections.deque[Job] = collections.deque()
        self._finished_bytes = 0
        self._keep = keep or Retention()
        self._cv = threading.Condition()
        self.current: Job | None = None
        # recent step and job durations: medians, so one slow warm-up does not skew ETAs
        self._step_times: collections.deque[float] = collections.deque(maxlen=RECENT * 10)
        self._job_times: collections.deque[float] = collections.deque(maxlen=RECENT)
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="atelier-sd-worker", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ public

    def submit(self, request: GenerationRequest) -> Job:
        with self._cv:
            if len(self._pending) >= self.max_queue:
                raise QueueFull(self._retry_after())
            job = Job(request, total=request.steps * request.n_iter)
            self._jobs[job.id] = job
            self._pending.append(job)
            self._cv.notify_all()
        self._gauge()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._cv:
            self._prune()
            return self._jobs.get(job_id)

    def cancel(self, job: Job, reason: str = "cancelled") -> None:
        """Queued: dropped now. Running: stopped at its next denoising step. Done: no-op."""
        with self._cv:
            job.cancel.set()
            if job.state == "queued":
                self._pending.remove(job)
                self._finish(job, "cancelled", error=f"{reason} before it started")
        self._gauge()

    @property
    def kept(self) -> tuple[int, int]:
        """(finished jobs kept, bytes they hold), for tests and /v1/status."""
        with self._cv:
            return len(self._finished), self._finished_bytes

    def position(self, job: Job) -> int:
        """0 when running or done, else 1 + jobs ahead of it."""
        with self._cv:
            try:
                return list(self._pending).index(job) + 1
            except ValueError:
                return 0

    @property
    def depth(self) -> int:
        return len(self._pending)

    @property
    def step_seconds(self) -> float | None:
        times = list(self._step_times)
        return statistics.median(times) if times else None

    def eta(self, job: Job) -> float | None:
        per_step = self.step_seconds
        if per_step is None or job.state in TERMINAL:
            return None if job.state not in TERMINAL else 0.0
        ahead = 0
        with self._cv:
            if job.state == "queued":
                ahead = sum(
                    j.total for j in itertools.takewhile(lambda j: j is not job, self._pending)
                )
                if self.current is not None:
                    ahead += self.current.total - self.current.step
        return (ahead + job.total - job.step) * per_step

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()

    # ------------------------------------------------------------ worker

    def _retry_after(self) -> int:
        """When the queue is full a slot frees as soon as one job ends: about one recent
        job's duration (median, so one slow outlier does not say 'come back in 30 min')."""
        times = list(self._job_times)
        per_job = statistics.median(times) if times else 5.0
        lo, hi = RETRY_AFTER_RANGE
        return int(min(hi, max(lo, math.ceil(per_job))))

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(len(self._pending))

    def _finish(self, job: Job, state: str, error: str | None = None) -> None:
        if self.current is job:  # before waiters wake: /health must not say busy after
            self.current = None
        job.state = state
        job.error = error
        job.finished = time.time()
        job.touch()
        job.done.set()
        self._finished.append(job)
        self._finished_bytes += job.kept_bytes
        self._prune()

    def _prune(self) -> None:
        """Forget the oldest finished jobs past any retention bound (call under the lock)."""
        keep, now = self._keep, time.time()
        while self._finished and (
            len(self._finished) > keep.jobs
            or (self._finished_bytes > keep.bytes and len(self._finished) > 1)  # keep the newest
            or now - (self._finished[0].finished or now) > keep.seconds
        ):
            old = self._finished.popleft()
            self._finished_bytes -= old.kept_bytes
            self._jobs.pop(old.id, None)

    def _run(self) -> None:
        """The worker loop; one job's failure must never stop it, or the service is dead."""
        while True:
            try:
                if not self._run_one():
                    return
            except Exception:
                log.exception("job worker error (the worker goes on)")
                with self._cv:
                    self.current = None
                time.sleep(0.1)

    def _run_one(self) -> bool:
        """Run the next job; False once the queue is closed."""
        with self._cv:
            while not self._pending and not self._stop:
                self._cv.wait()
            if self._stop:
                return False
        # wait for the model outside the lock, so submit() and cancel() stay quick
        self.engine.ready.wait()
        with self._cv:
            if not self._pending:
                return True
            job = self._pending.popleft()
            job.state = "running"
            job.started = time.time()
            job.touch()
            self.current = job
        self._gauge()
        try:
            self._execute(job)
        finally:
            with self._cv:
                self.current = None
                if job.state not in TERMINAL:  # _execute itself broke
                    self._finish(job, "failed", error="internal error")
        return True

    def _execute(self, job: Job) -> None:
        last = time.perf_counter()

        def on_step(done: int, total: int) -> None:
            nonlocal last
            now = time.perf_counter()
            self._step_times.append(now - last)
            last = now
            job.step, job.total = done, total
            job.touch()

        t0 = time.perf_counter()
        try:
            result = self.engine.generate(job.request, on_step, job.cancel.is_set)
        except Cancelled:
            with self._cv:
                self._finish(job, "cancelled", error="cancelled")
            log.info('{"event": "job_cancelled", "id": "%s"}', job.id)
            return
        except EngineError as e:
            with self._cv:
                self._finish(job, "failed", error=str(e))
            log.warning('{"event": "job_failed", "id": "%s", "error": "%s"}', job.id, e)
            return
        except Exception as e:
            log.exception("job %s crashed", job.id)
            with self._cv:
                self._finish(job, "failed", error=f"internal error: {type(e).__name__}: {e}")
            return
        job.result = result
        job.step = job.total
        seconds = time.perf_counter() - t0
        self._job_times.append(seconds)
        if self.metrics is not None:  # before completion is signalled, so readers see it
            self.metrics.job_seconds.observe(seconds)
            self.metrics.images.inc(len(result.images))
        with self._cv:
            self._finish(job, "succeeded")
        log.info(
            '{"event": "job_done", "id": "%s", "images": %d, "seconds": %.3f}',
            job.id,
            len(result.images),
            seconds,
        )
