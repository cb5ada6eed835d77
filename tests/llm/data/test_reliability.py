"""Issue 10 for llm data: nothing written is an error, the old dataset always
survives, readers see old or new, killed runs leave no workers or temporaries."""

from __future__ import annotations

import gzip
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from atelier.core import atomic
from atelier.core.errors import AtelierError
from atelier.llm.data.indexed import IndexedReader, IndexedWriter
from atelier.llm.data.merge import merge
from atelier.llm.data.preprocess import PreprocessConfig, preprocess
from atelier.llm.data.tokenizer import TokenizerSpec

from ...conftest import write_jsonl
from .helpers import files_bytes, run


def _old_dataset(tmp_path, tok, texts) -> tuple[Path, dict[str, bytes]]:
    src = write_jsonl(tmp_path / "good.jsonl", [{"text": t} for t in texts])
    run(tok, src, tmp_path / "o")
    return src, files_bytes(tmp_path / "o", ["text"])


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("skip_bad", r"0 of 3 documents written \(skipped: bad_record 3\); nothing was replaced"),
        ("seq1", r"0 of 60 documents written \(skipped: too_long 60\).*raise --seq-length 1"),
        ("shard", r"no records found in --shard 48 of 50 .*nothing was written or replaced"),
    ],
)
def test_zero_documents_written_is_an_error_and_old_output_stays(
    tmp_path, hf_tokenizer_dir, texts, case, match
):
    good, before = _old_dataset(tmp_path, hf_tokenizer_dir, texts)
    kw: dict = {}
    src = good
    if case == "skip_bad":
        src = tmp_path / "bad.jsonl"
        src.write_text('{"text": \n{oops\n[1, 2]\n')
        kw = {"skip_bad_records": True}
    elif case == "seq1":
        kw = {"seq_length": 1}
    else:
        src = write_jsonl(tmp_path / "three.jsonl", [{"text": t} for t in texts[:3]])
        kw = {"num_shards": 50, "shard": 48}
    with pytest.raises(AtelierError, match=match):
        run(hf_tokenizer_dir, src, tmp_path / "o", **kw)
    assert files_bytes(tmp_path / "o", ["text"]) == before
    assert not [n for n in _names(tmp_path) if n.startswith(".")]


def test_pack_with_seq_length_1_is_an_error(tmp_path, hf_tokenizer_dir):
    src = write_jsonl(
        tmp_path / "a.jsonl",
        [{"instruction": f"Q{i}", "input": "", "output": "A"} for i in range(4)],
    )
    kw = dict(handler_name="AlpacaStyleInstructionHandler", prompt_type="qwen", seq_length=1)
    with pytest.raises(AtelierError, match=r"--seq-length with --pack: at least 2"):
        run(hf_tokenizer_dir, src, tmp_path / "o", pack=True, **kw)
    assert _names(tmp_path) == ["a.jsonl"]  # the packing scratch folder is gone too


@pytest.mark.parametrize("kind", ["truncated", "not gzip"])
def test_bad_gzip_input_is_one_error_naming_the_file(tmp_path, hf_tokenizer_dir, texts, kind):
    raw = "".join(f'{{"text": "{t}"}}\n' for t in texts * 20).encode()
    f = tmp_path / "c.jsonl.gz"
    f.write_bytes(gzip.compress(raw)[:300] if kind == "truncated" else raw)
    want = "truncated" if kind == "truncated" else "not gzip data or corrupt"
    with pytest.raises(AtelierError, match=rf"c\.jsonl\.gz: {want}"):
        run(hf_tokenizer_dir, f, tmp_path / "o")
    with pytest.raises(AtelierError, match=rf"c\.jsonl\.gz: {want}"):  # shards count first
        run(hf_tokenizer_dir, f, tmp_path / "o", num_shards=2)


@pytest.mark.parametrize("content", [b"\xff\xfe\x00binary", b'{"not": "a vocab"}\n'])
def test_bert_tokenizer_given_a_non_vocab_file(tmp_path, texts, content):
    vocab = tmp_path / "vocab.txt"
    vocab.write_bytes(content)
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts[:2]])
    cfg = PreprocessConfig(
        input=str(src),
        output_prefix=str(tmp_path / "o"),
        tokenizer=TokenizerSpec(type="BertWordPieceCase", vocab_file=str(vocab)),
    )
    with pytest.raises(AtelierError, match=r"--vocab-file .*vocab\.txt: not a WordPiece vocab"):
        preprocess(cfg)


def test_output_prefix_under_proc_or_a_file(tmp_path, hf_tokenizer_dir, texts):
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts[:2]])
    (tmp_path / "plain").write_text("x")
    with pytest.raises(AtelierError, match=r"plain is a file, not a folder"):
        run(hf_tokenizer_dir, src, tmp_path / "plain" / "sub" / "o")
    if Path("/proc/self").is_dir():
        with pytest.raises(AtelierError, match=r"^--output-prefix: /proc/atelier"):
            run(hf_tokenizer_dir, src, Path("/proc/atelier/o"))
        run(hf_tokenizer_dir, src, tmp_path / "o")
        with pytest.raises(AtelierError, match=r"^--output-prefix: /proc"):
            merge([str(tmp_path / "o")], "/proc/atelier/m")


