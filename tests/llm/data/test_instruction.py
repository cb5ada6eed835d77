"""Masking checked token by token: labels are -100 exactly on non-assistant tokens."""

from __future__ import annotations

import json

import numpy as np
import pytest

from atelier.core.errors import AtelierError
from atelier.llm.data.templates import available

from ..data.helpers import instruction_rows, run, runs
from ..data.test_sources import RECORDS  # noqa: F401  (keeps module import order simple)

SHAREGPT = {
    "system": "Be brief.",
    "conversations": [
        {"from": "human", "value": "What is two plus two?"},
        {"from": "gpt", "value": "Four."},
        {"from": "human", "value": "And three plus three?"},
        {"from": "gpt", "value": "Six."},
    ],
}
ALPACA = {
    "instruction": "Add the numbers.",
    "input": "3 + 4",
    "output": "Seven.",
    "system": "Be brief.",
    "history": [["What is one plus one?", "Two."]],
}


# MindSpeed reads the system (and history, tools) columns only when --map-keys names them
SYSTEM = '{"system": "system"}'


def _decode(tok, ids) -> str:
    return tok.decode(list(ids), skip_special_tokens=False)


def _one(tmp_path, tok_dir, record, handler, template, name="d", **kw):
    src = tmp_path / f"{name}.jsonl"
    src.write_text(json.dumps(record) + "\n")
    run(tok_dir, src, tmp_path / name, handler_name=handler, prompt_type=template, **kw)
    ((ids, mask, labels),) = instruction_rows(tmp_path / name)
    return ids, mask, labels


EXPECTED = {
    # template: (whole text, trained runs), as MindSpeed-LLM 2.0.0 renders them
    # (test_mindspeed_golden.py compares the ids with MindSpeed's own output)
    "qwen": (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is two plus two?"
        "<|im_end|>\n<|im_start|>assistant\nFour.<|im_end|>\n<|im_start|>user\nAnd three plus "
        "three?<|im_end|>\n<|im_start|>assistant\nSix.<|im_end|>",
        ["Four.<|im_end|>", "Six.<|im_end|>"],
    ),
    "llama3": (
        "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>"
        "user<|end_header_id|>\n\nWhat is two plus two?<|eot_id|><|start_header_id|>assistant"
        "<|end_header_id|>\n\nFour.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnd three"
        " plus three?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nSix.<|eot_id|>",
        ["Four.<|eot_id|>", "Six.<|eot_id|>"],
    ),
    "llama2": (
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWhat is two plus two? [/INST]Four.</s>"
        "<s>[INST] And three plus three? [/INST]Six.</s>",
        ["Four.</s>", "Six.</s>"],
    ),
    "alpaca": (
        "Be brief.### Instruction:\nWhat is two plus two?\n\n### Response:\nFour.</s>\n\n"
        "### Instruction:\nAnd three plus three?\n\n### Response:\nSix.</s>",
        ["Four.</s>", "Six.</s>"],
    ),
    "default": (
        "Be brief.\nHuman: What is two plus two?\nAssistant:Four.</s>\nHuman: And three "
        "plus three?\nAssistant:Six.</s>",
        ["Four.</s>", "Six.</s>"],
    ),
    "empty": (
        "Be brief.What is two plus two?Four.And three plus three?Six.",
        ["Four.", "Six."],
    ),
    "mistral": (
        "<s>Be brief.[INST] What is two plus two? [/INST]Four.</s>[INST] And three plus "
        "three? [/INST]Six.</s>",
        ["Four.</s>", "Six.</s>"],
    ),
}


@pytest.mark.parametrize("template", sorted(EXPECTED))
def test_sharegpt_multi_turn_masking(tmp_path, hf_tokenizer_dir, hf_tokenizer, template):
    ids, mask, labels = _one(
        tmp_path,
        hf_tokenizer_dir,
        SHAREGPT,
        "SharegptStyleInstructionHandler",
        template,
        map_keys=SYSTEM,
    )
    whole, trained = EXPECTED[template]
    assert _decode(hf_tokenizer, ids) == whole
    assert mask.tolist() == [1] * len(ids)
    got = [_decode(hf_tokenizer, r) for t, r in runs(ids, labels) if t]
    assert got == trained
    keep = labels != -100
    np.testing.assert_array_equal(labels[keep], ids[keep])


