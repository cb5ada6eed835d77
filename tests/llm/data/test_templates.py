"""Templates come from the data file; adding one is adding an entry."""

from __future__ import annotations

import pytest

from atelier.core.errors import AtelierError
from atelier.llm.data.templates import available, get_template, split_pieces

REQUIRED = [
    "empty",
    "default",
    "alpaca",
    "llama2",
    "llama3",
    "qwen",
    "chatglm3",
    "mistral",
    "baichuan2",
]


def test_required_templates_exist():
    assert set(REQUIRED) <= set(available())
    for name in REQUIRED:
        assert get_template(name).name == name


def test_split_pieces_keeps_markers_and_merges_text():
    assert split_pieces("{bos}[INST] {content} [/INST]", "hi") == ["{bos}", "[INST] hi [/INST]"]
    assert split_pieces("{content}{eos}", "a {eos} b") == ["a {eos} b", "{eos}"]


def test_unknown_template_lists_known():
    with pytest.raises(AtelierError, match=r"known: .*qwen"):
        get_template("nope")


def test_custom_template_file_adds_entries(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text('mine:\n  user: "Q: {content}\\n"\n  assistant: "A: {content}{eos}"\n')
    t = get_template("mine", str(f))
    assert t.user == ("Q: {{content}}\n",)
    assert get_template("qwen", str(f)).name == "qwen"
    f.write_text('bad:\n  user: "x"\n  assistant: "y"\n  colour: red\n')
    with pytest.raises(AtelierError, match="unknown field"):
        get_template("bad", str(f))