@pytest.mark.parametrize("mask,fmode", [(0o022, 0o644), (0o002, 0o664)])
def test_datasets_honour_the_umask(tmp_path, hf_tokenizer_dir, texts, mask, fmode):
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts])
    old = os.umask(mask)
    try:
        run(hf_tokenizer_dir, src, tmp_path / "d" / "o")
        merge([str(tmp_path / "d" / "o")], str(tmp_path / "d" / "m"))
    finally:
        os.umask(old)
    for p in (tmp_path / "d").iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == fmode, p


# ---------------------------------------------------------------- commit point

WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from atelier.core.atomic import commit_files
    from atelier.llm.data.indexed import IndexedWriter
    prefix, seconds = sys.argv[1], float(sys.argv[2])
    end, n = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        k = 3 + n % 2  # dataset A: 3 sequences of 3s; dataset B: 4 sequences of 4s
        w = IndexedWriter(prefix, np.int32)
        for _ in range(k):
            w.add_sequence(np.full(k * 100, k, dtype=np.int32))
        commit_files(w.finish())
        n += 1
    print(n)
    """
)


def test_reader_always_sees_the_old_or_the_new_dataset(tmp_path):
    prefix = tmp_path / "ds"
    w = IndexedWriter(prefix, np.int32)
    for _ in range(3):
        w.add_sequence(np.full(300, 3, dtype=np.int32))
    atomic.commit_files(w.finish())
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(prefix), "3"], stdout=subprocess.PIPE, text=True
    )
    seen = {3: 0, 4: 0}
    try:
        while writer.poll() is None:
            r = IndexedReader.open(prefix)
            k = len(r)
            assert k in (3, 4)
            for i in range(k):
                assert r[i].tolist() == [k] * (k * 100)  # never a mix of the two
            seen[k] += 1
    finally:
        commits = int(writer.communicate()[0])
    assert commits > 10 and seen[3] and seen[4], (commits, seen)
    assert _names(tmp_path) == ["ds.bin", "ds.idx"]


# ---------------------------------------------------------------- kill -9


def _children(pid: int) -> set[int]:
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == pid:
                out.add(int(d))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_kill_9_leaves_no_workers_and_the_rerun_cleans_up(tmp_path, hf_tokenizer_dir, texts):
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": t * 4} for t in texts * 120])
    out = tmp_path / "out"
    out.mkdir()
    argv = [sys.executable, "-m", "atelier", "llm", "preprocess", "--input", str(src),
            "--output-prefix", str(out / "ds"), "--tokenizer-name-or-path",
            str(hf_tokenizer_dir), "--workers", "2"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        workers |= _children(proc.pid)
        temps = [n for n in os.listdir(out) if n.endswith(".partial")]
        if len(workers) >= 2 and temps:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed; make the corpus larger"
    workers |= _children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert [n for n in os.listdir(out) if n.endswith(".partial")], "nothing to clean up"
    end = time.monotonic() + 5
    while [w for w in workers if _alive(w)] and time.monotonic() < end:
        time.sleep(0.05)
    orphans = [w for w in workers if _alive(w)]
    for w in orphans:
        os.kill(w, signal.SIGKILL)
    assert not orphans, "worker processes outlived their killed parent"

    rerun = subprocess.run(argv, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "stale temporaries of killed runs" in rerun.stderr
    assert _names(out) == ["ds_text_document.bin", "ds_text_document.idx"]
    clean = tmp_path / "clean"
    run(hf_tokenizer_dir, src, clean)
    assert files_bytes(out / "ds", ["text"]) == files_bytes(clean, ["text"])


def _as_other_user() -> list[str] | None:
    """A command prefix that drops root (root bypasses file modes), or None."""
    import shutil

    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv"):
        return ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
    return None


def test_permission_denied_output_and_input_are_one_line(hf_tokenizer_dir, texts):
    import shutil
    import tempfile

    prefix = _as_other_user()
    if prefix is None:
        pytest.skip("root without setpriv cannot be denied a permission")
    # pytest's own tmp folders are private to root; the other user needs a way in
    home = Path(tempfile.mkdtemp(prefix="atelier-perm-"))
    try:
        os.chmod(home, 0o755)
        tok = Path(shutil.copytree(hf_tokenizer_dir, home / "tok"))
        locked = home / "locked"
        locked.mkdir()
        os.chmod(locked, 0o555 if os.geteuid() else 0o755)  # root-owned 0755 denies nobody
        src = write_jsonl(home / "c.jsonl", [{"text": t} for t in texts[:3]])
        secret = write_jsonl(home / "secret.jsonl", [{"text": "private"}])
        os.chmod(secret, 0o000)
        writable = home / "open"
        writable.mkdir()
        os.chmod(writable, 0o777)
        base = [*prefix, sys.executable, "-m", "atelier", "llm", "preprocess",
                "--tokenizer-name-or-path", str(tok)]  # fmt: skip
        cases = (
            (["--input", str(src), "--output-prefix", str(locked / "o")],
             f"--output-prefix: {locked}: permission denied"),
            (["--input", str(secret), "--output-prefix", str(writable / "o")],
             f"{secret}: permission denied"),
        )  # fmt: skip
        for argv, want in cases:
            r = subprocess.run([*base, *argv], capture_output=True, text=True, timeout=120)
            errs = [x for x in r.stderr.splitlines() if x.startswith("atelier: error:")]
            assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
            assert len(errs) == 1 and want in errs[0], r.stderr
        assert os.listdir(locked) == []
    finally:
        shutil.rmtree(home, ignore_errors=True)