def test_alpaca_history_and_input_match_sharegpt(tmp_path, hf_tokenizer_dir):
    """The same conversation in Alpaca form (history, instruction + input) encodes alike."""
    mk = '{"system": "system", "history": "history"}'
    a = _one(
        tmp_path,
        hf_tokenizer_dir,
        ALPACA,
        "AlpacaStyleInstructionHandler",
        "qwen",
        "a",
        map_keys=mk,
    )
    conv = {
        "system": "Be brief.",
        "conversations": [
            {"from": "human", "value": "What is one plus one?"},
            {"from": "gpt", "value": "Two."},
            {"from": "human", "value": "Add the numbers.\n3 + 4"},
            {"from": "gpt", "value": "Seven."},
        ],
    }
    s = _one(
        tmp_path,
        hf_tokenizer_dir,
        conv,
        "SharegptStyleInstructionHandler",
        "qwen",
        "s",
        map_keys=SYSTEM,
    )
    for x, y in zip(a, s, strict=True):
        np.testing.assert_array_equal(x, y)


def test_general_instruction_handler_is_mindspeeds_prompter(
    tmp_path, hf_tokenizer_dir, hf_tokenizer
):
    """No --prompt-type: MindSpeed's AlpacaTemplate text, tokenized with BOS, no EOS."""
    rec = {"instruction": "Say hi.", "output": "Hi."}
    ids, _, labels = _one(tmp_path, hf_tokenizer_dir, rec, "GeneralInstructionHandler", None)
    text = _decode(hf_tokenizer, ids)
    assert text.startswith("<s>\nBelow is an instruction that describes a task, paired with")
    assert text.endswith("step by step.\n### Instruction:\nSay hi.\n\n### Response:\nHi.\n")
    assert [_decode(hf_tokenizer, r) for t, r in runs(ids, labels) if t] == ["Hi.\n"]


def test_tools_observation_and_function_call(tmp_path, hf_tokenizer_dir, hf_tokenizer):
    """MindSpeed's qwen: `Action:` tool calls, `<|im_start|>tool` results, its tools prompt."""
    rec = {
        "tools": json.dumps(
            [{"name": "add", "description": "Adds.", "parameters": {"properties": {}}}]
        ),
        "conversations": [
            {"from": "human", "value": "Add 2 and 3."},
            {"from": "function_call", "value": '{"name": "add", "arguments": [2, 3]}'},
            {"from": "observation", "value": "5"},
            {"from": "gpt", "value": "It is 5."},
        ],
    }
    ids, _, labels = _one(
        tmp_path,
        hf_tokenizer_dir,
        rec,
        "SharegptStyleInstructionHandler",
        "qwen",
        map_keys='{"tools": "tools"}',
    )
    parts = runs(ids, labels)
    trained = [_decode(hf_tokenizer, r) for t, r in parts if t]
    masked = [_decode(hf_tokenizer, r) for t, r in parts if not t]
    assert trained == ["Action: add\nAction Input: [2, 3]<|im_end|>", "It is 5.<|im_end|>"]
    assert "You have access to the following tools:\n> Tool Name: add\n" in masked[0]
    assert masked[1] == "\n<|im_start|>tool\n5<|im_end|>\n<|im_start|>assistant\n"


def test_openai_messages_layout(tmp_path, hf_tokenizer_dir, hf_tokenizer):
    rec = {
        "messages": [
            {"role": "system", "content": "S."},
            {"role": "user", "content": "Q?"},
            {"role": "assistant", "content": "A."},
        ]
    }
    ids, _, labels = _one(
        tmp_path, hf_tokenizer_dir, rec, "SharegptStyleInstructionHandler", "qwen"
    )
    assert _decode(hf_tokenizer, ids).startswith("<|im_start|>system\nS.<|im_end|>")
    assert [_decode(hf_tokenizer, r) for t, r in runs(ids, labels) if t] == ["A.<|im_end|>"]


