"""Prompt templates, read from data files, never hard-coded.

A template is MindSpeed-LLM's (LLaMA-Factory 0.8's) slot model: each role has a
list of elements, each element is literal text (with `{{content}}`-style
placeholders), the tokenizer's BOS/EOS, or one named vocabulary token. Every text
element is tokenized on its own (that is what MindSpeed does, and what decides
the ids of SentencePiece tokenizers). The built-in set (`templates.yaml`) is
MindSpeed-LLM 2.0.0's `configs/finetune/templates.json` in Atelier's notation;
`--prompt-type-path` reads either notation (`template_files.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from atelier.core.errors import AtelierError


@dataclass(frozen=True)
class Special:
    """An element given as ids, not text: the tokenizer's `bos`/`eos`, or a named `token`."""

    kind: str  # "bos" | "eos" | "token"
    token: str = ""


Element = str | Special
Slots = tuple[Element, ...]

BOS, EOS = Special("bos"), Special("eos")
# MindSpeed's tool formats; "text" is Atelier's own (the `tools` text with `{{content}}`).
TOOL_FORMATS = ("default", "glm4", "text")


@dataclass(frozen=True)
class Template:
    """One template in MindSpeed's model; `render.py` turns a conversation into elements."""

    name: str
    user: Slots
    assistant: Slots
    system: Slots = ("{{content}}",)
    function_call: Slots = ("Action: {{name}}\nAction Input: {{arguments}}", EOS)
    observation: Slots | None = None  # None: the user format
    separator: Slots = ()
    prefix: Slots = ()
    tool_format: str = "default"
    tools: str = ""  # tool_format "text": the tools block, `{{content}}` = the tools column
    default_system: str = ""
    stop_words: tuple[str, ...] = ()
    efficient_eos: bool = False
    replace_eos: bool = False
    system_in_user: bool = False  # MindSpeed's Llama2Template: system text inside the 1st user
    source: str = "built-in templates.yaml"
    # set by `--template-quirks fixed` (render.py): MindSpeed's arguable bugs corrected
    fixed_quirks: bool = False
    # set by template_tokens.fit_template: ids of the `Special("token", ...)` elements
    token_ids: tuple[tuple[str, int], ...] = ()

    def format_of(self, role: str) -> Slots:
        if role == "observation":
            return self.observation if self.observation is not None else self.user
        return getattr(self, role)

    def all_slots(self) -> list[Slots]:
        return [
            self.prefix,
            self.system,
            self.user,
            self.assistant,
            self.separator,
            self.function_call,
            self.format_of("observation"),
        ]


_PIECE = re.compile(r"(\{bos\}|\{eos\}|\{content\})")


def split_pieces(fmt: str, content: str) -> list[str]:
    """`fmt` with `{content}` filled, split so `{bos}`/`{eos}` stay separate markers.

    Kept for callers of the earlier string templates; adjacent text is merged.
    """
    out: list[str] = []
    for part in _PIECE.split(fmt):
        if not part:
            continue
        if part in ("{bos}", "{eos}"):
            out.append(part)
            continue
        text = content if part == "{content}" else part
        if out and out[-1] not in ("{bos}", "{eos}"):
            out[-1] += text
        else:
            out.append(text)
    return [p for p in out if p]


@cache
def _builtin() -> dict[str, Template]:
    from atelier.llm.data.template_files import parse_templates

    text = resources.files("atelier.llm.data").joinpath("templates.yaml").read_text("utf-8")
    return parse_templates(text, "built-in templates.yaml")


def _read(path: Path) -> dict[str, Template]:
    from atelier.llm.data.template_files import parse_templates

    if not path.is_file():
        raise AtelierError(f"--prompt-type-path {path}: no such file")
    return parse_templates(path.read_text("utf-8"), str(path))


def available(path: Path | None = None) -> dict[str, Template]:
    """Built-in templates, plus (overriding) those of a user file, read afresh."""
    return {**_builtin(), **_read(path)} if path is not None else _builtin()


def get_template(name: str, path: str | None = None) -> Template:
    table = available(Path(path) if path else None)
    if name not in table:
        raise AtelierError(f"--prompt-type {name}: unknown; known: {', '.join(sorted(table))}")
    return table[name]
