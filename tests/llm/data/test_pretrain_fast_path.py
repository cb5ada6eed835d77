"""The one-pass JSON-lines path gives exactly what the general per-record loop gives."""

from __future__ import annotations

import json

import numpy as np
import pytest

from atelier.llm.data import handlers
from atelier.llm.data.encode_pool import Setup, checked_encoder
from atelier.llm.data.preprocess import PreprocessConfig, build_job
from atelier.llm.data.sources import Chunk
from atelier.llm.data.tokenizer import TokenizerSpec


def _chunk(lines: list[str]) -> Chunk:
    payload = "".join(line + "\n" for line in lines).encode()
    return Chunk(0, "c.jsonl", 1, "lines", "jsonl", payload, len(payload))


@pytest.mark.parametrize(
    "odd",
    [None, "", "   ", "{bad json", '{"other": "x"}', '{"text": ["a", "b"]}', '["text"]', "3"],
)
def test_one_pass_equals_the_general_loop(hf_tokenizer_dir, texts, monkeypatch, odd):
    lines = [json.dumps({"text": t}) for t in texts] + [json.dumps({"text": ""})]
    if odd is not None:
        lines.insert(7, odd)
    cfg = PreprocessConfig(
        input="unused",
        output_prefix="unused",
        tokenizer=TokenizerSpec(name_or_path=str(hf_tokenizer_dir)),
        append_eod=True,
        seq_length=30,
    )
    encoder, _ = checked_encoder(Setup(build_job(cfg, []), "auto", ()))
    chunk = _chunk(lines)
    assert (encoder._one_text_per_line(chunk) is None) == (odd is not None)
    fast = encoder.encode(chunk)
    monkeypatch.setattr(handlers.Encoder, "_one_text_per_line", lambda self, c: None)
    slow = encoder.encode(chunk)
    for attr in ("read", "written", "tokens", "skipped", "errors"):
        assert getattr(fast, attr) == getattr(slow, attr), attr
    for key, arrays in slow.outputs.items():
        for got, want in zip(fast.outputs[key], arrays, strict=True):
            np.testing.assert_array_equal(got, want)
    assert fast.written > 0 and fast.skipped["too_long"] > 0 and fast.skipped["empty"] == 1
