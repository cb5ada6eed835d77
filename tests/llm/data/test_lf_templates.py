"""`--template-source llamafactory`: byte-identical to LLaMA-Factory 0.9.5's SFT preprocessing.

golden/lf/golden.json holds, per template x input x option set, the hashes of the
input_ids and labels LLaMA-Factory's own code produced (`get_template_and_fix_tokenizer`,
its converters, `SupervisedDatasetProcessor`) for golden/lf/inputs.json with the tiny
tokenizer in golden/lf/tokenizer (trained by Atelier's own `train_bpe`, Apache-2.0 like the
project). scripts/make_lf_goldens.py made them; llamafactory is not needed here.
inputs.json holds a few records of each of LLaMA-Factory's demo sets (alpaca_en_demo,
alpaca_zh_demo, identity, glaive_toolcall_en_demo; each under its own licence, see
LLaMA-Factory's data/README) plus hand-written ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
from functools import cache
from pathlib import Path

import pytest

from atelier.core.errors import AtelierError
from atelier.llm.data.conversation import Conversation
from atelier.llm.data.handlers import EncodeJob
from atelier.llm.data.lf_supervised import encode_records, infer_seqlen
from atelier.llm.data.lf_templates import get_lf_template, lf_available, render
from atelier.llm.data.template_sources import fix_tokenizer, resolve_template
from atelier.llm.data.tokenizer import TokenizerSpec, load_tokenizer
from tests.conftest import write_jsonl
from tests.llm.data.helpers import instruction_rows, run

GOLD = Path(__file__).parent / "golden" / "lf"
HANDLER = {"alpaca": "AlpacaStyleInstructionHandler", "sharegpt": "SharegptStyleInstructionHandler"}
SETS = {
    "alpaca_en": "alpaca",
    "alpaca_zh": "alpaca",
    "identity": "alpaca",
    "extra_alpaca": "alpaca",
    "glaive": "sharegpt",
    "extra_sharegpt": "sharegpt",
}
OPTIONS = {
    "plain": {},
    "cutoff": {"seq_length": 96},
    "mask_history": {"mask_history": True, "seq_length": 96},
    "train_on_prompt": {"train_on_prompt": True},
    "default_system": {"default_system": "Be terse."},
    "no_thinking": {"enable_thinking": False},
}


@cache
def golden() -> dict:
    return json.loads((GOLD / "golden.json").read_text("utf-8"))


@cache
def inputs() -> dict[str, list]:
    return json.loads((GOLD / "inputs.json").read_text("utf-8"))


@cache
def tiny():
    return load_tokenizer(TokenizerSpec(name_or_path=str(GOLD / "tokenizer")))


def job_for(template: str, set_name: str, opts: dict) -> EncodeJob:
    t = resolve_template(
        "llamafactory",
        template,
        train_on_prompt=opts.get("train_on_prompt", False),
        mask_history=opts.get("mask_history", False),
        tool_date=golden()["tool_date"],
        default_system=opts.get("default_system"),
        enable_thinking=opts.get("enable_thinking", True),
    )
    t, tok = fix_tokenizer(t, tiny())
    return EncodeJob(
        handler=HANDLER[SETS[set_name]],
        tokenizer=tok,
        json_keys=("text",),
        append_eod=False,
        seq_length=opts.get("seq_length"),
        map_keys={},
        template=t,
    )


def digest(seq) -> str:
    return hashlib.sha256(json.dumps([int(i) for i in seq]).encode()).hexdigest()[:16]


def test_golden_covers_every_template_and_option():
    cases = golden()["cases"]
    assert {c["template"] for c in cases} == set(lf_available())
    assert {c["options"] for c in cases} == set(OPTIONS)
    assert {c["input"] for c in cases} == set(SETS)
    assert sum(len(c["ids"]) for c in cases) > 1000


@pytest.mark.parametrize("template", sorted(lf_available()))
def test_byte_identical_to_llamafactory(template):
    """Every record of every case: same input_ids and labels as LLaMA-Factory's processor."""
    checked = 0
    for case in golden()["cases"]:
        if case["template"] != template:
            continue
        job = job_for(template, case["input"], OPTIONS[case["options"]])
        records = inputs()[case["input"]]
        good = [r for r, h in zip(records, case["ids"], strict=True) if h is not None]
        got = encode_records(job, good)
        columns = zip(case["ids"], case["labels"], case["lengths"], strict=True)
        want = [w for w in columns if w[0] is not None]
        where = f"{template} {case['input']} {case['options']}"
        assert [len(ids) for ids, _ in got] == [n for _, _, n in want], where
        for k, ((ids, labels), (h_ids, h_labels, _)) in enumerate(zip(got, want, strict=True)):
            assert digest(ids) == h_ids, f"{where}: record {k} input_ids"
            assert digest(labels) == h_labels, f"{where}: record {k} labels"
        # records LLaMA-Factory refuses (bad function_call JSON for it) are errors here too
        for r, h in zip(records, case["ids"], strict=True):
            if h is None:
                with pytest.raises(AtelierError, match="function_call"):
                    encode_records(job, [r])
        checked += len(records)
    assert checked


