"""Overlap producing tensors with writing them.

Writing (disk plus the zip CRC for rank files) costs about as much as reading and
splitting; one writer thread does it while the main thread prepares the next tensor.
The file writers release the GIL. At most `depth` tensors wait, so memory stays bounded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class BackgroundWriter:
    """Run `write` calls in order on one thread; errors surface in the caller."""

    def __init__(self, depth: int = 3) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="atelier-write")
        self._pending: deque[Future[Any]] = deque()
        self._depth = depth

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._pending.append(self._pool.submit(fn, *args))
        while len(self._pending) > self._depth:
            self._pending.popleft().result()

    def drain(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.drain()
        finally:
            for f in self._pending:
                f.cancel()
            self._pool.shutdown(wait=True)
