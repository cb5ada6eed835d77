"""`--ray`: shards as Ray tasks on a local 2-CPU Ray give the single run's bytes, survive a
killed task and resume after a failed run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atelier.core.errors import AtelierError
from atelier.llm.data import sources
from atelier.llm.data.preprocess import PreprocessConfig
from atelier.llm.data.ray_ranges import plan_ranges, range_chunks
from atelier.llm.data.ray_run import (
    KILL_ONCE_ENV,
    RESTART_DELAY_ENV,
    preprocess_on_ray,
    shard_folder,
)
from atelier.llm.data.tokenizer import TokenizerSpec

from ...conftest import write_jsonl
from .helpers import files_bytes, run

ray = pytest.importorskip("ray")


def test_ray_started_here_is_lean_and_shut_down(tmp_path, hf_tokenizer_dir, texts):
    """Without a running Ray the driver starts a local one (no autoscaler, log monitor or
    API server), and shuts it down again; the bytes are the single run's. Runs before the
    module's Ray."""
    from ray._private.parameter import RayParams

    from atelier.llm.data.ray_run import _lean_local_ray

    assert not ray.is_initialized()
    node = ray._private.node.Node
    api_server = node.start_api_server
    with _lean_local_ray(ray):
        lean = RayParams()
        assert node.start_api_server is not api_server  # no dashboard process started
    assert (lean.no_monitor, lean.include_log_monitor) == (True, False)
    assert RayParams().no_monitor is False  # restored
    assert node.start_api_server is api_server

    src = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts])
    one = run(hf_tokenizer_dir, src, tmp_path / "one", append_eod=True)
    cfg = _cfg(hf_tokenizer_dir, src, tmp_path / "r", append_eod=True)
    rep = preprocess_on_ray(cfg, num_cpus=2)
    assert not ray.is_initialized()
    assert files_bytes(tmp_path / "r", ["text"]) == files_bytes(tmp_path / "one", ["text"])
    assert rep.written == len(texts)
    assert rep.backend == one.backend  # each worker's check agreed with the single run's


def test_ray_load_in_a_child_hands_back_the_job_or_the_users_error(
    tmp_path, hf_tokenizer_dir, texts, monkeypatch
):
    """A driver that starts Ray loads the tokenizer in a child process (`ChildCall`): the job
    comes back with the input's first texts for the workers' backend check, and a bad
    tokenizer is the same one-line error."""
    from atelier.core.workers import ChildCall
    from atelier.llm.data import ray_run
    from atelier.llm.data.ray_run import _load_setup

    src = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts])
    cfg = _cfg(hf_tokenizer_dir, src, tmp_path / "r", append_eod=True)
    setup = ChildCall(_load_setup, cfg, sources.resolve_inputs(str(src))).result()
    assert setup.job.append_eod and setup.wanted == "auto"
    assert list(setup.sample) == texts[: len(setup.sample)] and setup.sample
    bad = _cfg(tmp_path / "missing", src, tmp_path / "r")
    with pytest.raises(AtelierError, match="missing"):
        ChildCall(_load_setup, bad, sources.resolve_inputs(str(src))).result()
    # a missing folder is said before Ray starts, not after its seconds of start-up
    monkeypatch.setattr(ray_run, "_start_ray", lambda *a: pytest.fail("Ray was started"))
    with pytest.raises(AtelierError, match=r"--tokenizer-name-or-path .*missing: no such folder"):
        preprocess_on_ray(bad, num_cpus=2)
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


def _cfg(tok, src, prefix, **kw) -> PreprocessConfig:
    return PreprocessConfig(
        input=str(src),
        output_prefix=str(prefix),
        tokenizer=TokenizerSpec(name_or_path=str(tok)),
        **kw,
    )