def _text(template: str, conv: Conversation, **opts) -> str:
    t = resolve_template("llamafactory", template, tool_date="26 Jul 2024", **opts)
    return "".join(s for msg in render(t, conv) for s in msg if isinstance(s, str))


TOOLS = json.dumps(
    [{"name": "f", "description": "d", "parameters": {"properties": {}}}, {"name": "g"}]
)


def test_qwen_defaults_and_tools_one_function_per_line():
    conv = Conversation(system=None, tools=TOOLS, turns=[("user", "hi"), ("assistant", "yo")])
    text = _text("qwen", conv)
    assert text.startswith(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
        "\n\n# Tools\n\n"
    )
    assert '<tools>\n{"type": "function", "function": {"name": "f"' in text
    assert '}}\n{"type": "function", "function": {"name": "g"}}\n</tools>' in text
    assert text.endswith("<|im_start|>assistant\nyo<|im_end|>\n")


@pytest.mark.parametrize("tools", [None, "[]"])
def test_empty_or_absent_tools_give_no_tools_block(tools):
    conv = Conversation(system=None, tools=tools, turns=[("user", "hi"), ("assistant", "yo")])
    assert "Tools" not in _text("qwen", conv)
    assert "Cutting Knowledge" not in _text("llama3", conv)
    # LLaMA-Factory still opens a (then empty) system message for "[]" when the template has
    # no default system; absent tools open none
    header = "<|start_header_id|>system<|end_header_id|>\n\n<|eot_id|>"
    assert (header in _text("llama3", conv)) == (tools == "[]")


def test_llama3_tool_prompt_has_the_cutting_knowledge_date():
    conv = Conversation(
        system=None,
        tools=TOOLS,
        turns=[
            ("user", "q"),
            ("function_call", '{"name": "f", "arguments": {"x": 1}}'),
            ("observation", "42"),
            ("assistant", "a"),
        ],
    )
    text = _text("llama3", conv)
    assert "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" in text
    assert '{"name": "f", "parameters": {"x": 1}}<|eot_id|>' in text
    assert "<|start_header_id|>ipython<|end_header_id|>\n\n42<|eot_id|>" in text


def test_qwen_function_call_and_observation():
    conv = Conversation(
        system="s",
        tools=None,
        turns=[
            ("user", "q"),
            ("function_call", '[{"name": "f", "arguments": {}}, {"name": "g", "arguments": {}}]'),
            ("observation", "r"),
            ("assistant", "a"),
        ],
    )
    text = _text("qwen", conv)
    assert (
        '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>\n'
        '<tool_call>\n{"name": "g", "arguments": {}}\n</tool_call><|im_end|>\n'
    ) in text
    assert "<|im_start|>user\n<tool_response>\nr\n</tool_response><|im_end|>\n" in text


def test_newline_after_im_end_is_trained():
    job = job_for("qwen", "alpaca_en", {})
    ((ids, labels),) = encode_records(job, [{"instruction": "hi", "output": "yo"}])
    tok = tiny()
    from tokenizers import Tokenizer

    rust = Tokenizer.from_str(tok.rust_json)
    trained = [i for i, lab in zip(ids, labels, strict=True) if lab != -100]
    assert rust.decode(trained, skip_special_tokens=False) == "yo<|im_end|>\n"


def test_job_survives_pickling_for_worker_processes():
    """--workers ships the job (template, fixed tokenizer) to spawned workers by pickle."""
    import pickle

    job = job_for("llama3", "glaive", {"seq_length": 96})
    records = inputs()["glaive"][:4]
    assert encode_records(pickle.loads(pickle.dumps(job)), records) == encode_records(job, records)


def test_infer_seqlen_matches_llamafactory_rules():
    assert infer_seqlen(10, 10, 100) == (10, 10)
    assert infer_seqlen(100, 10, 50) == (40, 10)  # short reply: truncate the prompt
    assert infer_seqlen(10, 100, 50) == (10, 40)  # short prompt: truncate the reply
    assert infer_seqlen(60, 40, 50) == (30, 20)  # both: in proportion


