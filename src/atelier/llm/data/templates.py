"""Prompt templates, read from a data file (`templates.yaml`), never hard-coded.

A template turns a conversation into pieces: literal text, `{content}`, and the
`{bos}`/`{eos}` ids. The encoder tokenizes the text pieces and marks which ones
are trained (assistant replies and tool calls) and which are masked with -100.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import yaml

from atelier.core.errors import AtelierError

FIELDS = {
    "prefix",
    "system",
    "default_system",
    "system_in_user",
    "tools",
    "user",
    "assistant",
    "separator",
    "observation",
    "function_call",
    "efficient_eos",
}
_PIECE = re.compile(r"(\{bos\}|\{eos\}|\{content\})")


@dataclass(frozen=True)
class Template:
    name: str
    user: str
    assistant: str
    prefix: str = ""
    system: str = "{content}"
    default_system: str = ""
    system_in_user: bool = False
    tools: str = "\n\nYou have access to the following tools:\n{content}"
    separator: str = ""
    observation: str | None = None
    function_call: str | None = None
    efficient_eos: bool = False

    def format_of(self, role: str) -> str:
        if role == "observation":
            return self.observation or self.user
        if role == "function_call":
            return self.function_call or self.assistant
        return getattr(self, role)


def split_pieces(fmt: str, content: str) -> list[str]:
    """`fmt` with `{content}` filled, split so `{bos}`/`{eos}` stay separate markers.

    Returns alternating text and markers; adjacent text is merged so it is
    tokenized as one string (as the model will see it), never piece by piece.
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


def _read(path: Path | None) -> dict[str, dict]:
    if path is None:
        text = resources.files("atelier.llm.data").joinpath("templates.yaml").read_text("utf-8")
        where = "built-in templates.yaml"
    else:
        if not path.is_file():
            raise AtelierError(f"--prompt-type-path {path}: no such file")
        text = path.read_text("utf-8")
        where = str(path)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise AtelierError(f"{where}: not valid YAML/JSON ({e})") from None
    if not isinstance(data, dict):
        raise AtelierError(f"{where}: expected a mapping of template name -> fields")
    for name, fields in data.items():
        if not isinstance(fields, dict):
            raise AtelierError(f"{where}: template {name!r} must be a mapping")
        unknown = set(fields) - FIELDS
        if unknown:
            raise AtelierError(
                f"{where}: template {name!r} has unknown field(s) {sorted(unknown)}; "
                f"known: {sorted(FIELDS)}"
            )
        for required in ("user", "assistant"):
            if required not in fields:
                raise AtelierError(f"{where}: template {name!r} lacks {required!r}")
    return data


@cache
def _builtin() -> dict[str, dict]:
    return _read(None)


def available(path: Path | None = None) -> dict[str, dict]:
    """Built-in templates, plus (overriding) those of a user file, read afresh."""
    return {**_builtin(), **_read(path)} if path is not None else _builtin()


def get_template(name: str, path: str | None = None) -> Template:
    table = available(Path(path) if path else None)
    if name not in table:
        raise AtelierError(f"--prompt-type {name}: unknown; known: {', '.join(sorted(table))}")
    return Template(name=name, **table[name])
