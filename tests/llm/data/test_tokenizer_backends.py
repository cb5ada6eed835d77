"""The fast encoder gives exactly the reference's ids, and is dropped the moment it doesn't."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from atelier.llm.assets.build import demo_texts
from atelier.llm.data import tokenizer_backends as backends
from atelier.llm.data.tokenizer import TokenizerSpec, choose_backend, load_tokenizer
from atelier.llm.data.tokenizer_backends import (
    FAST_BACKENDS,
    FastBackend,
    FastokensEncoder,
    HfEncoder,
    SampledCheck,
    adversarial_texts,
    first_mismatch,
)

from ...conftest import write_jsonl
from .helpers import files_bytes, run

pytest.importorskip("fastokens")

BUNDLED = Path(__file__).parents[3] / "src" / "atelier" / "llm" / "assets" / "tokenizer"


def _random_texts(n: int, seed: int = 0) -> list[str]:
    """Mixed scripts, whitespace, digits and emoji: a generated adversarial corpus."""
    rng = random.Random(seed)
    alphabet = (
        list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        + list(" \t\n\r  ")
        + list(".,;:!?'\"()[]{}<>/\\|@#$%^&*-_=+~`")
        + list("éèêëàâäôöûüçñßøåæœ")
        + list("中文日本語한국어ไทยعربيעבריתहिन्दी")
        + ["😀", "👩\u200d👩\u200d👧", "🇨🇳", "\u0301", "\u1df6", "\u200b", "\ufeff", "\x00"]
    )
    words = [w for t in demo_texts() for w in t.split()]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 30)):
            if rng.random() < 0.6:
                parts.append(rng.choice(words))
            else:
                parts.append("".join(rng.choices(alphabet, k=rng.randint(1, 6))))
        out.append(rng.choice(["", " ", "  ", "\n"]).join(parts))
    return out


@pytest.mark.parametrize("which", ["conftest", "bundled"])
def test_fastokens_ids_identical_on_adversarial_corpus(which, hf_tokenizer_dir):
    folder = hf_tokenizer_dir if which == "conftest" else BUNDLED
    loaded = load_tokenizer(TokenizerSpec(name_or_path=str(folder)))
    ref = HfEncoder(loaded.rust_json)
    fast = FastokensEncoder(loaded.rust_json)
    texts = adversarial_texts(loaded.added_tokens) + _random_texts(2000)
    for add_special in (False, True):
        a_ids, a_len = ref.encode_flat(texts, add_special)
        b_ids, b_len = fast.encode_flat(texts, add_special)
        np.testing.assert_array_equal(a_len, b_len)
        np.testing.assert_array_equal(a_ids, b_ids)
    assert first_mismatch(ref, fast, texts) is None
    chosen, notice = choose_backend(loaded, "auto", texts[:50])
    assert chosen.backend == "fastokens" and notice is None


class _Broken:
    """A fast encoder that is wrong on texts containing `trigger` (one id changed)."""

    def __init__(self, inner, trigger: str) -> None:
        self.inner, self.trigger = inner, trigger

    def encode_flat(self, texts, add_special):
        ids, lens = self.inner.encode_flat(texts, add_special)
        ids = ids.copy()
        starts = np.concatenate([[0], np.cumsum(lens)])
        for i, t in enumerate(texts):
            if self.trigger in t and lens[i]:
                ids[starts[i]] ^= 1
        return ids, lens


def _break(monkeypatch, trigger: str) -> None:
    broken = FastBackend("fastokens", lambda js: _Broken(FastokensEncoder(js), trigger), "")
    monkeypatch.setitem(FAST_BACKENDS, "fastokens", broken)
    monkeypatch.delitem(FAST_BACKENDS, "tiktoken", raising=False)  # the broken one is the last


def test_difference_at_load_keeps_hf_with_a_notice(hf_tokenizer_dir, monkeypatch):
    _break(monkeypatch, "é")  # the adversarial suite has accented text
    loaded = load_tokenizer(TokenizerSpec(name_or_path=str(hf_tokenizer_dir)))
    chosen, notice = choose_backend(loaded, "auto", [])
    assert chosen.backend == "hf"
    assert notice.startswith("fastokens differs from hf on ") and notice.endswith("; using hf")


def test_difference_in_the_input_sample_keeps_hf(hf_tokenizer_dir, monkeypatch):
    _break(monkeypatch, "ZQXJ")
    loaded = load_tokenizer(TokenizerSpec(name_or_path=str(hf_tokenizer_dir)))
    assert choose_backend(loaded, "auto", ["plain text"])[0].backend == "fastokens"
    chosen, notice = choose_backend(loaded, "auto", ["plain", "a ZQXJ b"])
    assert chosen.backend == "hf" and "ZQXJ" in notice


# beyond the first 256 records, which the load-time check already encodes with both
@pytest.mark.parametrize("verify,where", [("all", 301), ("sample", 512)])
def test_difference_during_the_run_redoes_the_chunk_with_hf(
    tmp_path, hf_tokenizer_dir, monkeypatch, verify, where
):
    texts = [f"document number {i} about {demo_texts()[i % 5][:40]}" for i in range(700)]
    texts[where] = "hidden ZQXJ trigger " + texts[where]
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts])
    ref = run(hf_tokenizer_dir, src, tmp_path / "ref", append_eod=True)
    assert ref.backend == "fastokens"  # nothing wrong yet: the real encoder

    _break(monkeypatch, "ZQXJ")
    cfg_tok = TokenizerSpec(name_or_path=str(hf_tokenizer_dir), verify=verify)
    from atelier.llm.data.preprocess import PreprocessConfig, preprocess

    report = preprocess(
        PreprocessConfig(
            input=str(src), output_prefix=str(tmp_path / "got"), tokenizer=cfg_tok, append_eod=True
        )
    )
    assert report.backend == "fastokens, then hf"
    assert len(report.notices) == 1 and "ZQXJ" in report.notices[0]
    assert files_bytes(tmp_path / "got", ["text"]) == files_bytes(tmp_path / "ref", ["text"])


def test_sample_check_is_one_in_n_across_calls():
    check = SampledCheck("sample", every=4)
    assert check.pick(6).tolist() == [0, 4]
    assert check.pick(3).tolist() == [2]  # documents 8 of the stream
    assert check.pick(1).tolist() == []
    assert SampledCheck("all").pick(3).tolist() == [0, 1, 2]


def test_hf_backend_and_auto_write_the_same_bytes(tmp_path, hf_tokenizer_dir, texts):
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in texts] + [{"text": ""}])
    outs = {}
    for backend in ("hf", "auto"):
        from atelier.llm.data.preprocess import PreprocessConfig, preprocess

        report = preprocess(
            PreprocessConfig(
                input=str(src),
                output_prefix=str(tmp_path / backend),
                tokenizer=TokenizerSpec(name_or_path=str(hf_tokenizer_dir), backend=backend),
                append_eod=True,
                seq_length=40,
            )
        )
        assert report.backend == ("hf" if backend == "hf" else "fastokens")
        outs[backend] = (files_bytes(tmp_path / backend, ["text"]), report.skipped)
    assert outs["hf"] == outs["auto"]


def test_fastokens_missing(hf_tokenizer_dir, monkeypatch):
    monkeypatch.setattr(backends, "available", lambda name: False)
    loaded = load_tokenizer(TokenizerSpec(name_or_path=str(hf_tokenizer_dir)))
    chosen, notice = choose_backend(loaded, "auto", [])
    assert chosen.backend == "hf" and notice is None
    chosen, notice = choose_backend(loaded, "fastokens", [])
    assert chosen.backend == "hf" and "not installed" in notice


def test_cli_offers_every_backend():
    from atelier.cli.llm import TOKENIZER_BACKENDS

    assert TOKENIZER_BACKENDS == backends.BACKENDS


ONE_THREAD_CHILD = """
import os, sys
from atelier.llm.data.tokenizer import TokenizerSpec, load_tokenizer
from atelier.llm.data.tokenizer_backends import FastokensEncoder
loaded = load_tokenizer(TokenizerSpec(name_or_path=sys.argv[1]))
enc = FastokensEncoder(loaded.rust_json)
for _ in range(20):
    enc.encode_flat(["some words to encode, and then some more"] * 4096, True)
names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
print(",".join(n for n in names if n.startswith("fastokens")))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_fastokens_encoder_keeps_to_one_thread():
    """`--workers N` means N cores: fastokens' own BPE helper thread is switched off."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTOKENS_")}
    env["PYTHONPATH"] = os.pathsep.join([str(BUNDLED.parents[3]), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", ONE_THREAD_CHILD, str(BUNDLED)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == ""  # no fastokens-N helper threads