def test_ray_equals_single_run_kills_and_resumes(
    local_ray, tmp_path, hf_tokenizer_dir, texts, monkeypatch
):
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts * 4])
    run(hf_tokenizer_dir, src, tmp_path / "one", append_eod=True)
    want = files_bytes(tmp_path / "one", ["text"])

    # a task whose worker dies is retried by Ray; the bytes are the single run's
    monkeypatch.setenv(KILL_ONCE_ENV, str(tmp_path / "killed"))
    rep = preprocess_on_ray(
        _cfg(hf_tokenizer_dir, src, tmp_path / "r", append_eod=True), num_shards=5
    )
    assert (tmp_path / "killed").exists()
    assert files_bytes(tmp_path / "r", ["text"]) == want
    assert (rep.read, rep.written) == (240, 240)
    assert not shard_folder(str(tmp_path / "r")).exists()

    # without retries the killed shard fails the run; the rerun keeps the finished shards
    (tmp_path / "killed").unlink()
    _killed_shard_fails_and_the_rest_are_kept(
        hf_tokenizer_dir, src, tmp_path / "s", r"shard 1 of 5 failed .* run the same command again"
    )
    monkeypatch.delenv(KILL_ONCE_ENV)
    rep = preprocess_on_ray(
        _cfg(hf_tokenizer_dir, src, tmp_path / "s", append_eod=True), num_shards=5
    )
    assert files_bytes(tmp_path / "s", ["text"]) == want and rep.written == 240


def test_ray_waits_for_a_slow_restart_without_spending_retries(
    local_ray, tmp_path, hf_tokenizer_dir, texts, monkeypatch
):
    """A worker that takes long to come back (a busy machine: seconds of imports) makes
    Ray refuse its calls as "actor unavailable"; that is no retry of the range."""
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts * 4])
    run(hf_tokenizer_dir, src, tmp_path / "one", append_eod=True)
    monkeypatch.setenv(KILL_ONCE_ENV, str(tmp_path / "killed"))
    monkeypatch.setenv(RESTART_DELAY_ENV, "8")
    rep = preprocess_on_ray(
        _cfg(hf_tokenizer_dir, src, tmp_path / "r", append_eod=True), num_shards=5, max_retries=1
    )
    assert (tmp_path / "killed").exists() and rep.written == 240
    assert files_bytes(tmp_path / "r", ["text"]) == files_bytes(tmp_path / "one", ["text"])

    # the loss itself still spends a retry, however Ray words it while the worker restarts;
    # the range that worker gets next is refused until it is back, and still finishes
    (tmp_path / "killed").unlink()
    _killed_shard_fails_and_the_rest_are_kept(
        hf_tokenizer_dir, src, tmp_path / "s", r"shard 1 of 5 failed after 0 retries"
    )


def test_ray_worker_checks_its_own_encoders_and_falls_back_to_hf(
    local_ray, tmp_path, hf_tokenizer_dir, texts, monkeypatch
):
    """A `--ray` worker runs the load-time backend check on the encoders it builds (in this
    process here, so the broken backend applies): fastokens differing from hf on the input's
    first texts -> hf, the notice returned for the driver to log, the same bytes."""
    from atelier.llm.data.ray_run import _load_setup
    from atelier.llm.data.ray_shard import ShardWorker

    from .test_tokenizer_backends import _break

    src = write_jsonl(tmp_path / "c.jsonl", [{"text": t + " ZQXJ"} for t in texts])
    one = run(hf_tokenizer_dir, src, tmp_path / "one", append_eod=True)
    assert one.backend == "fastokens"
    cfg = _cfg(hf_tokenizer_dir, src, tmp_path / "r", append_eod=True)
    srcs = sources.resolve_inputs(str(src))
    job_box = [ray.put(_load_setup(cfg, srcs))]
    _break(monkeypatch, "ZQXJ")
    opts = {"token_dtype": "int32", "skip_bad_records": False, "kill_marker": None}
    out = ShardWorker().run(job_box, srcs[0], plan_ranges(srcs, 1)[0], 0, str(tmp_path / "w"), opts)
    assert out["backend"] == "hf"
    assert out["load_notice"].startswith("fastokens differs from hf on ")
    assert out["load_notice"].endswith("; using hf")
    assert files_bytes(tmp_path / "w", ["text"]) == files_bytes(tmp_path / "one", ["text"])


def test_ray_packed_instruction_data_equals_single_run(local_ray, tmp_path, hf_tokenizer_dir):
    recs = [
        {"instruction": f"Question {i}?", "input": "", "output": f"Answer {i}." * (i % 4 + 1)}
        for i in range(40)
    ]
    src = write_jsonl(tmp_path / "a.jsonl", recs)
    kw = dict(
        handler_name="AlpacaStyleInstructionHandler", prompt_type="qwen", pack=True, seq_length=96
    )
    run(hf_tokenizer_dir, src, tmp_path / "one", **kw)
    keys = ["packed_input_ids", "packed_attention_mask", "packed_labels"]
    rep = preprocess_on_ray(_cfg(hf_tokenizer_dir, src, tmp_path / "r", **kw), num_shards=3)
    assert files_bytes(tmp_path / "r", keys) == files_bytes(tmp_path / "one", keys)
    assert rep.packed_rows is not None


