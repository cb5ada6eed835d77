"""Every built-in template against MindSpeed-LLM 2.0.0's own preprocess_data.py.

`golden_mindspeed/goldens.json` holds the sha256 of the six .bin/.idx files that
MindSpeed wrote for the tiny inputs next to it (scripts/mindspeed_goldens.py ran
MindSpeed's code to make them): per template, ShareGPT with tool calls
(`function_call`, `observation`, several tools, `tools: "[]"`, no tools, tools
that are not JSON, a call that is not JSON) with and without `--map-keys` for the
system/tools columns, and Alpaca with system and history; for the tiny test
tokenizer and for GPT-2's real vocabulary (which lacks every chat token).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from atelier.llm.data.preprocess import PreprocessConfig, preprocess
from atelier.llm.data.templates import available
from atelier.llm.data.tokenizer import TokenizerSpec

from .golden_tokenizers import fingerprint, packed_sha256
from .helpers import instruction_rows

GOLDEN = Path(__file__).parent / "golden_mindspeed"
DATA = json.loads((GOLDEN / "goldens.json").read_text("utf-8"))
BY_TEMPLATE: dict[str, list[dict]] = defaultdict(list)
for _case in DATA["cases"]:
    # no template: GeneralInstructionHandler, MindSpeed's Python AlpacaTemplate prompter
    BY_TEMPLATE[_case["template"] or "(GeneralInstructionHandler)"].append(_case)


@pytest.fixture(scope="module")
def tokenizers(hf_tokenizer_dir: Path, gpt2_tokenizer_dir: Path) -> dict:
    dirs = {"tiny": hf_tokenizer_dir, "gpt2": gpt2_tokenizer_dir}
    for name, folder in dirs.items():
        assert fingerprint(folder) == DATA["tokenizers"][name], (
            f"the {name} test tokenizer is not the one the goldens were made with; "
            "re-run scripts/mindspeed_goldens.py"
        )
    return dirs


def test_every_mindspeed_template_is_built_in():
    names = {c["template"] for c in DATA["cases"] if c["template"]} | {"minicpm3"}
    assert names <= set(available())
    assert {"chatml", "qwen", "llama2", "llama3", "mistral", "deepseek3", "chatglm3"} <= names
    assert {"baichuan2", "alpaca", "default", "empty"} <= names


@pytest.mark.parametrize("template", sorted(BY_TEMPLATE))
def test_ids_identical_to_mindspeed(tmp_path, tokenizers, template):
    for case in BY_TEMPLATE[template]:
        variant = DATA["variants"][case["variant"]]
        prefix = tmp_path / f"{case['tokenizer']}-{case['variant']}"
        # the tiny tokenizer (every template's special tokens) runs on the fast backend
        # `auto` picks, GPT-2 on the hf reference: both must give MindSpeed's ids
        backend = "auto" if case["tokenizer"] == "tiny" else "hf"
        tokenizer = TokenizerSpec(name_or_path=str(tokenizers[case["tokenizer"]]), backend=backend)
        cfg = PreprocessConfig(
            input=str(GOLDEN / variant["data"]),
            output_prefix=str(prefix),
            tokenizer=tokenizer,
            handler_name=variant["handler"],
            prompt_type=case["template"],
            map_keys=variant["map_keys"],
        )
        report = preprocess(cfg)
        where = f"{template} / {case['tokenizer']} / {case['variant']}"
        assert report.backend == ("fastokens" if backend == "auto" else "hf"), where
        if "samples" in case:  # show the first differing sample, not only a hash
            rows = instruction_rows(prefix)
            assert len(rows) == len(case["samples"]), where
            for i, ((ids, _, labels), want) in enumerate(zip(rows, case["samples"], strict=True)):
                assert ids.tolist() == want["input_ids"], f"{where}: sample {i} input_ids"
                assert labels.tolist() == want["labels"], f"{where}: sample {i} labels"
        assert packed_sha256(prefix) == case["sha256"], where