def test_stop_word_missing_from_vocab_is_added_with_a_warning(caplog):
    t = resolve_template("llamafactory", "llama3")
    with caplog.at_level(logging.WARNING):
        t, tok = fix_tokenizer(t, tiny())
    assert tok.vocab_size == tiny().vocab_size + 1
    assert "<|eom_id|>" in caplog.text and "resize" in caplog.text
    assert tok.eos != tiny().eos  # replaced by <|eot_id|>, as LLaMA-Factory does
    from tokenizers import Tokenizer

    assert Tokenizer.from_str(tok.rust_json).id_to_token(tok.eos) == "<|eot_id|>"


def test_refusals():
    with pytest.raises(AtelierError, match="--train-on-prompt goes with --template-source"):
        resolve_template("mindspeed", "qwen", train_on_prompt=True)
    with pytest.raises(AtelierError, match="--default-system goes with"):
        resolve_template("mindspeed", "qwen", default_system="x")
    with pytest.raises(AtelierError, match="--enable-thinking false goes with"):
        resolve_template("mindspeed", "qwen", enable_thinking=False)
    with pytest.raises(AtelierError, match="efficient_eos"):
        resolve_template("llamafactory", "chatglm3", train_on_prompt=True)
    with pytest.raises(AtelierError, match="exclude each other"):
        resolve_template("llamafactory", "qwen", train_on_prompt=True, mask_history=True)
    with pytest.raises(AtelierError, match=r"not a LLaMA-Factory template.*known: .*qwen3"):
        get_lf_template("baichuan2")
    with pytest.raises(AtelierError, match="--tool-date"):
        resolve_template("llamafactory", "llama3", tool_date="2024-07-26")
    with pytest.raises(AtelierError, match="--template-source nope"):
        resolve_template("nope", "qwen")


def test_template_token_missing_from_tokenizer_is_an_error(hf_tokenizer_dir, tmp_path):
    from atelier.llm.assets.build import train_bpe

    bare = train_bpe(["hello world"] * 4, tmp_path / "bare", vocab_size=300)  # ChatML only
    t = resolve_template("llamafactory", "chatglm3")
    with pytest.raises(AtelierError, match=r"no token '\[gMASK\]'"):
        fix_tokenizer(t, load_tokenizer(TokenizerSpec(name_or_path=str(bare))))


def test_custom_llamafactory_template_file(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text(
        'mine:\n  user: ["Q: {{content}}\\n"]\n  assistant: ["A: {{content}}", {special: eos}]\n'
    )
    t = resolve_template("llamafactory", "mine", str(f))
    assert t.function == t.assistant and t.observation == t.user
    f.write_text('bad:\n  user: ["no placeholder"]\n')
    with pytest.raises(AtelierError, match="needs a"):
        get_lf_template("bad", str(f))


def test_cli_preprocess_with_llamafactory_source(tmp_path, monkeypatch):
    """The flag (and TEMPLATE_SOURCE) reach the encoder: the files hold LF's golden ids."""
    from atelier.cli.main import main

    case = next(
        c
        for c in golden()["cases"]
        if (c["template"], c["input"], c["options"]) == ("qwen", "glaive", "cutoff")
    )
    data = write_jsonl(tmp_path / "glaive.jsonl", inputs()["glaive"])
    argv = [
        "llm", "preprocess", "--input", str(data), "--output-prefix", str(tmp_path / "a"),
        "--tokenizer-name-or-path", str(GOLD / "tokenizer"), "--tokenizer-backend", "hf",
        "--handler-name", "SharegptStyleInstructionHandler", "--prompt-type", "qwen",
        "--seq-length", "96", "--template-source", "llamafactory",
    ]  # fmt: skip
    assert main(argv) == 0
    rows = instruction_rows(tmp_path / "a")
    assert [digest(r[0]) for r in rows] == case["ids"]
    assert [digest(r[2]) for r in rows] == case["labels"]
    monkeypatch.setenv("TEMPLATE_SOURCE", "llamafactory")
    assert main([*argv[:-2], "--output-prefix", str(tmp_path / "b")]) == 0
    assert [digest(r[0]) for r in instruction_rows(tmp_path / "b")] == case["ids"]
    assert main([*argv[:-2], "--template-source", "mindspeedx"]) == 2


def test_append_eod_is_refused_with_the_llamafactory_source(tmp_path):
    data = write_jsonl(tmp_path / "a.jsonl", inputs()["alpaca_en"][:2])
    with pytest.raises(AtelierError, match="--append-eod"):
        run(
            GOLD / "tokenizer",
            data,
            tmp_path / "o",
            handler_name="AlpacaStyleInstructionHandler",
            prompt_type="qwen",
            template_source="llamafactory",
            append_eod=True,
        )
