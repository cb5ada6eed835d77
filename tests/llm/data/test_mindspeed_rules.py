"""MindSpeed-LLM's preprocessing rules where goldens cannot reach, and Atelier's opt-outs.

The goldens (test_mindspeed_goldens.py) prove the default bytes; these check what MindSpeed
cannot produce (it never finishes packing a sample of exactly --seq-length), the
documented flags that leave MindSpeed's behaviour (--no-empty-documents, --mask-padding,
--token-dtype auto), and the one-line refusals.
"""

from __future__ import annotations

import bisect
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from atelier.cli.main import main
from atelier.core.errors import AtelierError
from atelier.llm.data.indexed import IndexedReader
from atelier.llm.data.packing import pack_plan

from ...conftest import write_jsonl
from .helpers import instruction_rows, run

DATA = Path(__file__).parent / "mindspeed"
SFT = dict(handler_name="AlpacaStyleInstructionHandler", prompt_type="qwen")


def _knapsack_order(lengths: list[int], capacity: int) -> list[list[int]]:
    """The greedy order, spelled out: sorted lengths, take the largest that fits until
    none does; a length's samples are handed out last-read first."""
    pool = sorted(lengths)
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, n in enumerate(lengths):
        by_length[n].append(i)
    rows = []
    while pool:
        room, row = capacity, []
        while (k := bisect.bisect(pool, room)) > 0:
            n = pool.pop(k - 1)
            room -= n
            row.append(by_length[n].pop())
        rows.append(row)
    return rows


def test_pack_plan_matches_the_greedy_knapsack_order():
    rng = np.random.default_rng(3)
    for _ in range(30):
        lengths = rng.integers(1, 40, size=int(rng.integers(1, 150))).tolist()
        assert pack_plan(np.array(lengths), 47, latest_first=True) == _knapsack_order(lengths, 47)


def _lengths(prefix: Path) -> list[int]:
    return IndexedReader.open(f"{prefix}_packed_input_ids_document").lengths.tolist()


def test_pack_drops_a_sample_of_exactly_seq_length(tmp_path, hf_tokenizer_dir):
    src = DATA / "alpaca.jsonl"
    run(hf_tokenizer_dir, src, tmp_path / "plain", **SFT)
    lengths = _lengths(tmp_path / "plain")
    limit = lengths[4]
    r = run(hf_tokenizer_dir, src, tmp_path / "p", seq_length=limit, pack=True, **SFT)
    assert r.skipped["too_long"] == sum(n >= limit for n in lengths) >= 1
    rows = instruction_rows(tmp_path / "p")
    assert rows and all(len(ids) == limit for ids, _, _ in rows)
    assert all(labels[-1] == -100 and mask[-1] == 1 for _, mask, labels in rows)  # a pad, mask 1
    pad = rows[0][0][-1]

    def real(ids: np.ndarray, labels: np.ndarray) -> int:  # before the trailing padding
        n = len(ids)
        while n and ids[n - 1] == pad and labels[n - 1] == -100:
            n -= 1
        return n

    assert sum(real(ids, labels) for ids, _, labels in rows) == sum(n for n in lengths if n < limit)


def test_mask_padding_changes_only_the_mask(tmp_path, hf_tokenizer_dir):
    src = DATA / "alpaca.jsonl"
    kw = dict(seq_length=160, pack=True, **SFT)
    run(hf_tokenizer_dir, src, tmp_path / "ms", **kw)
    run(hf_tokenizer_dir, src, tmp_path / "m0", mask_padding=True, **kw)
    for (ids, mask, labels), (ids0, mask0, labels0) in zip(
        instruction_rows(tmp_path / "ms"), instruction_rows(tmp_path / "m0"), strict=True
    ):
        assert np.array_equal(ids, ids0) and np.array_equal(labels, labels0)
        assert mask.all()
        n = int(mask0.sum())
        assert mask0[:n].all() and not mask0[n:].any() and n < len(mask0)


def test_no_empty_documents_keeps_the_same_sequences(tmp_path, hf_tokenizer_dir):
    src = DATA / "alpaca.jsonl"
    run(hf_tokenizer_dir, src, tmp_path / "plain", **SFT)
    limit = sorted(_lengths(tmp_path / "plain"))[12]
    run(hf_tokenizer_dir, src, tmp_path / "ms", seq_length=limit, **SFT)
    run(hf_tokenizer_dir, src, tmp_path / "clean", seq_length=limit, empty_documents=False, **SFT)
    for key in ("input_ids", "attention_mask", "labels"):
        ms = IndexedReader.open(f"{tmp_path}/ms_packed_{key}_document")
        clean = IndexedReader.open(f"{tmp_path}/clean_packed_{key}_document")
        assert ms.lengths.tolist() == clean.lengths.tolist()
        assert all(np.array_equal(ms[i], clean[i]) for i in range(len(ms)))
        docs = np.diff(ms.doc_ends)
        assert len(docs) == 24 and (docs == 0).sum() == 24 - len(ms)  # one per dropped sample
        assert np.diff(clean.doc_ends).tolist() == [1] * len(clean)


