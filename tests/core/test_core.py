"""core: atomic writes and device choice."""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import subprocess
import sys

import pytest

from atelier.core import atomic, errors
from atelier.core.atomic import (
    atomic_dir,
    atomic_file,
    commit_files,
    temp_sibling,
    write_text_atomic,
)
from atelier.core.device import pick_device, resolve_device_name
from atelier.core.errors import AtelierError


def test_atomic_file_replaces_only_on_success(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]
    with atomic_file(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and sorted(tmp_path.iterdir()) == [target]


def test_atomic_dir_and_overwrite(tmp_path):
    final = tmp_path / "out"
    with atomic_dir(final) as d:
        (d / "a").write_text("1")
    assert (final / "a").read_text() == "1"
    with pytest.raises(FileExistsError), atomic_dir(final) as d:
        (d / "b").write_text("2")
    assert not (final / "b").exists()
    with atomic_dir(final, overwrite=True) as d:
        (d / "b").write_text("2")
    assert sorted(p.name for p in final.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_commit_files_renames_index_last(tmp_path):
    bin_tmp, idx_tmp = temp_sibling(tmp_path / "d.bin"), temp_sibling(tmp_path / "d.idx")
    bin_tmp.write_text("b")
    idx_tmp.write_text("i")
    (tmp_path / "d.idx").write_text("old index")
    commit_files([(idx_tmp, tmp_path / "d.idx"), (bin_tmp, tmp_path / "d.bin")])
    assert (tmp_path / "d.bin").read_text() == "b" and (tmp_path / "d.idx").read_text() == "i"


def test_device_choice():
    assert resolve_device_name("auto") in {"cpu", "cuda", "npu"}
    assert pick_device("cpu").type == "cpu"
    with pytest.raises(AtelierError, match="unknown device"):
        resolve_device_name("tpu")


@pytest.mark.parametrize("mask,fmode,dmode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)])
def test_outputs_honour_the_umask(tmp_path, mask, fmode, dmode):
    old = os.umask(mask)
    try:
        write_text_atomic(tmp_path / "f.txt", "x")
        with atomic_file(tmp_path / "g.bin") as tmp:
            tmp.write_bytes(b"y")
        with atomic_dir(tmp_path / "d") as d:
            (d / "inner").write_text("z")
        bin_tmp = temp_sibling(tmp_path / "p.bin")
        commit_files([(bin_tmp, tmp_path / "p.bin")])
    finally:
        os.umask(old)
    for name in ("f.txt", "g.bin", "p.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == fmode, name
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == dmode
    assert stat.S_IMODE((tmp_path / "d" / "inner").stat().st_mode) == fmode


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_dead_runs_are_cleaned(tmp_path, caplog):
    dead, host = _dead_pid(), atomic._HOST
    old_file = tmp_path / f".data.bin.{host}-{dead}.abc123.partial"
    old_file.write_bytes(b"x" * 1000)
    old_dir = tmp_path / f".ckpt.{host}-{dead}.zz9.partial"
    (old_dir / "sub").mkdir(parents=True)
    (old_dir / "sub" / "w.pt").write_bytes(b"w")
    live = tmp_path / f".data.bin.{host}-{os.getppid()}.live01.partial"  # a live process
    live.write_bytes(b"l")
    other_host = tmp_path / f".data.bin.otherbox-{dead}.rem001.partial"  # shared storage
    other_host.write_bytes(b"o")
    new_after_start = tmp_path / f".late.{host}-{dead}.new001.partial"
    new_after_start.write_bytes(b"n")
    past = atomic.RUN_STARTED - 60
    for p in (old_file, old_dir, live, other_host):
        os.utime(p, (past, past))
    os.utime(new_after_start, (atomic.RUN_STARTED + 5, atomic.RUN_STARTED + 5))
    user = tmp_path / ".data.bin.mine.partial"  # not our naming: never touched
    user.write_bytes(b"u")
    os.utime(user, (past, past))
    with caplog.at_level(logging.INFO, logger="atelier.core.atomic"):
        write_text_atomic(tmp_path / "data.txt", "fresh")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["data.txt", live.name, other_host.name, new_after_start.name, user.name])
    assert [r.message for r in caplog.records if "stale" in r.message] == [
        f"removed 2 stale temporaries of killed runs in {tmp_path} (0.0 MB)"
    ]


def test_killed_commit_is_rolled_forward(tmp_path):
    """A journal left by a dead writer: the next reader completes its renames."""
    dead, host = _dead_pid(), atomic._HOST
    (tmp_path / "d.bin").write_text("old bin")  # the writer died after removing d.idx
    nb = tmp_path / f".d.bin.{host}-{dead}.aa.partial"
    ni = tmp_path / f".d.idx.{host}-{dead}.bb.partial"
    nb.write_text("new bin")
    ni.write_text("new idx")
    journal = tmp_path / f".d.idx.{host}-{dead}.cc.commit"
    journal.write_text(json.dumps({"renames": [[nb.name, "d.bin"], [ni.name, "d.idx"]]}))
    atomic.settle(tmp_path / "d.idx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.bin", "d.idx"]
    assert (tmp_path / "d.bin").read_text() == "new bin"
    assert (tmp_path / "d.idx").read_text() == "new idx"


def test_replace_dir_never_leaves_the_name_missing(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old").write_text("1")
    new = tmp_path / "new"
    new.mkdir()
    (new / "fresh").write_text("2")
    if not atomic.exchange(new, final):
        pytest.skip("no atomic exchange on this filesystem")
    assert (final / "fresh").exists() and (new / "old").exists()


def test_parked_old_folder_of_a_killed_run_is_restored(tmp_path):
    dead, host = _dead_pid(), atomic._HOST
    parked = tmp_path / f".out.{host}-{dead}.x1.old"
    (parked / "dir").mkdir(parents=True)
    (parked / "dir" / "model.bin").write_text("keep")
    past = atomic.RUN_STARTED - 60
    os.utime(parked, (past, past))
    atomic.clean_stale(tmp_path, force=True)
    assert (tmp_path / "out" / "model.bin").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_disk_full_and_os_errors_are_one_line(tmp_path):
    err = errors.from_os_error(OSError(errno.ENOSPC, "No space left on device", str(tmp_path)))
    assert isinstance(err, errors.DiskFullError)
    assert str(err).startswith(f"disk full at {tmp_path}: more space needed, ")
    with pytest.raises(errors.DiskFullError, match=r"GB needed, .* GB free"):
        errors.require_free(tmp_path, 1 << 60)
    errors.require_free(tmp_path, 1)
    nd = errors.from_os_error(NotADirectoryError(errno.ENOTDIR, "Not a directory", "/etc/hosts/x"))
    assert "is a file, not a folder" in str(nd)
    assert errors.from_os_error(OSError(errno.EBADF, "Bad file descriptor")) is None


def test_commit_refused_by_the_kernel_leaves_no_journal(tmp_path):
    (tmp_path / "d.idx").mkdir()  # a folder where the index should go
    b, i = temp_sibling(tmp_path / "d.bin"), temp_sibling(tmp_path / "d.idx")
    with pytest.raises(IsADirectoryError):
        commit_files([(b, tmp_path / "d.bin"), (i, tmp_path / "d.idx")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.idx"]


def test_interrupt_between_renames_completes_the_commit(tmp_path, monkeypatch):
    b, i = temp_sibling(tmp_path / "d.bin"), temp_sibling(tmp_path / "d.idx")
    b.write_text("new bin")
    i.write_text("new idx")
    real, calls = os.replace, []

    def interrupted(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the .idx rename: Ctrl-C arrives just before it
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        commit_files([(b, tmp_path / "d.bin"), (i, tmp_path / "d.idx")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.bin", "d.idx"]
    assert (tmp_path / "d.idx").read_text() == "new idx"
