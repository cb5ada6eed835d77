"""The one error policy of `atelier` for every verb: closed stdout, OS errors."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from atelier.cli import main as cli_main

VERBS_WITH_OUTPUT = [
    ["--help"],
    ["llm", "preprocess", "--help"],
    ["llm", "convert", "inspect", "--help"],
    ["sd", "--help"],
    ["lipsync", "--help"],
    ["dws", "--help"],
]


def _closed_stdout(argv: list[str]) -> subprocess.CompletedProcess:
    r, w = os.pipe()
    os.close(r)  # the reader is gone before anything is written: every write is EPIPE
    try:
        return subprocess.run(
            [sys.executable, "-m", "atelier", *argv],
            stdout=w,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(w)


@pytest.mark.skipif(os.name != "posix", reason="POSIX pipes")
@pytest.mark.parametrize("argv", VERBS_WITH_OUTPUT, ids=" ".join)
def test_closed_stdout_after_help_is_quiet(argv):
    proc = _closed_stdout(argv)
    assert proc.returncode in (0, 141) and proc.stderr == "", proc.stderr


@pytest.mark.skipif(os.name != "posix", reason="POSIX pipes")
def test_closed_stdout_of_a_verb_is_quiet_not_a_traceback(tmp_path):
    """`atelier ... | head` once ended in a BrokenPipeError traceback."""
    import numpy as np

    from atelier.core.atomic import commit_files
    from atelier.llm.data.indexed import IndexedWriter

    w = IndexedWriter(tmp_path / "ds", np.int32)
    for n in range(1, 200):
        w.add_sequence(np.arange(n, dtype=np.int32))
    commit_files(w.finish())
    proc = _closed_stdout(["llm", "inspect", str(tmp_path / "ds")])
    # 141 from main's handler, or 1 from rich, which handles a broken pipe itself
    assert proc.returncode in (1, 141), proc.stderr
    assert proc.stderr == "", proc.stderr


def test_broken_pipe_inside_a_verb_is_quiet(monkeypatch):
    def boom(args):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    parser = cli_main.build_parser()
    args = parser.parse_args(["llm", "inspect", "x"])
    args.func = boom
    monkeypatch.setattr(cli_main, "build_parser", lambda: parser)
    monkeypatch.setattr(parser, "parse_args", lambda argv=None: args)
    monkeypatch.setattr(cli_main.os, "dup2", lambda a, b: None)  # keep pytest's stdout
    assert cli_main.main([]) == 141


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/data/out.bin"), "disk full at /data"),
        (OSError(errno.EDQUOT, "Disk quota exceeded", "/data/o"), "disk full at /data/o"),
        (PermissionError(errno.EACCES, "Permission denied", "/srv/x"), "/srv/x: permission denied"),
        (OSError(errno.EROFS, "Read-only file system", "/ro/x"), "/ro/x: read-only filesystem"),
    ],
)
def test_environment_os_errors_are_one_line(monkeypatch, capsys, err, expected):
    def boom(args):
        raise err

    parser = cli_main.build_parser()
    args = parser.parse_args(["llm", "inspect", "x"])
    args.func = boom
    monkeypatch.setattr(cli_main, "build_parser", lambda: parser)
    monkeypatch.setattr(parser, "parse_args", lambda argv=None: args)
    assert cli_main.main([]) == 2
    out = capsys.readouterr().err.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"atelier: error: {expected}"), out


def test_a_bug_keeps_its_traceback(monkeypatch):
    def boom(args):
        raise OSError(errno.EBADF, "Bad file descriptor")  # no path: not the user's doing

    parser = cli_main.build_parser()
    args = parser.parse_args(["llm", "inspect", "x"])
    args.func = boom
    monkeypatch.setattr(cli_main, "build_parser", lambda: parser)
    monkeypatch.setattr(parser, "parse_args", lambda argv=None: args)
    with pytest.raises(OSError):
        cli_main.main([])