def test_pretraining_ids_are_int32_unless_auto(tmp_path, hf_tokenizer_dir):
    src = DATA / "text.jsonl"
    run(hf_tokenizer_dir, src, tmp_path / "ms")
    run(hf_tokenizer_dir, src, tmp_path / "auto", token_dtype="auto")
    ms = IndexedReader.open(tmp_path / "ms_text_document")
    auto = IndexedReader.open(tmp_path / "auto_text_document")
    assert ms.dtype == np.int32 and auto.dtype == np.uint16  # a 600-token vocabulary
    assert all(np.array_equal(ms[i], auto[i]) for i in range(len(ms)))


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--handler-name", "LlamaFactoryInstructionHandler"], "dataset_info.json"),
        (["--handler-name", "NoSuchHandler"], "unknown; known: GeneralPretrainHandler"),
        (["--split-sentences"], "--split-sentences: not supported: sentence splitting"),
        (["--merge-group-keys", "a"], "--merge-group-keys: not supported: .*atelier llm merge"),
        (["--hf-datasets-params", "p.json"], "--hf-datasets-params: not supported"),
        (["--neat-pack"], "--neat-pack needs --pack"),
        (
            ["--handler-name", "AlpacaStylePairwiseHandler", "--prompt-type", "qwen", "--pack"],
            "--pack is for instruction handlers, not AlpacaStylePairwiseHandler",
        ),
        (
            ["--handler-name", "AlpacaStyleProcessRewardHandler"],
            "--placeholder-token 'ки': the tokenizer encodes it as",
        ),
    ],
)
def test_refusals_are_one_line(tmp_path, hf_tokenizer_dir, capsys, argv, match):
    base = ["llm", "preprocess", "--input", str(DATA / "alpaca.jsonl")]
    base += ["--tokenizer-name-or-path", str(hf_tokenizer_dir), "--seq-length", "64"]
    code = main([*base, "--output-prefix", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("atelier: error:")]
    assert len(lines) == 1 and re.search(match, lines[0]), err
    assert not list(tmp_path.iterdir())


def test_accepted_flags_change_nothing(tmp_path, hf_tokenizer_dir):
    base = ["llm", "preprocess", "--input", str(DATA / "alpaca.jsonl")]
    base += ["--tokenizer-name-or-path", str(hf_tokenizer_dir)]
    base += ["--handler-name", "AlpacaStyleInstructionHandler", "--prompt-type", "qwen"]
    assert main([*base, "--output-prefix", str(tmp_path / "a")]) == 0
    extra = ["--overwrite-cache", "--make-vocab-size-divisible-by", "1", "--seed", "7"]
    extra += ["--max-samples", "3", "--dataset-impl", "lazy", "--mix-strategy", "concat"]
    extra += ["--dataset-additional-keys", "--n-subs", "4", "--cache-dir", str(tmp_path)]
    assert main([*base, *extra, "--output-prefix", str(tmp_path / "b")]) == 0
    for key in ("input_ids", "attention_mask", "labels"):
        for ext in ("bin", "idx"):
            a = Path(f"{tmp_path}/a_packed_{key}_document.{ext}").read_bytes()
            assert a == Path(f"{tmp_path}/b_packed_{key}_document.{ext}").read_bytes()


def test_process_reward_record_errors_name_the_record(tmp_path, hf_tokenizer_dir):
    src = write_jsonl(
        tmp_path / "prm.jsonl",
        [
            {"input": "a <reserved_106> b <reserved_106>", "value": ["+", "-"]},
            {"input": "a <reserved_106> b <reserved_106>", "value": ["+"]},
        ],
    )
    kw = dict(
        handler_name="AlpacaStyleProcessRewardHandler",
        placeholder_token="<reserved_106>",
        reward_tokens=("+", "-"),
    )
    with pytest.raises(AtelierError, match=r"prm\.jsonl: line 2: 2 step markers .* but 1 labels"):
        run(hf_tokenizer_dir, src, tmp_path / "o", **kw)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"input": "a <reserved_106>", "value": ["ok"]}])
    with pytest.raises(AtelierError, match=r"label 'ok' is not one of --reward-tokens: \+ -"):
        run(hf_tokenizer_dir, bad, tmp_path / "o", **kw)


def test_pairwise_record_without_rejected_is_named(tmp_path, hf_tokenizer_dir):
    src = write_jsonl(tmp_path / "p.jsonl", [{"instruction": "q", "chosen": "a"}])
    with pytest.raises(AtelierError, match=r"p\.jsonl: line 1: missing key 'rejected'"):
        run(
            hf_tokenizer_dir,
            src,
            tmp_path / "o",
            handler_name="AlpacaStylePairwiseHandler",
            prompt_type="qwen",
        )
