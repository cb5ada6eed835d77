"""A conversation -> per-message elements -> ids and labels, as MindSpeed-LLM 2.0.0 does.

`messages()` is MindSpeed's `Template._encode` (and `Llama2Template._encode`):
turn 0 gets the prefix and the system message (with the tools block), every
later user turn the separator. `assemble()` is its `_tokenize_prompt`: messages
pair up as (prompt, reply); prompts are labelled -100 (with `efficient_eos`, a
prompt after the first starts with an EOS label), replies are trained.

`--template-quirks fixed` (`Template.fixed_quirks`) changes what MindSpeed gets
arguably wrong: empty tools (`"[]"`) no longer open an empty system block, and
tools or tool calls it cannot parse are record errors instead of vanishing.
"""

from __future__ import annotations

from collections.abc import Iterator

from atelier.llm.data.conversation import Conversation
from atelier.llm.data.templates import Element, Slots, Template
from atelier.llm.data.tool_prompts import function_call, tools_block

IGNORE = -100


def _apply(slots: Slots, **values: str) -> list[Element]:
    """MindSpeed's StringFormatter: each placeholder replaced once, in argument order."""
    out: list[Element] = []
    for slot in slots:
        if isinstance(slot, str):
            for name, value in values.items():
                slot = slot.replace("{{" + name + "}}", value, 1)
        out.append(slot)
    return out


def _apply_function(t: Template, content: str) -> list[Element]:
    slots = t.function_call
    if not any(isinstance(s, str) and "{{name}}" in s for s in slots):
        return _apply(slots, content=content)  # Atelier notation: the call as written
    name, arguments = function_call(content, strict=t.fixed_quirks)
    return [
        s.replace("{{name}}", name).replace("{{arguments}}", arguments) if isinstance(s, str) else s
        for s in slots
    ]


def messages(t: Template, conv: Conversation) -> list[list[Element]]:
    """One element list per message (user, reply, user, reply, ...)."""
    system = conv.system or t.default_system
    tool_text = ""
    if conv.tools:
        tool_text = tools_block(t.tool_format, conv.tools, t.tools, t.fixed_quirks)
    open_system = bool(system or tool_text) if t.fixed_quirks else bool(system or conv.tools)
    out: list[list[Element]] = []
    for i, (role, content) in enumerate(conv.turns):
        elements: list[Element] = []
        system_text = ""
        if i == 0:
            elements += t.prefix
            if open_system:
                formatted = _apply(t.system, content=system + tool_text)
                if t.system_in_user:
                    system_text = str(formatted[0])
                else:
                    elements += formatted
        elif i % 2 == 0:
            elements += t.separator
        if role == "user":
            if t.system_in_user:
                elements += _apply(t.user, content=system_text + content)
            else:
                elements += _apply(t.user, content=content, idx=str(i // 2))
        elif role == "assistant":
            elements += _apply(t.assistant, content=content)
        elif role == "observation":
            elements += _apply(t.format_of("observation"), content=content)
        else:  # function_call
            elements += _apply_function(t, content)
        out.append(elements)
    return out


def texts(msgs: list[list[Element]]) -> Iterator[str]:
    """The text elements that need tokenizing, in order (empty ones are skipped)."""
    for m in msgs:
        for e in m:
            if isinstance(e, str) and e:
                yield e


def message_ids(
    t: Template,
    msgs: list[list[Element]],
    encoded: Iterator[list[int]],
    bos: int | None,
    eos: int | None,
) -> list[list[int]]:
    """The ids of each message; `encoded` yields the ids of `texts(msgs)`."""
    token_ids = dict(t.token_ids)
    per_message: list[list[int]] = []
    for m in msgs:
        ids: list[int] = []
        for e in m:
            if isinstance(e, str):
                if e:
                    ids += next(encoded)
            elif e.kind == "token":
                ids.append(token_ids[e.token])
            else:
                special = bos if e.kind == "bos" else eos
                if special is not None:
                    ids.append(special)
        per_message.append(ids)
    return per_message


def assemble(
    t: Template,
    msgs: list[list[Element]],
    encoded: Iterator[list[int]],
    bos: int | None,
    eos: int | None,
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one conversation; `encoded` yields the ids of `texts(msgs)`."""
    per_message = message_ids(t, msgs, encoded, bos, eos)
    input_ids: list[int] = []
    labels: list[int] = []
    for j in range(0, len(per_message) - 1, 2):
        source, target = per_message[j], per_message[j + 1]
        if t.efficient_eos and input_ids and source and eos is not None:
            labels += [eos] + [IGNORE] * (len(source) - 1)
        else:
            labels += [IGNORE] * len(source)
        input_ids += source + target
        labels += target
    if t.efficient_eos and eos is not None:
        input_ids.append(eos)
        labels.append(eos)
    return input_ids, labels
