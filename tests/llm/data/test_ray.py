"""`--ray`: shards as Ray tasks on a local 2-CPU Ray give the single run's bytes, survive a
killed task and resume after a failed run."""

from __future__ import annotations

import pytest

from atelier.core.errors import AtelierError
from atelier.llm.data.preprocess import PreprocessConfig
from atelier.llm.data.ray_run import KILL_ONCE_ENV, preprocess_on_ray, shard_folder
from atelier.llm.data.tokenizer import TokenizerSpec

from ...conftest import write_jsonl
from .helpers import files_bytes, run

ray = pytest.importorskip("ray")


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
    with pytest.raises(AtelierError, match=r"shard 1 of 5 failed .* run the same command again"):
        preprocess_on_ray(
            _cfg(hf_tokenizer_dir, src, tmp_path / "s", append_eod=True),
            num_shards=5,
            max_retries=0,
        )
    kept = sorted(p.name for p in shard_folder(str(tmp_path / "s")).glob("shard-*.json"))
    assert kept == [f"shard-{i:05d}.json" for i in (0, 2, 3, 4)]
    monkeypatch.delenv(KILL_ONCE_ENV)
    rep = preprocess_on_ray(
        _cfg(hf_tokenizer_dir, src, tmp_path / "s", append_eod=True), num_shards=5
    )
    assert files_bytes(tmp_path / "s", ["text"]) == want and rep.written == 240


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


def test_ray_refuses_shard_flags_and_empty_input(local_ray, tmp_path, hf_tokenizer_dir):
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": "x"}])
    with pytest.raises(AtelierError, match="drop --shard"):
        preprocess_on_ray(_cfg(hf_tokenizer_dir, src, tmp_path / "o", shard=0, num_shards=2))
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(AtelierError, match="no records found"):
        preprocess_on_ray(_cfg(hf_tokenizer_dir, tmp_path / "e.jsonl", tmp_path / "o"))
