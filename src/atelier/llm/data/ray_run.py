"""`atelier llm preprocess --ray [ADDRESS]`: one corpus over a Ray cluster, same bytes.

A corpus of terabytes outgrows one machine, and Ray is the engine such clusters already run.
The driver counts records once and cuts them into contiguous ranges (the same cut as
`--shard/--num-shards`, so merging in order reproduces a single run byte for byte). Each
range is one Ray task that runs the ordinary single-process `preprocess` into its own
`.bin/.idx` under a shard folder next to the output (on a cluster: shared storage). The
driver then streams them together with `merge` (and packs, with `--pack`, exactly as one
run would) and removes the shard folder.

- A task whose worker dies (node lost, OOM, kill -9) is retried by Ray (`max_retries`).
- A re-run with the same inputs and settings keeps the shards already finished: each one is
  committed atomically, then recorded in `shard-NNNNN.json`.
- Progress counts finished shards across the cluster.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from atelier.core.atomic import write_text_atomic
from atelier.core.errors import AtelierError
from atelier.core.log import get_logger
from atelier.core.progress import progress_bar
from atelier.llm.data import sources
from atelier.llm.data.handlers import EncodeJob
from atelier.llm.data.merge import merge
from atelier.llm.data.preprocess import (
    PreprocessConfig,
    Report,
    build_job,
    output_prefixes,
    pack_dataset,
    preprocess,
)

log = get_logger(__name__)

# Test hook, read by the driver (Ray's workers may predate the variable): when set to a path
# that does not exist yet, the task of shard 1 creates it and kills its own worker process,
# the way a lost node looks to Ray.
KILL_ONCE_ENV = "ATELIER_RAY_KILL_ONCE"


def shard_folder(output_prefix: str) -> Path:
    p = Path(output_prefix)
    return p.parent / f".{p.name}.ray-shards"


def _fingerprint(cfg: PreprocessConfig, srcs: list[sources.SourceFile], n: int) -> str:
    """What a finished shard depends on: inputs (size, mtime) and every output setting."""
    settings = dataclasses.asdict(cfg)
    for key in ("workers", "log_interval", "output_prefix", "shard", "num_shards"):
        settings.pop(key, None)
    files = [(str(s.path), s.size, os.stat(s.path).st_mtime_ns) for s in srcs]
    blob = json.dumps([settings, files, n], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _run_shard(
    cfg_fields: dict[str, Any],
    job: EncodeJob,
    index: int,
    start: int,
    stop: int,
    kill_marker: str | None,
) -> dict[str, Any]:
    """One Ray task: records [start, stop) -> shard prefix; returns its report's counts."""
    marker = kill_marker
    if marker and index == 1 and not os.path.exists(marker):
        Path(marker).write_text("killed once\n")
        os._exit(137)
    from atelier.llm.data.tokenizer import TokenizerSpec

    fields = dict(cfg_fields)
    fields["tokenizer"] = TokenizerSpec(**fields["tokenizer"])
    cfg = PreprocessConfig(**fields)
    report = preprocess(dataclasses.replace(cfg, record_range=(start, stop), allow_empty=True), job)
    return {
        "read": report.read,
        "written": report.written,
        "tokens": report.tokens,
        "skipped": dict(report.skipped),
        "backend": report.backend,
        "notices": report.notices,
    }


