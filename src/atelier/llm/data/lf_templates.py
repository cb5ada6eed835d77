"""LLaMA-Factory's templates (`--template-source llamafactory`), read from a data file.

LLaMA-Factory tokenizes a conversation message by message, each message as a list of
slots (text, BOS/EOS, a named token), every text slot on its own. This module renders a
`Conversation` into exactly those slots, so the ids match LLaMA-Factory's
`Template.encode_multiturn` for the same tokenizer; `lf_supervised.py` then applies its
SFT processor's truncation and masking. The templates are data
(`templates_llamafactory.yaml`); the rendering rules (system and tools text in the first
message, Llama-2's system-in-user, reasoning templates' empty `<think>` block) are
LLaMA-Factory's `Template`, `Llama2Template` and `ReasoningTemplate`.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from atelier.core.errors import AtelierError
from atelier.llm.data.conversation import Conversation
from atelier.llm.data.lf_tools import CALLS, TOOLS, calls_text, parse_calls, tools_text


@dataclass(frozen=True)
class Mark:
    """A non-text slot: `kind` "bos"/"eos" (the tokenizer's id, if any) or "token" (`value`)."""

    kind: str
    value: str = ""


Slot = str | Mark
Slots = tuple[Slot, ...]
CONTENT = "{{content}}"
CLASSES = ("default", "llama2", "reasoning")
FIELDS = {
    "user",
    "assistant",
    "system",
    "function",
    "observation",
    "prefix",
    "tools_format",
    "function_format",
    "default_system",
    "stop_words",
    "replace_eos",
    "efficient_eos",
    "template_class",
    "thought_words",
    "tool_call_words",
}
_PLACEHOLDER = re.compile(r"\{\{[a-zA-Z_][a-zA-Z0-9_]*\}\}")


@dataclass(frozen=True)
class LFTemplate:
    """One LLaMA-Factory template plus the SFT options LLaMA-Factory reads with it."""

    name: str
    user: Slots
    assistant: Slots
    system: Slots
    function: Slots
    observation: Slots
    prefix: Slots = ()
    tools_format: str = "default"
    function_format: str = "default"
    default_system: str = ""
    stop_words: tuple[str, ...] = ()
    replace_eos: bool = False
    efficient_eos: bool = False
    template_class: str = "default"
    thought_words: tuple[str, str] = ("<think>\n", "\n</think>\n\n")
    tool_call_words: tuple[str, str] = ("<tool_call>", "</tool_call>")
    # LLaMA-Factory's data arguments that change what a sample becomes
    train_on_prompt: bool = False
    mask_history: bool = False
    enable_thinking: bool = True
    tool_date: str = ""  # "Today Date" of the llama3 tool prompt (LF: the day it runs)
    # ids of the `{token: ...}` slots in the tokenizer this run uses (template_sources.py)
    token_ids: tuple[tuple[str, int], ...] = ()

    def tokens_needed(self) -> list[str]:
        """Named tokens (`{token: ...}` slots) this template looks up by id."""
        every = (
            self.prefix,
            self.system,
            self.user,
            self.assistant,
            self.observation,
            self.function,
        )
        names = [s.value for slots in every for s in slots if isinstance(s, Mark)]
        return list(dict.fromkeys(n for n in names if n))


def today() -> str:
    """LLaMA-Factory's date format for the llama3 tool prompt, e.g. "01 Dec 2026"."""
    return datetime.date.today().strftime("%d %b %Y")


# ------------------------------------------------------------------ reading


def _slots(value: Any, where: str, field: str, need_content: bool) -> Slots:
    if not isinstance(value, list):
        raise AtelierError(f"{where}: {field} must be a list of slots")
    out: list[Slot] = []
    for item in value:
        if isinstance(item, str):
            out.append(item)
        elif (
            isinstance(item, dict)
            and set(item) == {"special"}
            and item["special"]
            in (
                "bos",
                "eos",
            )
        ):
            out.append(Mark(item["special"]))
        elif isinstance(item, dict) and set(item) == {"token"} and isinstance(item["token"], str):
            out.append(Mark("token", item["token"]))
        else:
            raise AtelierError(
                f"{where}: {field} slot {item!r}: use a string, {{special: bos|eos}} or "
                "{token: NAME}"
            )
    has = any(isinstance(s, str) and _PLACEHOLDER.search(s) for s in out)
    if need_content and not has:
        raise AtelierError(f"{where}: {field} needs a {CONTENT} slot")
    if not need_content and has:
        raise AtelierError(f"{where}: {field} must not hold a placeholder")
    return tuple(out)


def _build(name: str, f: dict, where: str) -> LFTemplate:
    unknown = set(f) - FIELDS
    if unknown:
        raise AtelierError(
            f"{where}: template {name!r} has unknown field(s) {sorted(unknown)}; "
            f"known: {sorted(FIELDS)}"
        )
    where = f"{where}: template {name!r}"
    eff = bool(f.get("efficient_eos", False))
    default_slots: list[Any] = [CONTENT] if eff else [CONTENT, {"special": "eos"}]
    user = _slots(f.get("user", [CONTENT]), where, "user", True)
    assistant = _slots(f.get("assistant", default_slots), where, "assistant", True)
    fmt = {}
    for key, table in (("tools_format", TOOLS), ("function_format", CALLS)):
        fmt[key] = f.get(key, "default")
        if fmt[key] not in table:
            raise AtelierError(f"{where}: {key} {fmt[key]!r}: use one of {', '.join(table)}")
    cls = f.get("template_class", "default")
    if cls not in CLASSES:
        raise AtelierError(f"{where}: template_class {cls!r}: use one of {', '.join(CLASSES)}")
    stop = f.get("stop_words", [])
    if not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise AtelierError(f"{where}: stop_words must be a list of strings")
    if f.get("replace_eos") and not stop:
        raise AtelierError(f"{where}: replace_eos needs stop_words")
    pairs = {}
    for key, default in (
        ("thought_words", ("<think>\n", "\n</think>\n\n")),
        ("tool_call_words", ("<tool_call>", "</tool_call>")),
    ):
        value = f.get(key, list(default))
        if not (isinstance(value, list) and len(value) == 2):
            raise AtelierError(f"{where}: {key} must be [open, close]")
        pairs[key] = (str(value[0]), str(value[1]))
    return LFTemplate(
        name=name,
        user=user,
        assistant=assistant,
        system=_slots(f.get("system", [CONTENT]), where, "system", True),
        function=_slots(f["function"], where, "function", True) if "function" in f else assistant,
        observation=_slots(f["observation"], where, "observation", True)
        if "observation" in f
        else user,
        prefix=_slots(f.get("prefix", []), where, "prefix", False),
        tools_format=fmt["tools_format"],
        function_format=fmt["function_format"],
        default_system=str(f.get("default_system", "")),
        stop_words=tuple(stop),
        replace_eos=bool(f.get("replace_eos", False)),
        efficient_eos=eff,
        template_class=cls,
        thought_words=pairs["thought_words"],
        tool_call_words=pairs["tool_call_words"],
    )


def _read(path: Path | None) -> dict[str, LFTemplate]:
    if path is None:
        res = resources.files("atelier.llm.data").joinpath("templates_llamafactory.yaml")
        text, where = res.read_text("utf-8"), "built-in templates_llamafactory.yaml"
    else:
        if not path.is_file():
            raise AtelierError(f"--prompt-type-path {path}: no such file")
        text, where = path.read_text("utf-8"), str(path)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise AtelierError(f"{where}: not valid YAML/JSON ({e})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise AtelierError(f"{where}: expected a mapping of template name -> fields")
    return {str(name): _build(str(name), fields, where) for name, fields in data.items()}


@cache
def _builtin() -> dict[str, LFTemplate]:
    return _read(None)


def lf_available(path: str | None = None) -> dict[str, LFTemplate]:
    return {**_builtin(), **_read(Path(path))} if path else _builtin()


def get_lf_template(name: str, path: str | None = None) -> LFTemplate:
    table = lf_available(path)
    if name not in table:
        raise AtelierError(
            f"--prompt-type {name}: not a LLaMA-Factory template (--template-source "
            f"llamafactory); known: {', '.join(sorted(table))}"
        )
    return table[name]


# ------------------------------------------------------------------ rendering


def _apply(slots: Slots, **values: str) -> list[Slot]:
    """LLaMA-Factory's StringFormatter: each placeholder replaced once, in argument order."""
    out: list[Slot] = []
    for slot in slots:
        if isinstance(slot, str):
            for key, value in values.items():
                slot = slot.replace("{{" + key + "}}", value, 1)
        out.append(slot)
    return out


def _function_slots(t: LFTemplate, content: str, with_words: bool) -> list[Slot]:
    """LLaMA-Factory's FunctionFormatter (`with_words`: the thought/tool-call words apply)."""
    match = None
    if with_words:
        a, b = (re.escape(w) for w in t.tool_call_words)
        match = re.search(rf"{a}(.*?){b}", content, re.DOTALL)
    if match is None:
        thought = None
        if with_words:
            a, b = (re.escape(w) for w in t.thought_words)
            thought = re.search(rf"{a}(.*?){b}", content, re.DOTALL)
        json_part = content.replace(thought.group(0), "") if thought else content
        text = calls_text(t.function_format, parse_calls(json_part))
        if thought:
            text = thought.group(0) + text
    else:
        rest = content.replace(match.group(0), "")
        text = rest + calls_text(t.function_format, parse_calls(match.group(1)))
    return _apply(t.function, content=text)


def remove_thought(t: LFTemplate, content: str) -> str:
    a, b = (re.escape(w) for w in t.thought_words)
    return re.sub(re.compile(f"{a}(.*?){b}", re.DOTALL), "", content).lstrip("\n")


def _turns(t: LFTemplate, conv: Conversation) -> list[tuple[str, str]]:
    """The messages a reasoning template encodes (thoughts removed where LF removes them)."""
    turns = list(conv.turns)
    if t.template_class != "reasoning":
        return turns
    if t.enable_thinking is False:
        for i in range(1, len(turns), 2):
            turns[i] = (turns[i][0], remove_thought(t, turns[i][1]))
    if t.mask_history:  # LF's discarding_history_cot (preserve_thinking is off)
        for i in range(1, len(turns) - 2, 2):
            turns[i] = (turns[i][0], remove_thought(t, turns[i][1]))
    return turns


def render(t: LFTemplate, conv: Conversation) -> list[list[Slot]]:
    """One slot list per message, as LLaMA-Factory's `_encode` builds them.

    Turn 0 carries the prefix and the system message (system, or the default system,
    plus the tools text); a `tools` value of "[]" adds no tools text but, like in
    LLaMA-Factory, still opens a system message when the template has no default one.
    """
    system = conv.system or t.default_system
    tools = conv.tools or ""
    llama2 = t.template_class == "llama2"
    turns = _turns(t, conv)
    out: list[list[Slot]] = []
    for i, (role, content) in enumerate(turns):
        elements: list[Slot] = []
        system_text = ""
        if i == 0:
            elements += t.prefix
            if system or tools:
                tool_text = tools_text(t.tools_format, tools, t.tool_date) if tools else ""
                sys_slots = _apply(t.system, content=system + tool_text)
                if llama2:
                    first = sys_slots[0] if sys_slots else ""
                    system_text = first if isinstance(first, str) else ""
                else:
                    elements += sys_slots
        if role == "user":
            if llama2:
                elements += _apply(t.user, content=system_text + content)
            else:
                elements += _apply(t.user, content=content, idx=str(i // 2))
        elif role == "assistant":
            elements += _apply(t.assistant, content=content)
        elif role == "observation":
            elements += _apply(t.observation, content=content)
        else:  # function_call
            elements += _function_slots(t, content, with_words=not llama2)
        out.append(elements)
    if t.template_class == "reasoning":
        _add_empty_thoughts(t, turns, out)
    return out


def _add_empty_thoughts(t: LFTemplate, turns: list, out: list[list[Slot]]) -> None:
    """ReasoningTemplate.encode_multiturn: replies without a thought get an empty one."""
    empty = t.thought_words[0] + t.thought_words[1]
    starts = [len(turns) - 2] if t.mask_history else range(0, len(turns), 2)
    for i in starts:
        reply = turns[i + 1][1]
        if t.thought_words[0].strip() in reply or t.thought_words[1].strip() in reply:
            continue
        if not t.enable_thinking:
            out[i] = [*out[i], empty]  # in the prompt: not trained
        else:
            out[i + 1] = [empty, *out[i + 1]]  # trained, before the reply
