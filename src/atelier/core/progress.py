"""Progress bars on stderr that stay out of the way of piped output.

Bars are drawn only when stderr is a terminal; otherwise callers still get
periodic log lines, so CI logs and `2> file` stay readable.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

stderr_console = Console(stderr=True)


def interactive() -> bool:
    return sys.stderr.isatty()


@contextmanager
def progress_bar(description: str, total: float | None, unit: str = "items") -> Iterator[Progress]:
    """A rich progress bar; `unit="bytes"` shows sizes instead of counts.

    The yielded object's first task id is 0; call `progress.update(0, completed=...)`.
    """
    amount = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        amount,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=stderr_console,
        disable=not interactive(),
        transient=False,
    )
    with progress:
        progress.add_task(description, total=total, status="")
        yield progress
