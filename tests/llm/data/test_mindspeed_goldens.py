"""Byte-identical to MindSpeed-LLM v2.0.0's preprocess_data.py, per handler and edge.

goldens.json holds the sha256 of every .bin/.idx MindSpeed's own code wrote for the same
command line on the same inputs and tokenizers (mindspeed/make_goldens.py made it; the
suite needs neither MindSpeed nor the network). The scenarios cover each handler
(Alpaca and ShareGPT SFT, both pairwise handlers, PPO prompts, process reward,
pretraining), --append-eod on instruction data with a template that replaces the EOS,
--pack (MindSpeed's order and padding mask), --neat-pack, a tokenizer without a pad,
--seq-length with a sample of exactly that length (dropped, its document left empty) and
int32 ids for pretraining.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from atelier.cli.main import main
from atelier.llm.assets.build import demo_texts, train_bpe

from ...conftest import SPECIALS
from .mindspeed.make_goldens import fill

DATA = Path(__file__).parent / "mindspeed"
GOLDENS = json.loads((DATA / "goldens.json").read_text())


@pytest.fixture(scope="module")
def tokenizers(hf_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    nopad = train_bpe(
        demo_texts() * 3,
        tmp_path_factory.mktemp("nopad") / "hf",
        vocab_size=600,
        special_tokens=SPECIALS,
        bos="<s>",
        eos="</s>",
        pad=None,
    )
    out = {"tok": str(hf_tokenizer_dir), "nopad": str(nopad)}
    for key, path in out.items():
        digest = hashlib.sha256((Path(path) / "tokenizer.json").read_bytes()).hexdigest()
        assert digest == GOLDENS["tokenizers"][key], (
            f"the {key} test tokenizer is not the one the goldens were made with "
            "(tokenizers version change?); rerun mindspeed/make_goldens.py"
        )
    return out


@pytest.mark.parametrize("name", sorted(GOLDENS["scenarios"]))
def test_byte_identical_to_mindspeed(name: str, tokenizers: dict, tmp_path: Path) -> None:
    golden = GOLDENS["scenarios"][name]
    argv = fill(golden["argv"], DATA, tokenizers)
    assert main(["llm", "preprocess", *argv, "--output-prefix", str(tmp_path / "o")]) == 0
    got = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in tmp_path.iterdir()}
    assert got == golden["sha256"]