@pytest.mark.parametrize("template", ["chatglm3", "baichuan2"])
def test_efficient_eos(tmp_path, hf_tokenizer_dir, hf_tokenizer, template):
    """No EOS inside the text: the next turn's first label is EOS, and one EOS ends it."""
    ids, _, labels = _one(
        tmp_path, hf_tokenizer_dir, SHAREGPT, "SharegptStyleInstructionHandler", template
    )
    eos = hf_tokenizer.eos_token_id
    assert ids[-1] == eos and labels[-1] == eos
    assert list(ids).count(eos) == 1
    user = hf_tokenizer.convert_tokens_to_ids(
        "<|user|>" if template == "chatglm3" else "<reserved_106>"
    )
    second_user = [i for i, t in enumerate(ids.tolist()) if t == user][1]
    assert labels[second_user] == eos
    assert labels[second_user - 1] != -100 and labels[second_user + 1] == -100
    # the run of labels != -100 is the reply plus the next role token labelled EOS
    trained = [_decode(hf_tokenizer, r) for t, r in runs(ids, labels) if t]
    assert trained[0].lstrip("\n").startswith("Four.") and trained[-1].endswith("Six.</s>")


def test_every_builtin_template_masks_user_text(tmp_path, hf_tokenizer_dir, hf_tokenizer):
    for template in available():
        ids, _, labels = _one(
            tmp_path,
            hf_tokenizer_dir,
            SHAREGPT,
            "SharegptStyleInstructionHandler",
            template,
            name=template,
        )
        trained = "".join(_decode(hf_tokenizer, r) for t, r in runs(ids, labels) if t)
        assert "Four." in trained and "Six." in trained, template
        assert "two plus two" not in trained and "Be brief" not in trained, template


def test_turn_order_violation_names_the_record(tmp_path, hf_tokenizer_dir):
    good = json.dumps(SHAREGPT)
    bad = json.dumps(
        {"conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}]}
    )
    src = tmp_path / "c.jsonl"
    src.write_text(good + "\n" + bad + "\n")
    with pytest.raises(
        AtelierError, match=r"c\.jsonl: line 2: turn order: message 1 is 'assistant'"
    ):
        run(
            hf_tokenizer_dir,
            src,
            tmp_path / "o",
            handler_name="SharegptStyleInstructionHandler",
            prompt_type="qwen",
        )
    unfinished = json.dumps({"conversations": [{"from": "human", "value": "y"}]})
    src.write_text(unfinished + "\n")
    with pytest.raises(AtelierError, match="must end with an assistant reply"):
        run(
            hf_tokenizer_dir,
            src,
            tmp_path / "o",
            handler_name="SharegptStyleInstructionHandler",
            prompt_type="qwen",
        )


def test_missing_alpaca_key_lists_keys(tmp_path, hf_tokenizer_dir):
    src = tmp_path / "a.jsonl"
    src.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(
        AtelierError, match=r"missing key 'instruction' \(keys present: answer, question\)"
    ):
        run(
            hf_tokenizer_dir,
            src,
            tmp_path / "o",
            handler_name="AlpacaStyleInstructionHandler",
            prompt_type="qwen",
        )
    r = run(
        hf_tokenizer_dir,
        src,
        tmp_path / "o",
        handler_name="AlpacaStyleInstructionHandler",
        prompt_type="qwen",
        map_keys='{"prompt": "question", "response": "answer"}',
    )
    assert r.written == 1


def test_style_handler_needs_prompt_type(tmp_path, hf_tokenizer_dir):
    src = tmp_path / "a.jsonl"
    src.write_text(json.dumps(ALPACA) + "\n")
    with pytest.raises(AtelierError, match="needs --prompt-type"):
        run(hf_tokenizer_dir, src, tmp_path / "o", handler_name="AlpacaStyleInstructionHandler")
