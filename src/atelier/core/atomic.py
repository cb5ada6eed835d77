"""Write outputs under a temporary name and rename them when complete.

An interrupted run must leave either the old outputs or the new ones, never a
torn file under a final name. Temporary names live in the same directory as the
final ones so that the rename is a same-filesystem `os.replace`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path


def temp_sibling(final: Path) -> Path:
    """A unique, hidden name next to `final` (created empty, so it is reserved)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_file(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces `final`, on error it is removed."""
    final = Path(final)
    tmp = temp_sibling(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(final: str | os.PathLike[str], text: str) -> None:
    with atomic_file(final) as tmp:
        tmp.write_text(text, encoding="utf-8")


def commit_files(pairs: Sequence[tuple[Path, Path]], last_suffix: str = ".idx") -> None:
    """Rename several finished temporaries onto their final names.

    Several renames cannot be one atomic step, so files whose name ends in
    `last_suffix` (the index that makes a `.bin` readable) are removed first and
    renamed last: a crash in between leaves a dataset without its index, which
    every reader refuses, never a new `.bin` paired with an old `.idx`.
    """
    firsts = [p for p in pairs if not str(p[1]).endswith(last_suffix)]
    lasts = [p for p in pairs if str(p[1]).endswith(last_suffix)]
    for _, final in lasts:
        Path(final).unlink(missing_ok=True)
    for tmp, final in [*firsts, *lasts]:
        os.replace(tmp, final)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes `final` when the block succeeds.

    With `overwrite`, an existing `final` is moved aside and deleted only after the
    new directory is in place.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield tmp
        old = None
        if final.exists():
            if not overwrite:
                raise FileExistsError(final)
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
            os.replace(final, old / "dir")
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
