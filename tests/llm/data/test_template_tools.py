"""MindSpeed's templates.json as a file, tools edge cases, missing tokens, --template-quirks."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from atelier.core.errors import AtelierError
from atelier.llm.data.preprocess import PreprocessConfig, preprocess
from atelier.llm.data.template_tokens import fit_template
from atelier.llm.data.templates import BOS, EOS, Special, get_template
from atelier.llm.data.tokenizer import TokenizerSpec, load_tokenizer

from .helpers import instruction_rows

# Two entries in MindSpeed-LLM's own notation (configs/finetune/templates.json).
MINDSPEED_FILE = [
    {
        "name": "chatml",
        "format_user": {
            "slots": ["<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n"]
        },
        "format_system": {"slots": ["<|im_start|>system\n{{content}}<|im_end|>\n"]},
        "format_observation": {
            "slots": ["<|im_start|>tool\n{{content}}<|im_end|>\n<|im_start|>assistant\n"]
        },
        "format_separator": {"slots": ["\n"]},
        "stop_words": ["<|im_end|>", "<|im_start|>"],
        "replace_eos": True,
    },
    {
        "name": "mine",
        "format_user": {"slots": [{"token": "<|user|>"}, "\n", "{{content}}"]},
        "format_prefix": {"slots": [["bos_token"]]},
        "default_system": ["You are ", "kind."],
        "efficient_eos": True,
    },
]
CALL = {"from": "function_call", "value": '{"name": "add", "arguments": {"a": 2}}'}
TOOLS = [{"name": "add", "description": "Adds.", "parameters": {"properties": {"a": {}}}}]


def _conv(tools=None, call=CALL):
    rec = {
        "conversations": [
            {"from": "human", "value": "Add 2."},
            call,
            {"from": "observation", "value": "2"},
            {"from": "gpt", "value": "It is 2."},
        ]
    }
    if tools is not None:
        rec["tools"] = tools
    return rec


def _ids(tmp_path, tok_dir, records, template, name="d", **kw):
    src = tmp_path / f"{name}.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = PreprocessConfig(
        input=str(src),
        output_prefix=str(tmp_path / name),
        tokenizer=TokenizerSpec(name_or_path=str(tok_dir), backend="hf"),
        handler_name="SharegptStyleInstructionHandler",
        prompt_type=template,
        map_keys='{"tools": "tools"}',
        **kw,
    )
    preprocess(cfg)
    return [(ids.tolist(), labels.tolist()) for ids, _, labels in instruction_rows(tmp_path / name)]


def test_prompt_type_path_reads_mindspeed_templates_json(tmp_path):
    f = tmp_path / "templates.json"
    f.write_text(json.dumps(MINDSPEED_FILE))
    mine = get_template("mine", str(f))
    assert mine.user == (Special("token", "<|user|>"), "\n", "{{content}}")
    assert mine.prefix == (BOS,) and mine.assistant == ("{{content}}",)  # efficient_eos: no EOS
    assert mine.default_system == "You are kind."
    chatml = get_template("chatml", str(f))
    assert chatml.assistant == ("{{content}}", EOS) and chatml.stop_words[0] == "<|im_end|>"
    assert chatml == replace(get_template("chatml"), source=str(f))
    assert get_template("qwen", str(f)).name == "qwen"  # the built-in ones stay
    f.write_text(json.dumps([{**MINDSPEED_FILE[1], "template_class": "ReasoningTemplate"}]))
    with pytest.raises(AtelierError, match=r"templates.json: template 'mine' has unsupported key"):
        get_template("mine", str(f))
    f.write_text(json.dumps([{"format_user": {"slots": ["{{content}}"]}}]))
    with pytest.raises(AtelierError, match=r'template 1 is not an object with a "name"'):
        get_template("mine", str(f))


def test_empty_and_absent_tools_give_no_tools_block(tmp_path, hf_tokenizer_dir):
    no_key, empty, listed = _ids(
        tmp_path, hf_tokenizer_dir, [_conv(), _conv("[]"), _conv(json.dumps(TOOLS))], "qwen"
    )
    assert no_key == empty
    assert len(listed[0]) > len(no_key[0])


def test_tool_call_and_observation_rendering(tmp_path, hf_tokenizer_dir, hf_tokenizer):
    ((ids, labels),) = _ids(tmp_path, hf_tokenizer_dir, [_conv(json.dumps(TOOLS))], "llama3")
    text = hf_tokenizer.decode(ids, skip_special_tokens=False)
    assert "> Tool Name: add\nTool Description: Adds.\nTool Args:\n  - a (): \n\n" in text
    assert "Action: tool name (one of [add]).\n" in text
    trained = hf_tokenizer.decode([i for i, lab in zip(ids, labels, strict=True) if lab != -100])
    assert trained.startswith('Action: add\nAction Input: {"a": 2}')
    assert "<|start_header_id|>tool<|end_header_id|>\n\n2<|eot_id|>" in text


def test_template_quirks_fixed(tmp_path, hf_tokenizer_dir, hf_tokenizer):
    """MindSpeed opens an empty system block for tools "[]"; `fixed` does not."""
    (ms,) = _ids(tmp_path, hf_tokenizer_dir, [_conv("[]")], "llama3", "ms")
    (fixed,) = _ids(
        tmp_path, hf_tokenizer_dir, [_conv("[]")], "llama3", "fx", template_quirks="fixed"
    )
    (plain,) = _ids(tmp_path, hf_tokenizer_dir, [_conv()], "llama3", "pl")
    empty_system = "<|start_header_id|>system<|end_header_id|>\n\n<|eot_id|>"
    assert empty_system in hf_tokenizer.decode(ms[0], skip_special_tokens=False)
    assert fixed == plain
    bad = _conv(json.dumps(TOOLS), {"from": "function_call", "value": "call add"})
    (ms,) = _ids(tmp_path, hf_tokenizer_dir, [bad], "qwen", "bad")
    assert "Action: \nAction Input: " in hf_tokenizer.decode(ms[0])  # MindSpeed loses the call
    with pytest.raises(AtelierError, match=r"line 1: function_call: expected JSON"):
        _ids(tmp_path, hf_tokenizer_dir, [bad], "qwen", "bad2", template_quirks="fixed")


def test_missing_template_tokens_warn_or_fail(gpt2_tokenizer_dir):
    loaded = load_tokenizer(TokenizerSpec(name_or_path=str(gpt2_tokenizer_dir)))
    fitted, _, notice = fit_template(loaded, get_template("qwen"))
    assert notice == (
        "--prompt-type qwen: the tokenizer lacks <|im_start|> (tokenized as plain text); "
        "<|im_end|> (added as new id 50257: resize the embedding)"
    )
    assert (fitted.eos, fitted.pad, fitted.vocab_size) == (50257, 50257, 50258)
    with pytest.raises(AtelierError, match=r"lacks <\|im_start\|>.*or drop --strict"):
        fit_template(loaded, get_template("qwen"), strict=True)
    _, _, notice = fit_template(loaded, get_template("mistral"))
    assert notice is None  # GPT-2 has <|endoftext|> as BOS and EOS: nothing is missing


def test_strict_flag_stops_the_run(tmp_path, gpt2_tokenizer_dir):
    with pytest.raises(AtelierError, match="the tokenizer lacks"):
        _ids(tmp_path, gpt2_tokenizer_dir, [_conv()], "chatml", strict=True)
    rows = _ids(tmp_path, gpt2_tokenizer_dir, [_conv()], "chatml", "ok")
    ids = np.asarray(rows[0][0])
    assert (ids >= 50257).sum() >= 4  # <|im_start|> and <|im_end|> became single new ids


def test_slow_tokenizer_gets_the_same_added_tokens(tmp_path, gpt2_tokenizer_dir):
    """--tokenizer-not-use-fast: the stop words MindSpeed adds are re-added in each worker."""
    fast = _ids(tmp_path, gpt2_tokenizer_dir, [_conv(json.dumps(TOOLS))], "chatml", "f")
    src = tmp_path / "s.jsonl"
    src.write_text(json.dumps(_conv(json.dumps(TOOLS))) + "\n")
    cfg = PreprocessConfig(
        input=str(src),
        output_prefix=str(tmp_path / "s"),
        tokenizer=TokenizerSpec(name_or_path=str(gpt2_tokenizer_dir), use_fast=False),
        handler_name="SharegptStyleInstructionHandler",
        prompt_type="chatml",
        map_keys='{"tools": "tools"}',
    )
    preprocess(cfg)
    slow = [(i.tolist(), lab.tolist()) for i, _, lab in instruction_rows(tmp_path / "s")]
    assert slow == fast


def test_builtin_templates_round_trip_through_mindspeed_notation(tmp_path):
    """Each built-in template written as a templates.json entry reads back the same."""
    from atelier.llm.data.template_files import dump_json
    from atelier.llm.data.templates import available

    builtin = available()
    f = tmp_path / "all.json"
    f.write_text("[" + ",".join(dump_json(t) for t in builtin.values()) + "]")
    again = available(f)
    for name, t in builtin.items():
        assert replace(again[name], source=t.source) == t, name
