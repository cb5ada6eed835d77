"""`--ray`'s merge, done while the cluster still works: shards join in input order.

Merging after the last shard would put a second pass over every output byte on the
critical path. Instead each shard is appended (a kernel-side copy of its `.bin`, its index
offset; no token is decoded) as soon as it and all shards before it are finished, so at
the end only the last shards remain to copy. The outputs keep temporary names until
`commit`, so a failed run replaces nothing (its finished shards stay for the rerun).
"""

from __future__ import annotations

from pathlib import Path

from atelier.core.atomic import commit_files
from atelier.core.errors import disk_full_at
from atelier.llm.data.indexed import IndexedReader, IndexedWriter, bin_path


class OrderedMerge:
    def __init__(self, shard_sets: list[dict[str, str]], outputs: dict[str, str]) -> None:
        """`shard_sets[i]`: key -> dataset prefix of shard i; `outputs`: key -> final prefix."""
        self.shard_sets = shard_sets
        self.outputs = outputs
        self.writers: dict[str, IndexedWriter] = {}
        self.done: set[int] = set()
        self.next = 0  # the first shard not appended yet
        self.folder = Path(next(iter(outputs.values()))).parent

    def finished(self, index: int) -> None:
        """Shard `index` is complete on disk: append it and any complete ones after it."""
        self.done.add(index)
        with disk_full_at(self.folder):
            while self.next in self.done:
                for key, prefix in self.shard_sets[self.next].items():
                    r = IndexedReader.open(prefix)
                    if key not in self.writers:
                        self.writers[key] = IndexedWriter(self.outputs[key], r.dtype)
                    self.writers[key].append_raw(bin_path(prefix), r.lengths, r.doc_ends)
                self.next += 1

    def commit(self) -> None:
        assert self.next == len(self.shard_sets), "commit before every shard was appended"
        with disk_full_at(self.folder):
            commit_files([pair for w in self.writers.values() for pair in w.finish()])

    def abort(self) -> None:
        for w in self.writers.values():
            w.abort()
