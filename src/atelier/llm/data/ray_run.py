"""`atelier llm preprocess --ray [ADDRESS]`: one corpus over a Ray cluster, same bytes.

A corpus of terabytes outgrows one machine, and Ray is the engine such clusters already run.
The input is cut into ranges in input order (`ray_ranges.py`: byte ranges on line starts for
JSONL/text, no counting pass). One long-lived worker per cluster CPU (a Ray actor) builds
the encoder once and takes range after range, writing each into its own `.bin/.idx` under
a shard folder next to the output (on a cluster: shared storage); the driver then joins
them in order with `merge` (kernel-side copies of the `.bin`s; with `--pack`, packed exactly
as one run packs) and removes the shard folder. So the result is a single run's bytes.

Fixed costs are kept off the critical path: Ray starts while a child process loads the
tokenizer (so the driver never imports transformers and torch), the workers import their
modules meanwhile, and Ray shuts down while the driver merges. What remains is Ray's own
start: ~4 CPU-s for the gcs, raylet, its two agents and the workers' `import ray`, which a
2-core machine cannot hide in a run of a few seconds (docs/benchmarks.md).

- A range whose worker dies (node lost, OOM, kill -9) is given again to the restarted worker,
  up to `max_retries` times.
- A re-run with the same inputs and settings keeps the ranges already finished: each one is
  committed atomically, then recorded in `shard-NNNNN.json`.
- Progress counts finished ranges across the cluster.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from atelier.core.atomic import write_text_atomic
from atelier.core.errors import AtelierError
from atelier.core.log import get_logger
from atelier.core.progress import progress_bar
from atelier.core.workers import ChildCall
from atelier.llm.data import sources
from atelier.llm.data.encode_job import build_job, input_sample, output_prefixes
from atelier.llm.data.encode_pool import Setup
from atelier.llm.data.preprocess import PreprocessConfig, Report, _check, pack_dataset
from atelier.llm.data.ray_merge import OrderedMerge
from atelier.llm.data.ray_ranges import Range, plan_ranges
from atelier.llm.data.ray_shard import ShardWorker
from atelier.llm.data.tokenizer import check_spec

log = get_logger(__name__)

# Test hook, read by the driver (Ray's workers may predate the variable): when set to a path
# that does not exist yet, the worker given range 1 creates it and kills its own process,
# the way a lost node looks to Ray.
KILL_ONCE_ENV = "ATELIER_RAY_KILL_ONCE"
RESTART_DELAY_ENV = "ATELIER_RAY_RESTART_DELAY"
RANGES_PER_CPU = 4  # finer ranges: finer resume and load balance; each costs one small commit


# how long a range waits for its worker's restart (Ray: "actor unavailable") before failing
RESTART_WAIT_S = 300.0


def shard_folder(output_prefix: str) -> Path:
    p = Path(output_prefix)
    return p.parent / f".{p.name}.ray-shards"


def _fingerprint(cfg: PreprocessConfig, srcs: list[sources.SourceFile], ranges: list[Range]) -> str:
    """What a finished shard depends on: inputs (size, mtime), the cut and every setting."""
    settings = dataclasses.asdict(cfg)
    for key in ("workers", "log_interval", "output_prefix", "shard", "num_shards"):
        settings.pop(key, None)
    files = [(str(s.path), s.size, os.stat(s.path).st_mtime_ns) for s in srcs]
    blob = json.dumps([settings, files, [dataclasses.astuple(r) for r in ranges]], default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _lean_local_ray(ray: Any) -> Iterator[None]:
    """A local Ray without the autoscaler monitor, the log monitor and the API server
    (dashboard process): a fixed one-machine cluster whose logs stay out of the driver, and
    which no one submits jobs to, needs none of them. On a small machine their start is
    over a CPU-second taken from the tokenizer load; `ray.init` waits ~0.8 s for the API
    server to register, and the monitor's shutdown a second for it to ignore SIGTERM.
    `ray.init` has no flag for them, so its (private) `RayParams` and `Node` get them for
    this call; if Ray changes those, they just run again."""
    try:
        params = ray._private.parameter.RayParams
        node = ray._private.node.Node
        original, original_api = params.__init__, node.start_api_server
    except AttributeError:
        yield
        return

    def lean(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.no_monitor = True
        self.include_log_monitor = False

    def no_api_server(self: Any, **kwargs: Any) -> None:
        pass

    params.__init__, node.start_api_server = lean, no_api_server
    try:
        yield
    finally:
        params.__init__, node.start_api_server = original, original_api


def _start_ray(ray: Any, address: str | None, num_cpus: int | None) -> None:
    init: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    local = address in (None, "", "local")
    if local:  # a one-machine Ray talks over loopback only
        init.update(num_cpus=num_cpus, _node_ip_address="127.0.0.1")
    else:
        init["address"] = address
    try:
        with _lean_local_ray(ray) if local else contextlib.nullcontext():
            ray.init(**init)
    except Exception as e:  # ConnectionError, RuntimeError: no cluster at that address
        raise AtelierError(f"--ray {address}: cannot connect ({e})") from None


def preprocess_on_ray(
    cfg: PreprocessConfig,
    address: str | None = None,
    num_shards: int | None = None,
    max_retries: int = 3,
    num_cpus: int | None = None,
) -> Report:
    """Preprocess `cfg` on Ray; the result equals `preprocess(cfg)` byte for byte.

    `address`: None or "local" starts a local Ray (with `num_cpus`), "auto" joins the running
    cluster, anything else is `ray.init(address)`. `num_shards` (ranges) defaults to
    `RANGES_PER_CPU` per cluster CPU.
    """
    if cfg.num_shards > 1:
        raise AtelierError("--ray splits the input itself; drop --shard/--num-shards")
    _check(cfg)
    t0 = time.perf_counter()
    srcs = sources.resolve_inputs(cfg.input)
    if sum(s.size for s in srcs) == 0:
        raise AtelierError(f"--input {cfg.input}: no records found (empty input)")
    check_spec(cfg.tokenizer)  # a missing tokenizer is said now, not after Ray's start
    started_here = "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
    # The tokenizer loads and is checked while Ray starts. Starting a local Ray holds this
    # process's GIL for seconds and the load imports transformers and torch (~3 CPU-s), so
    # the load gets a process of its own; with a Ray already up, a thread is enough.
    loader: Any = ChildCall(_load_setup, cfg, srcs) if started_here else _ThreadCall(cfg, srcs)
    workers: list[Any] = []
    try:
        try:
            import ray
        except ImportError:
            raise AtelierError(
                "--ray needs Ray: pip install 'atelier[ray]' (or run without --ray)"
            ) from None
        try:
            if started_here:
                _start_ray(ray, address, num_cpus)
        except AtelierError:
            loader.result()  # a bad input or tokenizer is the error to report first
            raise
        try:
            cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
            ranges = plan_ranges(srcs, num_shards or RANGES_PER_CPU * cpus)
            # the workers start and import while the tokenizer still loads; a worker whose
            # process dies is restarted (the driver, not Ray, counts a range's retries)
            actor = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=0)(ShardWorker)
            # tests: once the kill marker exists, a restarted worker starts this much later
            delay = os.environ.get(RESTART_DELAY_ENV)
            slow = (os.environ.get(KILL_ONCE_ENV, ""), float(delay)) if delay else None
            workers = [actor.remote(slow) for _ in range(min(cpus, len(ranges)))]
            setup: Setup = loader.result()
        except BaseException:
            for w in workers:  # on a shared cluster, give their CPUs back
                ray.kill(w)
            if started_here:
                ray.shutdown()
            raise
    finally:
        loader.kill()  # only still running on an error
    job = setup.job
    stopper = None
    folder = shard_folder(cfg.output_prefix)
    target = str(folder / "all") if cfg.pack else cfg.output_prefix
    merger = OrderedMerge(
        [output_prefixes(job, str(folder / f"shard-{i:05d}")) for i in range(len(ranges))],
        output_prefixes(job, target),
    )
    try:
        try:
            results = _run_ranges(ray, cfg, srcs, setup, ranges, workers, max_retries, merger)
        finally:
            for w in workers:
                ray.kill(w)
            if started_here:  # Ray's shutdown (~0.5 s) overlaps the merge's last steps
                stopper = threading.Thread(target=ray.shutdown, name="ray-stop")
                stopper.start()
        report = _report(cfg, results)
        merger.commit()
    except BaseException:
        merger.abort()
        raise
    finally:
        if stopper is not None:
            stopper.join()
    if cfg.pack:  # planned over the whole merged set, as a single run plans it
        pack_dataset(job, cfg, output_prefixes(job, target), report)
    shutil.rmtree(folder, ignore_errors=True)
    report.seconds = time.perf_counter() - t0
    report.outputs = list(output_prefixes(job, cfg.output_prefix).values())
    return report


def _load_setup(cfg: PreprocessConfig, srcs: list[sources.SourceFile]) -> Setup:
    """The workers' job and what their load-time backend check needs: each worker checks
    on the two encoders it builds anyway (as encode_pool's workers do), not the driver on a
    third pair while they wait."""
    return Setup(build_job(cfg, srcs), cfg.tokenizer.backend, input_sample(cfg, srcs))


class _ThreadCall:
    """`_load_setup` in a thread, with `ChildCall`'s `result`/`kill`."""

    def __init__(self, cfg: PreprocessConfig, srcs: list[sources.SourceFile]) -> None:
        self._pool = ThreadPoolExecutor(1)
        self._future = self._pool.submit(_load_setup, cfg, srcs)

    def result(self) -> Setup:
        return self._future.result()

    def kill(self) -> None:  # a thread cannot be stopped: it finishes, unwaited
        self._pool.shutdown(wait=False)


def _run_ranges(
    ray: Any,
    cfg: PreprocessConfig,
    srcs: list[sources.SourceFile],
    setup: Setup,
    ranges: list[Range],
    workers: list[Any],
    max_retries: int,
    merger: OrderedMerge,
) -> list[dict[str, Any]]:
    """Give ranges to idle workers in order; retry a range whose worker died; merge each
    finished one as soon as those before it are."""
    n = len(ranges)
    folder = shard_folder(cfg.output_prefix)
    fingerprint = _fingerprint(cfg, srcs, ranges)
    results = _finished_shards(folder, fingerprint)
    if results:
        log.info("--ray: %d of %d shards kept from an earlier run in %s", len(results), n, folder)
    for i in sorted(results):
        merger.finished(i)
    todo = [i for i in range(n) if i not in results]
    job_box = [ray.put(setup)]  # in a list: a worker fetches it once, not with every range
    opts = {
        "token_dtype": cfg.token_dtype,
        "skip_bad_records": cfg.skip_bad_records,
        "kill_marker": os.environ.get(KILL_ONCE_ENV),
    }
    tries = dict.fromkeys(todo, 0)
    # worker (its index) -> when it was lost running a range; cleared once it returns one
    restarting: dict[int, float] = {}
    pending: dict[Any, tuple[int, int]] = {}  # ref -> (range, worker)

    def give(i: int, w: int) -> None:
        prefix = str(folder / f"shard-{i:05d}")
        ref = workers[w].run.remote(job_box, srcs[ranges[i].file], ranges[i], i, prefix, opts)
        pending[ref] = (i, w)

    failure: str | None = None
    said: set[str | None] = {None}
    with progress_bar("preprocess (ray)", n, unit="shards") as bar:
        bar.update(0, completed=len(results))
        for w in range(len(workers)):
            if todo:
                give(todo.pop(0), w)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i, w = pending.pop(ready[0])
            try:
                results[i] = ray.get(ready[0])
            except ray.exceptions.RayActorError as e:
                # A worker lost while running a range (Ray says dead or, as it restarts the
                # actor, unavailable) spends one of that range's retries. While the restarted
                # worker still imports, Ray refuses what it is given (unavailable): the
                # retried range or, after a failure, the next one; that costs none.
                since = restarting.get(w)
                if isinstance(e, ray.exceptions.ActorUnavailableError) and since is not None:
                    if time.monotonic() - since < RESTART_WAIT_S:
                        time.sleep(0.5)  # a fresh process imports for seconds on a busy machine
                        give(i, w)
                        continue
                    failure = failure or (
                        f"--ray: shard {i} of {n}: its worker did not come back within "
                        f"{RESTART_WAIT_S:.0f} s; run the same command again to resume"
                    )
                else:
                    tries[i] += 1
                    restarting[w] = time.monotonic()
                    if tries[i] <= max_retries:
                        log.warning("--ray: shard %d of %d lost its worker; retrying", i, n)
                        give(i, w)
                        continue
                    failure = failure or (
                        f"--ray: shard {i} of {n} failed after {max_retries} retries "
                        "(its worker died); run the same command again to resume"
                    )
            except ray.exceptions.RayTaskError as e:  # the others still finish: a rerun keeps them
                cause = e.cause if isinstance(e.cause, AtelierError) else repr(e.cause)
                failure = failure or f"shard {i} of {n}: {cause}"
            else:
                restarting.pop(w, None)
                if results[i]["load_notice"] not in said:  # each worker's check, said once
                    said.add(results[i]["load_notice"])
                    log.warning("tokenizer backend: %s", results[i]["load_notice"])
                write_text_atomic(
                    folder / f"shard-{i:05d}.json",
                    json.dumps({"fingerprint": fingerprint, **results[i]}),
                )
                if failure is None:
                    merger.finished(i)
                bar.update(0, completed=len(results))
            if todo:  # also after a failure: what finishes now, a rerun keeps
                give(todo.pop(0), w)
    if failure is not None:
        raise AtelierError(failure)
    return [results[i] for i in range(n)]


def _report(cfg: PreprocessConfig, results: list[dict[str, Any]]) -> Report:
    """The single run's report from the shards' counts; no documents at all is an error."""
    report = Report()
    for r in results:
        report.read += r["read"]
        report.written += r["written"]
        report.tokens += r["tokens"]
        report.skipped.update(r["skipped"])
        report.notices += r["notices"]
    # each worker checked its own encoders: one name when they agree (they do unless a
    # backend breaks on one node), else every one; "fastokens, then hf": one fell back
    report.backend = " | ".join(sorted({r["backend"] for r in results}))
    if report.read == 0:
        raise AtelierError(f"--input {cfg.input}: no records found (empty input)")
    if report.written == 0:
        raise AtelierError(
            f"--input {cfg.input}: no documents written (skipped: {dict(report.skipped)}); "
            "nothing was replaced"
        )
    return report


def _finished_shards(folder: Path, fingerprint: str) -> dict[int, dict[str, Any]]:
    """Shards of an earlier run with the same fingerprint; others of ours are removed."""
    if not folder.is_dir():
        return {}
    kept: dict[int, dict[str, Any]] = {}
    for f in folder.glob("shard-*.json"):
        try:
            data = json.loads(f.read_text("utf-8"))
            index = int(f.stem.removeprefix("shard-"))
        except (OSError, ValueError):
            continue
        if data.pop("fingerprint", None) == fingerprint:
            kept[index] = data
    if not kept:
        shutil.rmtree(folder, ignore_errors=True)  # a different job's shards: all ours
    return kept