def preprocess_on_ray(
    cfg: PreprocessConfig,
    address: str | None = None,
    num_shards: int | None = None,
    max_retries: int = 3,
    num_cpus: int | None = None,
) -> Report:
    """Preprocess `cfg` as Ray tasks; the result equals `preprocess(cfg)` byte for byte.

    `address`: None or "local" starts a local Ray (with `num_cpus`), "auto" joins the running
    cluster, anything else is `ray.init(address)`. `num_shards` defaults to 2 per cluster CPU
    (each task's fixed cost is building the encoder; more tasks = finer retries and resume).
    """
    try:
        import ray
    except ImportError:
        raise AtelierError(
            "--ray needs Ray: pip install 'atelier[ray]' (or run without --ray)"
        ) from None
    if cfg.num_shards > 1:
        raise AtelierError("--ray splits the input itself; drop --shard/--num-shards")
    t0 = time.perf_counter()
    srcs = sources.resolve_inputs(cfg.input)
    job = build_job(cfg, srcs)  # fails early (tokenizer, template) before the cluster starts
    finals = output_prefixes(job, cfg.output_prefix)
    total = sources.count_total(srcs)
    if total == 0:
        raise AtelierError(f"--input {cfg.input}: no records found (empty input)")

    started_here = not ray.is_initialized()
    if started_here:
        init: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address in (None, "", "local"):  # a one-machine Ray talks over loopback only
            init.update(num_cpus=num_cpus, _node_ip_address="127.0.0.1")
        else:
            init["address"] = address
        try:
            ray.init(**init)
        except Exception as e:  # ConnectionError, RuntimeError: no cluster at that address
            raise AtelierError(f"--ray {address}: cannot connect ({e})") from None
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n = max(1, min(num_shards or 2 * cpus, total))
        folder = shard_folder(cfg.output_prefix)
        fingerprint = _fingerprint(cfg, srcs, n)
        done = _finished_shards(folder, fingerprint)
        ranges = [sources.shard_range(total, i, n) for i in range(n)]
        fields = dataclasses.asdict(cfg)
        shard_cfg = {
            **fields,
            "workers": 1,
            "pack": False,
            "neat_pack": False,
            "mask_padding": False,
        }
        task = ray.remote(num_cpus=1, max_retries=max_retries)(_run_shard)
        job_ref = ray.put(job)  # loaded and checked once, here, not once per task
        pending = {}
        for i, (a, b) in enumerate(ranges):
            if i in done:
                continue
            shard_cfg_i = {**shard_cfg, "output_prefix": str(folder / f"shard-{i:05d}")}
            pending[task.remote(shard_cfg_i, job_ref, i, a, b, os.environ.get(KILL_ONCE_ENV))] = i
        if done:
            log.info("--ray: %d of %d shards kept from an earlier run in %s", len(done), n, folder)
        results = dict(done)
        failure: str | None = None
        with progress_bar("preprocess (ray)", n, unit="shards") as bar:
            bar.update(0, completed=len(results))
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                i = pending.pop(ready[0])
                try:
                    results[i] = ray.get(ready[0])
                except Exception as e:  # the others still finish, so a rerun keeps them
                    cause = getattr(e, "cause", None)
                    if isinstance(cause, AtelierError):
                        failure = failure or f"shard {i} of {n}: {cause}"
                    else:
                        failure = failure or (
                            f"--ray: shard {i} of {n} failed after {max_retries} retries "
                            f"({type(e).__name__}); run the same command again to resume"
                        )
                    continue
                write_text_atomic(
                    folder / f"shard-{i:05d}.json",
                    json.dumps({"fingerprint": fingerprint, **results[i]}),
                )
                bar.update(0, completed=len(results))
        if failure is not None:
            raise AtelierError(failure)
    finally:
        if started_here:
            ray.shutdown()

    report = Report(backend=job.tokenizer.backend)
    for i in range(n):
        r = results[i]
        report.read += r["read"]
        report.written += r["written"]
        report.tokens += r["tokens"]
        report.skipped.update(r["skipped"])
        report.notices += r["notices"]
    if report.written == 0:
        raise AtelierError(
            f"--input {cfg.input}: no documents written (skipped: {dict(report.skipped)}); "
            "nothing was replaced"
        )
    shard_prefixes = [str(folder / f"shard-{i:05d}") for i in range(n)]
    if cfg.pack:  # planned over the whole merged set, as a single run plans it
        merge(shard_prefixes, str(folder / "all"))
        pack_dataset(
            job, cfg, {k: str(folder / f"all_packed_{k}_document") for k in finals}, report
        )
    else:
        merge(shard_prefixes, cfg.output_prefix)
    shutil.rmtree(folder, ignore_errors=True)
    report.seconds = time.perf_counter() - t0
    report.outputs = list(finals.values())
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
