"""Write outputs under a temporary name and rename them when complete.

An interrupted run must leave either the old outputs or the new ones, never a
torn file under a final name. Temporary names live in the same directory as the
final ones so that the rename is a same-filesystem `os.replace`.

Three more promises, each learnt from a real trial:

* Modes: `mkstemp`/`mkdtemp` create 0600/0700 and that mode survived the rename,
  so another uid could not read a dataset. Temporaries get what a plain
  `open()`/`mkdir()` would give under the caller's umask.
* Stale temporaries: names are `.NAME.HOST-PID.RANDOM.partial`. The first write
  into a folder removes ours whose process is dead on this host and which are
  older than this run (other hosts' on shared storage are left alone), and logs
  one line.
* Commit points: a folder is swapped in with one atomic exchange where the
  kernel has one (`renameat2(RENAME_EXCHANGE)`), so the final name never goes
  missing; a `.bin`/`.idx` pair is committed after a small journal is written,
  so a kill between its two renames is completed by the next run or reader.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from atelier.core.log import get_logger

log = get_logger(__name__)

RUN_STARTED = time.time()
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
# .NAME.HOST-PID.RANDOM.(partial|old|commit)
_OURS = re.compile(
    r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)\.[^.]+\.(?P<kind>partial|old|commit)$"
)
_swept: set[Path] = set()
_swept_lock = threading.Lock()


# ------------------------------------------------------------------ modes


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _swept_lock:  # the portable way briefly sets it; serialise that
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def plain_file_mode() -> int:
    return 0o666 & ~current_umask()


def plain_dir_mode() -> int:
    return 0o777 & ~current_umask()


# ------------------------------------------------------------------ names


def owner_tag() -> str:
    """HOST-PID: whose temporary this is, for `clean_stale`."""
    return f"{_HOST}-{os.getpid()}"


def temp_sibling(final: Path) -> Path:
    """A unique hidden name next to `final`, created empty (so it is reserved)."""
    final = Path(final)
    _prepare_parent(final.parent)
    fd, name = tempfile.mkstemp(
        prefix=f".{final.name}.{owner_tag()}.", suffix=".partial", dir=final.parent
    )
    os.close(fd)
    os.chmod(name, plain_file_mode())
    return Path(name)


def temp_dir_sibling(final: Path, kind: str = "partial") -> Path:
    """A unique hidden folder next to `final`, with the mode `mkdir` would give."""
    final = Path(final)
    _prepare_parent(final.parent)
    prefix = f".{final.name}.{owner_tag()}."
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=f".{kind}", dir=final.parent))
    os.chmod(tmp, plain_dir_mode())
    return tmp


def _prepare_parent(parent: Path) -> None:
    parent.mkdir(parents=True, exist_ok=True)
    clean_stale(parent)


# ------------------------------------------------------------------ stale temporaries


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists under another uid (or we cannot tell): keep
    return True


def _size(p: Path) -> int:
    if p.is_dir() and not p.is_symlink():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())
    return p.lstat().st_size


def clean_stale(folder: str | os.PathLike[str], force: bool = False) -> int:
    """Finish or remove our temporaries left in `folder` by killed runs; bytes freed.

    Only names of our own pattern, made on this host by a process that is no
    longer alive, and last modified before this run started. Journals are rolled
    forward first (their temporaries are the new data), and a parked `.old`
    folder whose final name is missing is put back rather than deleted. Each
    folder is swept once per process unless `force`.
    """
    folder = Path(folder)
    key = folder.resolve()
    with _swept_lock:
        if key in _swept and not force:
            return 0
        _swept.add(key)
    try:
        entries = list(folder.iterdir())
    except OSError:
        return 0
    stale: list[tuple[Path, re.Match[str]]] = []
    for p in entries:
        m = _OURS.match(p.name)
        if not m or m["host"] != _HOST or _pid_alive(int(m["pid"])):
            continue
        with contextlib.suppress(OSError):
            if p.lstat().st_mtime < RUN_STARTED:
                stale.append((p, m))
    for p, m in stale:
        if m["kind"] == "commit":
            roll_forward(p)
    freed, count = 0, 0
    for p, m in stale:
        if not p.exists() and not p.is_symlink():
            continue
        final = folder / m["name"]
        if m["kind"] == "old" and not final.exists():
            inner = p / "dir"
            with contextlib.suppress(OSError):
                os.replace(inner if inner.exists() else p, final)
                log.warning("restored %s from %s (a killed run had parked it)", final, p.name)
                if p.exists():
                    p.rmdir()
                continue
        with contextlib.suppress(OSError):
            size = _size(p)
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            freed += size
            count += 1
    if count:
        log.info(
            "removed %d stale temporar%s of killed runs in %s (%.1f MB)",
            count,
            "y" if count == 1 else "ies",
            folder,
            freed / 2**20,
        )
    return freed


# ------------------------------------------------------------------ files


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


def _journal_path(final: Path) -> Path:
    return final.parent / f".{final.name}.{owner_tag()}.{os.urandom(4).hex()}.commit"


def roll_forward(journal: Path) -> None:
    """Complete the renames a journal lists (idempotent, safe to race)."""
    try:
        pairs = json.loads(journal.read_text(encoding="utf-8"))["renames"]
    except (OSError, ValueError, KeyError, TypeError):
        journal.unlink(missing_ok=True)
        return
    base = journal.parent
    for tmp, final in pairs:
        with contextlib.suppress(FileNotFoundError):
            os.replace(base / tmp, base / final)
    journal.unlink(missing_ok=True)


def _journal_names(journal: Path, final: Path) -> bool:
    try:
        pairs = json.loads(journal.read_text(encoding="utf-8"))["renames"]
        return any(f == final.name for _, f in pairs)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def settle(final: str | os.PathLike[str], wait_s: float = 10.0) -> bool:
    """Before reading `final`: let a commit in progress finish, complete a dead one.

    A journal of a live writer is waited for (its two renames take microseconds);
    one whose writer was killed is rolled forward here, so a reader never acts
    on the gap between the renames. True when there was a commit to wait for.
    """
    final = Path(final)
    deadline = time.monotonic() + wait_s
    found = False
    while True:
        live = False
        try:
            names = os.listdir(final.parent)
        except OSError:
            return found
        for n in names:
            m = _OURS.match(n)
            if not m or m["kind"] != "commit" or not _journal_names(final.parent / n, final):
                continue
            found = True
            if m["host"] == _HOST and not _pid_alive(int(m["pid"])):
                roll_forward(final.parent / n)
            else:
                live = True
        if not live or time.monotonic() > deadline:
            return found
        time.sleep(0.001)


def commit_files(pairs: Sequence[tuple[Path, Path]], last_suffix: str = ".idx") -> None:
    """Rename several finished temporaries onto their final names.

    Two names cannot change in one step, so: a journal listing the renames is
    written first (a kill from here on is completed by the next run or reader,
    see `roll_forward`); then files ending in `last_suffix` (the index that
    makes a `.bin` readable) are removed, the others renamed, the index renamed
    last. During those microseconds a reader finds no index and refuses
    loudly -- never a new `.bin` read through an old `.idx`.
    """
    pairs = [(Path(t), Path(f)) for t, f in pairs]
    if not pairs:
        return
    folders = {f.parent.resolve() for _, f in pairs} | {t.parent.resolve() for t, _ in pairs}
    if len(folders) != 1:
        raise ValueError("commit_files: temporaries and finals must share one folder")
    for _, final in pairs:
        if final.is_dir() and not final.is_symlink():
            for tmp, _ in pairs:
                tmp.unlink(missing_ok=True)
            raise IsADirectoryError(errno.EISDIR, "is a folder, cannot replace it", str(final))
    firsts = [p for p in pairs if not str(p[1]).endswith(last_suffix)]
    lasts = [p for p in pairs if str(p[1]).endswith(last_suffix)]
    ordered = [*firsts, *lasts]
    anchor = (lasts or firsts)[0][1]
    journal = _journal_path(anchor)
    with atomic_file(journal) as tmp:
        tmp.write_text(json.dumps({"renames": [[t.name, f.name] for t, f in ordered]}))
    try:
        for _, final in lasts:
            final.unlink(missing_ok=True)
        for tmp, final in ordered:
            os.replace(tmp, final)
    except OSError:
        # a rename the kernel refused will not succeed on a retry either: give up
        # cleanly rather than leave a journal that every later run trips over
        for tmp, _ in ordered:
            tmp.unlink(missing_ok=True)
        journal.unlink(missing_ok=True)
        raise
    except BaseException:  # Ctrl-C / SIGTERM between renames: finish them, then stop
        roll_forward(journal)
        raise
    journal.unlink(missing_ok=True)


# ------------------------------------------------------------------ folders

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two names (Linux `renameat2`); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(new: Path, final: Path) -> None:
    """Put folder `new` at `final`; an existing `final` is swapped out and deleted.

    With an atomic exchange `final` never goes missing. Without one the old
    folder is parked as `.NAME.HOST-PID.X.old`; a kill before the second rename
    leaves it there and the next run puts it back (`clean_stale`).
    """
    if not final.exists():
        os.replace(new, final)
        return
    if exchange(new, final):
        shutil.rmtree(new, ignore_errors=True)  # `new` now holds the old contents
        return
    parked = temp_dir_sibling(final, kind="old")
    os.replace(final, parked / "dir")
    os.replace(new, final)
    shutil.rmtree(parked, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes `final` when the block succeeds.

    With `overwrite`, an existing `final` is swapped out (see `replace_dir`) and
    deleted only after the new directory is in place. Deciding whether
    `final` may be replaced at all is the caller's job.
    """
    final = Path(final)
    tmp = temp_dir_sibling(final)
    try:
        yield tmp
        if final.exists() and not overwrite:
            raise FileExistsError(final)
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
