"""SFT through the whole trainer on instruction datasets `preprocess` wrote: DP2 == DP1.

Unpacked samples padded to the longest of each micro-batch (`--no-pad-to-seq-lengths`), and
packed rows with `--reset-position-ids --reset-attention-mask`; the loss is normalised over
the global batch's trained (assistant) tokens, so the split over ranks and micro-batches
must not change it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from atelier.llm.data.preprocess import PreprocessConfig, preprocess
from atelier.llm.data.tokenizer import TokenizerSpec
from atelier.llm.train.data import DataSpec
from atelier.llm.train.launch import launch
from atelier.llm.train.loop import train
from tests.conftest import write_jsonl
from tests.llm.convert.conftest import make_hf_model
from tests.llm.train.parity import config

SEQ = 128  # the tiny models have 128 positions


def _losses(cfg) -> list[float]:
    return train(cfg).losses


@pytest.fixture(scope="module")
def sft(tmp_path_factory: pytest.TempPathFactory, hf_tokenizer_dir: Path):
    root = tmp_path_factory.mktemp("sft")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hf_tokenizer_dir))
    hf = make_hf_model(root / "hf", "llama", num_layers=2, vocab=len(tok))
    recs = [
        {
            "instruction": f"What is {i} plus {i}?",
            "input": "" if i % 3 else "Show it.",
            "output": f"It is {2 * i}." + " Yes." * (i % 3),
        }
        for i in range(48)
    ]
    src = write_jsonl(root / "alpaca.jsonl", recs)
    prefixes = {}
    for name, pack in (("plain", False), ("packed", True)):
        prefixes[name] = str(root / name)
        preprocess(
            PreprocessConfig(
                input=str(src),
                output_prefix=prefixes[name],
                tokenizer=TokenizerSpec(name_or_path=str(hf_tokenizer_dir)),
                handler_name="AlpacaStyleInstructionHandler",
                prompt_type="qwen",
                seq_length=SEQ,
                pack=pack,
            )
        )
    return hf, prefixes, tok.eos_token_id


@pytest.mark.parametrize("kind", ["plain", "packed"])
def test_sft_dp2_equals_dp1(sft, kind):
    hf, prefixes, eos = sft
    spec = DataSpec(
        data_path=prefixes[kind],
        split="100,0,0",
        seq_length=SEQ,
        is_instruction=True,
        pad_to_seq_length=kind == "packed",
        reset_position_ids=kind == "packed",
        reset_attention_mask=kind == "packed",
        eod_id=eos,
    )
    cfg = config(
        hf,
        data=spec,
        seq_length=SEQ,
        micro_batch_size=2,
        global_batch_size=4,
        train_iters=3,
        clip_grad=1.0,
    )
    one = launch(_losses, (cfg,))
    two = launch(_losses, (cfg,), nproc_per_node=2)
    assert len(one) == 3 and all(x > 0 for x in one)
    assert one == pytest.approx(two, abs=1e-5), (one, two)
