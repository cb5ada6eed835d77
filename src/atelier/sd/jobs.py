"""The job queue: one device, one job at a time, everything else waits in order.

Synchronous routes are thin wrappers: they submit a job and wait for it. Callers
behind a short gateway timeout submit with POST /v1/jobs and poll or stream.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from atelier.sd.engine import Cancelled, Engine, EngineError, GenerationResult
from atelier.sd.params import GenerationRequest

log = logging.getLogger("atelier.sd.jobs")
TERMINAL = ("succeeded", "failed", "cancelled")


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
            loop.call_soon_threadsafe(event.set)

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


class JobQueue:
    def __init__(
        self, engine: Engine, max_queue: int, keep: int = 256, metrics: Any = None
    ) -> None:
        self.engine = engine
        self.max_queue = max_queue
        self.metrics = metrics
        self._pending: collections.deque[Job] = collections.deque()
        self._jobs: dict[str, Job] = {}
        self._finished: collections.deque[str] = collections.deque()
        self._keep = keep
        self._cv = threading.Condition()
        self.current: Job | None = None
        self._step_seconds: float | None = None  # running average, for ETAs
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
        return self._jobs.get(job_id)

    def cancel(self, job: Job) -> None:
        with self._cv:
            job.cancel.set()
            if job.state == "queued":
                self._pending.remove(job)
                self._finish(job, "cancelled", error="cancelled before it started")
        self._gauge()

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

    def eta(self, job: Job) -> float | None:
        if self._step_seconds is None or job.state in TERMINAL:
            return None if job.state not in TERMINAL else 0.0
        ahead = 0
        with self._cv:
            if job.state == "queued":
                ahead = sum(
                    j.total for j in itertools.takewhile(lambda j: j is not job, self._pending)
                )
                if self.current is not None:
                    ahead += self.current.total - self.current.step
        return (ahead + job.total - job.step) * self._step_seconds

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()

    # ------------------------------------------------------------ worker

    def _retry_after(self) -> int:
        per_job = (self._step_seconds or 1.0) * 40
        return max(1, int(per_job * max(1, len(self._pending)) / max(1, self.max_queue)))

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(len(self._pending))

    def _finish(self, job: Job, state: str, error: str | None = None) -> None:
        job.state = state
        job.error = error
        job.finished = time.time()
        job.touch()
        job.done.set()
        self._finished.append(job.id)
        while len(self._finished) > self._keep:
            self._jobs.pop(self._finished.popleft(), None)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
            # wait for the model outside the lock, so submit() and cancel() stay quick
            self.engine.ready.wait()
            with self._cv:
                if not self._pending:
                    continue
                job = self._pending.popleft()
                job.state = "running"
                job.started = time.time()
                job.touch()
                self.current = job
            self._gauge()
            self._execute(job)
            with self._cv:
                self.current = None

    def _execute(self, job: Job) -> None:
        last = time.perf_counter()

        def on_step(done: int, total: int) -> None:
            nonlocal last
            now = time.perf_counter()
            dt = now - last
            last = now
            self._step_seconds = (
                dt if self._step_seconds is None else 0.8 * self._step_seconds + 0.2 * dt
            )
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