def _lines_of(chunks) -> list[tuple[int, bytes]]:
    """(line number, line) of every line the chunks hold, as the encoder numbers them."""
    out = []
    for c in chunks:
        out += list(enumerate(c.payload.split(b"\n")[:-1], c.first))
    return out


def test_byte_ranges_cut_on_line_starts_and_cover_every_line(tmp_path):
    """Cuts land on line starts (long lines, blank lines, CRLF, no final newline), never
    span files, keep input order, and together give exactly iter_chunks' lines."""
    rows = [json.dumps({"text": "x" * (i * 37 % 500)}) for i in range(300)]
    a = tmp_path / "d" / "a.jsonl"
    a.parent.mkdir()
    a.write_bytes(("\r\n".join(rows[:100]) + "\n\n" + "\n".join(rows[100:200])).encode())
    (tmp_path / "d" / "b.jsonl").write_text("\n".join(rows[200:]) + "\n")
    (tmp_path / "d" / "c.jsonl").write_text("")  # empty: no range
    srcs = sources.resolve_inputs(str(tmp_path / "d"))
    for pieces in (1, 3, 7, 64, 5000):
        ranges = plan_ranges(srcs, pieces)
        assert [(r.file, r.start) for r in ranges] == sorted((r.file, r.start) for r in ranges)
        for r in ranges:
            data = Path(srcs[r.file].path).read_bytes()
            assert r.unit == "bytes" and (r.start == 0 or data[r.start - 1 : r.start] == b"\n")
        for i, src in enumerate(srcs):
            mine = [c for r in ranges if r.file == i for c in range_chunks(src, r)]
            want = list(sources.iter_chunks([src]))
            assert b"".join(c.payload for c in mine) == b"".join(c.payload for c in want)
    assert len(plan_ranges(srcs, 64)) > 10


def test_ray_many_files_and_ranges_equal_single_run_error_names_true_line(
    local_ray, tmp_path, hf_tokenizer_dir, texts
):
    d = tmp_path / "in"
    d.mkdir()
    for j in range(3):
        write_jsonl(d / f"p{j}.jsonl", [{"text": t} for t in texts[j * 20 : j * 20 + 25]])
    (d / "p3.jsonl").write_text(json.dumps({"text": texts[0]}))  # no final newline
    run(hf_tokenizer_dir, d, tmp_path / "one", append_eod=True)
    rep = preprocess_on_ray(_cfg(hf_tokenizer_dir, d, tmp_path / "r", append_eod=True), 11)
    assert files_bytes(tmp_path / "r", ["text"]) == files_bytes(tmp_path / "one", ["text"])
    assert rep.read == 25 + 25 + 20 + 1

    lines = [json.dumps({"text": t}) for t in texts]
    lines[47] = '{"text": broken'
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(AtelierError, match=r"bad\.jsonl: line 48: malformed JSON"):
        preprocess_on_ray(_cfg(hf_tokenizer_dir, tmp_path / "bad.jsonl", tmp_path / "b"), 6)


def test_ray_refuses_shard_flags_and_empty_input(local_ray, tmp_path, hf_tokenizer_dir):
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": "x"}])
    with pytest.raises(AtelierError, match="drop --shard"):
        preprocess_on_ray(_cfg(hf_tokenizer_dir, src, tmp_path / "o", shard=0, num_shards=2))
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(AtelierError, match="no records found"):
        preprocess_on_ray(_cfg(hf_tokenizer_dir, tmp_path / "e.jsonl", tmp_path / "o"))


def _killed_shard_fails_and_the_rest_are_kept(tok, src, prefix, match: str) -> None:
    """With the kill marker armed and no retries, shard 1 of 5 fails the run and the other
    four stay recorded for a rerun."""
    with pytest.raises(AtelierError, match=match):
        preprocess_on_ray(_cfg(tok, src, prefix, append_eod=True), num_shards=5, max_retries=0)
    kept = sorted(p.name for p in shard_folder(str(prefix)).glob("shard-*.json"))
    assert kept == [f"shard-{i:05d}.json" for i in (0, 2, 3, 4)]
