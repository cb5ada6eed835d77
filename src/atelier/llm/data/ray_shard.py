"""The `--ray` worker: one per cluster CPU, the encoder built once, many ranges each.

A Ray task per range would build the tokenizer's encoders again for every range (1.5-2 s
for a 128k vocabulary) and import everything again in every fresh worker process. This
long-lived worker (a Ray actor) imports its modules as soon as it starts, while the driver
is still loading the tokenizer; it fetches the driver's job with its first range, builds
the two encoders and runs the load-time backend check on them (`checked_encoder`, as
`--workers` does), and keeps the encoder for every later one. Each
range is written, like a single-process `preprocess`, into its own `.bin/.idx`, committed
atomically, so the driver can merge the ranges in input order.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from atelier.llm.data.tokenizer_backends import single_threaded


class ShardWorker:
    def __init__(self, restart_delay: tuple[str, float] | None = None) -> None:
        single_threaded()  # one CPU per worker, as `--workers N` means N cores
        if restart_delay and os.path.exists(restart_delay[0]):  # tests: a slow restart
            import time

            time.sleep(restart_delay[1])
        # imported now, while the driver loads the tokenizer, not with the first range
        from atelier.llm.data import handlers, indexed, ray_ranges  # noqa: F401

        self.encoder: Any = None
        self.load_notice: str | None = None

    def run(
        self,
        job_box: list[Any],
        src: Any,
        rng: Any,
        index: int,
        prefix: str,
        opts: dict[str, Any],
    ) -> dict[str, Any]:
        """Encode one range into `prefix`'s datasets; returns what the driver adds up."""
        import numpy as np

        from atelier.core.atomic import commit_files
        from atelier.core.errors import AtelierError, disk_full_at
        from atelier.llm.data.encode_job import output_prefixes
        from atelier.llm.data.encode_pool import checked_encoder
        from atelier.llm.data.indexed import IndexedWriter, optimal_dtype
        from atelier.llm.data.ray_ranges import range_chunks, renumbered

        marker = opts.get("kill_marker")
        if marker and index == 1 and not os.path.exists(marker):
            Path(marker).write_text("killed once\n")
            os._exit(137)
        if self.encoder is None:  # once per worker process (again after a restart)
            import ray

            self.encoder, self.load_notice = checked_encoder(ray.get(job_box[0]))
        enc = self.encoder
        job = enc.job
        pretrain = enc.kind == "pretrain"
        auto = pretrain and opts["token_dtype"] == "auto"
        dtype = optimal_dtype(job.tokenizer.vocab_size) if auto else np.int32
        out = {"read": 0, "written": 0, "tokens": 0, "skipped": Counter(), "notices": []}
        Path(prefix).parent.mkdir(parents=True, exist_ok=True)
        writers = {k: IndexedWriter(p, dtype) for k, p in output_prefixes(job, prefix).items()}
        try:
            with disk_full_at(Path(prefix).parent):
                for chunk in range_chunks(src, rng):
                    res = enc.encode(chunk)
                    if res.errors and not opts["skip_bad_records"]:
                        res = enc.encode(renumbered(chunk, src, rng))  # true line numbers
                        raise AtelierError(f"{res.errors[0]} (fix it, or pass --skip-bad-records)")
                    for key, (flat, lens, per_doc) in res.outputs.items():
                        writers[key].add_documents(flat, lens, per_doc)
                    out["read"] += res.read
                    out["written"] += res.written
                    out["tokens"] += res.tokens
                    out["skipped"].update(res.skipped)
                    if res.fell_back is not None:
                        out["notices"].append(f"{res.fell_back}; switched to hf")
                commit_files([pair for w in writers.values() for pair in w.finish()])
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        backend = job.tokenizer.backend
        if enc.backend.fell_back is not None:  # in this range or an earlier one
            backend = f"{backend}, then hf"
        return {
            **out,
            "skipped": dict(out["skipped"]),
            "backend": backend,
            "load_notice": self.load_notice,
        }
