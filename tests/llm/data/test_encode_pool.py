"""Workers started before the tokenizer is loaded: same bytes, same backend and notices."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atelier.core.errors import AtelierError
from atelier.llm.data import sources
from atelier.llm.data.encode_pool import Setup, WorkerPool, agree
from atelier.llm.data.preprocess import PreprocessConfig, build_job, preprocess
from atelier.llm.data.tokenizer import TokenizerSpec

from ...conftest import write_jsonl
from .helpers import files_bytes, run

pytest.importorskip("fastokens")

# A `fastokens` that shadows the real one in spawned workers (they inherit sys.path):
# broken (ImportError) in every process, or only in the first process that imports it.
SHADOW = """
import importlib, os, sys
if os.environ.get("SHADOW_ALL"):
    raise ImportError("fastokens deliberately broken")
marker = os.environ["SHADOW_MARKER"]
try:
    fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
except FileExistsError:
    pass
if open(marker).read() == str(os.getpid()):
    raise ImportError("fastokens deliberately broken in this worker")
here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
del sys.modules[__name__]
sys.modules[__name__] = importlib.import_module(__name__)
"""


def _shadow(tmp_path: Path, monkeypatch, everywhere: bool) -> None:
    folder = tmp_path / "shadow"
    folder.mkdir()
    (folder / "fastokens.py").write_text(SHADOW)
    monkeypatch.syspath_prepend(str(folder))  # this process has the real one imported
    monkeypatch.setenv("SHADOW_MARKER", str(tmp_path / "broken-pid"))
    if everywhere:
        monkeypatch.setenv("SHADOW_ALL", "1")


def _cfg(tok: Path, src: Path, out: Path, backend: str = "auto", workers: int = 2):
    return PreprocessConfig(
        input=str(src),
        output_prefix=str(out),
        tokenizer=TokenizerSpec(name_or_path=str(tok), backend=backend),
        append_eod=True,
        workers=workers,
    )


def test_agree_takes_the_common_verdict_or_hf():
    assert agree([("fastokens", None), ("fastokens", None)]) == ("fastokens", None)
    note = "fastokens differs from hf on 'x'; using hf"
    assert agree([("hf", note), ("hf", note)]) == ("hf", note)
    assert agree([("fastokens", None), ("hf", note)]) == ("hf", note)
    assert agree([("hf", None), ("fastokens", None)]) == (
        "hf",
        "workers disagreed (fastokens, hf); using hf",
    )


def test_workers_1_and_2_give_the_same_bytes_backend_and_notices(
    tmp_path, hf_tokenizer_dir, texts, monkeypatch
):
    monkeypatch.setattr(sources, "BLOCK_BYTES", 512)  # many chunks, so workers interleave
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts * 3])
    reports = {w: run(hf_tokenizer_dir, src, tmp_path / f"w{w}", append_eod=True, workers=w)
               for w in (1, 2)}  # fmt: skip
    assert reports[1].backend == reports[2].backend == "fastokens"
    assert reports[1].notices == reports[2].notices == []
    assert reports[1].read == reports[2].read == len(texts) * 3
    assert files_bytes(tmp_path / "w1", ["text"]) == files_bytes(tmp_path / "w2", ["text"])


def test_a_backend_broken_in_one_worker_makes_all_use_hf(
    tmp_path, hf_tokenizer_dir, texts, monkeypatch
):
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts])
    ref = run(hf_tokenizer_dir, src, tmp_path / "ref", append_eod=True, workers=1)
    _shadow(tmp_path, monkeypatch, everywhere=False)
    cfg = _cfg(hf_tokenizer_dir, src, tmp_path / "got")
    pool = WorkerPool(2)
    try:
        backend, notice = pool.start(Setup(build_job(cfg, []), "auto", ()))
    finally:
        pool.close()
    # the broken worker took the next row of FAST_BACKENDS (tiktoken) or hf: either way not
    # the others' fastokens, so every worker uses hf
    assert backend == "hf"
    assert notice in (
        "workers disagreed (fastokens, hf); using hf",
        "workers disagreed (fastokens, tiktoken); using hf",
    )
    assert (tmp_path / "broken-pid").is_file()  # one worker did import the broken one

    (tmp_path / "broken-pid").unlink()
    report = preprocess(cfg)
    assert report.backend == "hf" and report.notices == []
    assert ref.backend == "fastokens"
    assert files_bytes(tmp_path / "got", ["text"]) == files_bytes(tmp_path / "ref", ["text"])


def test_a_backend_missing_in_every_worker_gives_the_in_process_notice(
    tmp_path, hf_tokenizer_dir, texts, monkeypatch
):
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts])
    _shadow(tmp_path, monkeypatch, everywhere=True)
    cfg = _cfg(hf_tokenizer_dir, src, tmp_path / "got", backend="fastokens")
    pool = WorkerPool(2)
    try:
        verdict = pool.start(Setup(build_job(cfg, []), "fastokens", ()))
    finally:
        pool.close()
    assert verdict == ("hf", "fastokens is not installed (pip install fastokens); using hf")


def test_an_error_before_the_job_is_sent_leaves_no_worker(tmp_path, texts):
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts])
    cfg = _cfg(tmp_path / "no-such-tokenizer", src, tmp_path / "o")
    with pytest.raises(AtelierError, match="--tokenizer-name-or-path"):
        preprocess(cfg)
    assert multiprocessing.active_children() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]


def _live_children(pid: int) -> set[int]:
    out = set()
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(d))
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_ctrl_c_while_workers_start_is_one_line_and_leaves_nothing(
    tmp_path, hf_tokenizer_dir, texts
):
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": t * 4} for t in texts * 40])
    argv = [sys.executable, "-m", "atelier", "llm", "preprocess", "--input", str(src),
            "--output-prefix", str(tmp_path / "o"), "--tokenizer-name-or-path",
            str(hf_tokenizer_dir), "--workers", "2"]  # fmt: skip

    def as_terminal() -> None:  # Ctrl-C's default action, in a group of its own
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.setpgrp()

    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, preexec_fn=as_terminal)
    deadline = time.monotonic() + 30
    kids: set[int] = set()
    while len(kids) < 3 and time.monotonic() < deadline and proc.poll() is None:
        kids |= _live_children(proc.pid)  # 2 workers + multiprocessing's resource tracker
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before the interrupt"
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    end = time.monotonic() + 5
    while [k for k in kids if _alive(k)] and time.monotonic() < end:
        time.sleep(0.05)
    assert not [k for k in kids if _alive(k)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
