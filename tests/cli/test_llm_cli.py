"""The CLI as users call it: MindSpeed flag spellings, env vars, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from atelier.cli.main import main
from atelier.llm.data.indexed import IndexedReader

from ..conftest import write_jsonl

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from megatron.core.datasets.indexed_dataset import IndexedDataset


def _err(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("atelier: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_mindspeed_command_line_works_unchanged(tmp_path, hf_tokenizer_dir, capsys):
    src = write_jsonl(
        tmp_path / "alpaca.jsonl",
        [{"instruction": f"Q{i}?", "input": "", "output": f"A{i}."} for i in range(8)],
    )
    argv = [
        "llm",
        "preprocess",
        "--input",
        str(src),
        "--tokenizer-name-or-path",
        str(hf_tokenizer_dir),
        "--output-prefix",
        str(tmp_path / "alpaca"),
        "--handler-name",
        "AlpacaStyleInstructionHandler",
        "--tokenizer-type",
        "PretrainedFromHF",
        "--workers",
        "1",
        "--log-interval",
        "1000",
        "--prompt-type",
        "qwen",
        "--seq-length",
        "64",
        "--streaming",
        "--map-keys",
        '{"prompt":"instruction","query":"input","response":"output"}',
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "documents written  8" in out and "tokens/s" in out
    for key in ("input_ids", "attention_mask", "labels"):
        ds = IndexedDataset(str(tmp_path / f"alpaca_packed_{key}_document"))
        assert len(ds) == 8 and ds.index.dtype == np.int32


def test_environment_variables_fill_absent_flags(tmp_path, hf_tokenizer_dir, monkeypatch, capsys):
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": "hello world"}] * 3)
    monkeypatch.setenv("RUN_TYPE", "pretrain")
    monkeypatch.setenv("ORIGINAL_TRAIN_DATA_PATH", str(src))
    monkeypatch.setenv("TOKENIZER_PATH", str(hf_tokenizer_dir))
    monkeypatch.setenv("PROCESSED_DATA_PREFIX", str(tmp_path / "env"))
    monkeypatch.setenv("TOKENIZER_TYPE", "PretrainedFromHF")
    monkeypatch.setenv("SEQ_LEN", "2")
    line = _err(capsys, ["llm", "preprocess"])  # SEQ_LEN applied: every document too long
    assert "0 of 3 documents written (skipped: too_long 3)" in line
    assert "raise --seq-length 2" in line and not (tmp_path / "env_text_document.idx").exists()
    assert main(["llm", "preprocess", "--seq-length", "64"]) == 0  # a flag wins over SEQ_LEN
    assert len(IndexedReader.open(tmp_path / "env_text_document")) == 3
    monkeypatch.setenv("RUN_TYPE", "sft")
    sg = tmp_path / "sg.jsonl"
    sg.write_text(
        json.dumps(
            {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
        )
        + "\n"
    )
    monkeypatch.setenv("ORIGINAL_TRAIN_DATA_PATH", str(sg))
    monkeypatch.setenv("PROMPT_TYPE", "qwen")
    monkeypatch.setenv("SEQ_LEN", "64")
    assert main(["llm", "preprocess"]) == 0
    assert len(IndexedReader.open(tmp_path / "env_packed_labels_document")) == 1


def test_gpt2_and_bert_tokenizer_types(tmp_path, hf_tokenizer_dir, capsys):
    from tokenizers import BertWordPieceTokenizer, Tokenizer

    Tokenizer.from_file(str(hf_tokenizer_dir / "tokenizer.json")).model.save(str(tmp_path))
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": "The river rose overnight."}] * 2)
    assert (
        main(
            [
                "llm",
                "preprocess",
                "--input",
                str(src),
                "--output-prefix",
                str(tmp_path / "g"),
                "--tokenizer-type",
                "GPT2BPETokenizer",
                "--vocab-file",
                str(tmp_path / "vocab.json"),
                "--merge-file",
                str(tmp_path / "merges.txt"),
                "--append-eod",
            ]
        )
        == 0
    )
    g = IndexedReader.open(tmp_path / "g_text_document")
    hf = Tokenizer.from_file(str(hf_tokenizer_dir / "tokenizer.json"))
    eot = hf.token_to_id("<|endoftext|>")
    assert g[0].tolist() == [
        *hf.encode("The river rose overnight.", add_special_tokens=False).ids,
        eot,
    ]
    bert = BertWordPieceTokenizer()
    bert.train_from_iterator(
        ["The river rose overnight.", "the library opens at nine"] * 5,
        vocab_size=200,
        show_progress=False,
    )
    bert.save_model(str(tmp_path))
    assert (
        main(
            [
                "llm",
                "preprocess",
                "--input",
                str(src),
                "--output-prefix",
                str(tmp_path / "b"),
                "--tokenizer-type",
                "BertWordPieceLowerCase",
                "--vocab-file",
                str(tmp_path / "vocab.txt"),
            ]
        )
        == 0
    )
    b = IndexedReader.open(tmp_path / "b_text_document")
    assert b[0].tolist() == bert.encode("The river rose overnight.", add_special_tokens=False).ids


def test_inspect_shows_counts_histogram_and_masked_sample(tmp_path, hf_tokenizer_dir, capsys):
    sg = tmp_path / "sg.jsonl"
    sg.write_text(
        json.dumps(
            {
                "conversations": [
                    {"from": "human", "value": "Hello there"},
                    {"from": "gpt", "value": "General Kenobi"},
                ]
            }
        )
        + "\n"
    )
    assert (
        main(
            [
                "llm",
                "preprocess",
                "--input",
                str(sg),
                "--output-prefix",
                str(tmp_path / "s"),
                "--tokenizer-name-or-path",
                str(hf_tokenizer_dir),
                "--handler-name",
                "SharegptStyleInstructionHandler",
                "--prompt-type",
                "qwen",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "llm",
                "inspect",
                str(tmp_path / "s"),
                "--tokenizer-name-or-path",
                str(hf_tokenizer_dir),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "packed_labels" in out and "length histogram" in out
    assert "[<|im_start|>system" in out  # masked run shown in brackets
    assert "General Kenobi<|im_end|>" in out
    line = _err(capsys, ["llm", "inspect", str(tmp_path / "s"), "--sample", "9"])
    assert "--sample 9: out of range" in line


@pytest.mark.parametrize(
    ("argv_tail", "expected"),
    [
        (["--handler-name", "FancyHandler"], "unknown; known: GeneralPretrainHandler"),
        (["--tokenizer-name-or-path", "/no/such/dir"], "/no/such/dir: no such folder"),
        (["--tokenizer-type", "Wrong"], "--tokenizer-type Wrong: unknown; use one of"),
        (
            ["--prompt-type", "nope", "--handler-name", "AlpacaStyleInstructionHandler"],
            "--prompt-type nope: unknown; known:",
        ),
        (["--workers", "0"], "argument --workers: 0 is below the minimum (allowed: 1 to 1024)"),
        (["--shard", "3", "--num-shards", "2"], "need 0 <= I < N"),
        (
            [
                "--map-keys",
                "{oops",
                "--handler-name",
                "AlpacaStyleInstructionHandler",
                "--prompt-type",
                "qwen",
            ],
            "--map-keys: not valid JSON",
        ),
        (["--json-keys", "body"], "missing key 'body' (keys present: text)"),
    ],
)
def test_bad_input_is_one_line(tmp_path, hf_tokenizer_dir, capsys, argv_tail, expected):
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": "hello"}])
    argv = [
        "llm",
        "preprocess",
        "--input",
        str(src),
        "--output-prefix",
        str(tmp_path / "o"),
        "--tokenizer-name-or-path",
        str(hf_tokenizer_dir),
        *argv_tail,
    ]
    assert expected in _err(capsys, argv)


def test_missing_input_and_malformed_line(tmp_path, hf_tokenizer_dir, capsys):
    base = [
        "llm",
        "preprocess",
        "--output-prefix",
        str(tmp_path / "o"),
        "--tokenizer-name-or-path",
        str(hf_tokenizer_dir),
    ]
    assert "no such file" in _err(capsys, [*base, "--input", str(tmp_path / "x.jsonl")])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n')
    line = _err(capsys, [*base, "--input", str(bad)])
    assert f"{bad}: line 2: malformed JSON" in line and "--skip-bad-records" in line


def test_console_script_help_and_error_exit_code(tmp_path):
    exe = [sys.executable, "-m", "atelier"]
    help_out = subprocess.run([*exe, "llm", "preprocess", "--help"], capture_output=True, text=True)
    assert help_out.returncode == 0 and "--tokenizer-name-or-path" in help_out.stdout
    bad = subprocess.run(
        [
            *exe,
            "llm",
            "preprocess",
            "--input",
            str(tmp_path / "none.jsonl"),
            "--output-prefix",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and "no such file" in bad.stderr
