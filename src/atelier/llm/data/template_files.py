"""Template files in two notations -> `Template`s.

- MindSpeed-LLM's `configs/finetune/templates.json`: a JSON list of
  `{"name": ..., "format_user": {"slots": [...]}, ...}`; a slot is text with
  `{{content}}`, `{"token": "<|user|>"}` (one vocabulary id) or `["bos_token"]` /
  `["eos_token"]`. Missing formats get MindSpeed's `_register_template` defaults.
- Atelier's YAML (or JSON) mapping `name: {field: value}`; a format is a string or
  a list of strings (each item tokenized on its own), with `{content}`, `{bos}`,
  `{eos}`, `{token:<|user|>}`. `defaults: mindspeed` at the top gives missing
  fields MindSpeed's defaults (the built-in file does); without it, the earlier
  Atelier defaults hold (observation = user, function_call = assistant, tools as
  text).
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from atelier.core.errors import AtelierError
from atelier.llm.data.templates import BOS, EOS, TOOL_FORMATS, Element, Slots, Special, Template

ATELIER_FIELDS = {
    "prefix",
    "system",
    "default_system",
    "system_in_user",
    "tools",
    "tool_format",
    "user",
    "assistant",
    "separator",
    "observation",
    "function_call",
    "efficient_eos",
    "replace_eos",
    "stop_words",
}
SLOT_FIELDS = ("prefix", "system", "user", "assistant", "separator", "observation", "function_call")
MINDSPEED_FORMATS = {
    "format_user": "user",
    "format_assistant": "assistant",
    "format_system": "system",
    "format_function": "function_call",
    "format_observation": "observation",
    "format_separator": "separator",
    "format_prefix": "prefix",
}
MINDSPEED_KEYS = {
    "name",
    "format_tools",
    "default_system",
    "stop_words",
    "efficient_eos",
    "replace_eos",
    "force_system",  # only shapes MindSpeed's jinja chat template, never the ids
    *MINDSPEED_FORMATS,
}
_MARKER = re.compile(r"(\{bos\}|\{eos\}|\{token:[^{}]+\})")
_ATELIER_PLACEHOLDER = re.compile(r"(?<!\{)\{(content|idx|name|arguments)\}(?!\})")


def parse_templates(text: str, where: str) -> dict[str, Template]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise AtelierError(f"{where}: not valid YAML/JSON ({e})") from None
    if data is None:
        return {}
    if isinstance(data, list):
        return _mindspeed(data, where)
    if isinstance(data, dict):
        return _atelier(data, where)
    raise AtelierError(
        f"{where}: expected a mapping of template name -> fields (Atelier) or a list of "
        'templates with "name" (MindSpeed-LLM templates.json)'
    )


# ------------------------------------------------------------------ MindSpeed notation


def _ms_slot(slot: Any, where: str) -> Element:
    if isinstance(slot, str):
        return slot
    if isinstance(slot, dict) and set(slot) == {"token"} and isinstance(slot["token"], str):
        return Special("token", slot["token"])
    if isinstance(slot, list):  # MindSpeed turns a list into a set: {"bos_token"}
        if "bos_token" in slot:
            return BOS
        if "eos_token" in slot:
            return EOS
    raise AtelierError(
        f'{where}: slot {slot!r} is not text, {{"token": ...}}, ["bos_token"] or ["eos_token"]'
    )


def _ms_format(value: Any, where: str) -> tuple[Slots | None, str | None]:
    if not isinstance(value, dict) or not set(value) <= {"slots", "tool_format"}:
        raise AtelierError(f'{where}: expected {{"slots": [...]}} (and optionally "tool_format")')
    slots = value.get("slots")
    if slots is not None and not isinstance(slots, list):
        raise AtelierError(f"{where}: slots must be a list")
    parsed = tuple(_ms_slot(s, where) for s in slots) if slots else None
    return parsed, value.get("tool_format")


def _mindspeed(entries: list, where: str) -> dict[str, Template]:
    out: dict[str, Template] = {}
    for i, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise AtelierError(f'{where}: template {i} is not an object with a "name"')
        name = entry["name"]
        here = f"{where}: template {name!r}"
        unknown = set(entry) - MINDSPEED_KEYS
        if unknown:
            raise AtelierError(
                f"{here} has unsupported key(s) {sorted(unknown)} (MindSpeed-LLM 2.0.0 "
                f"notation); known: {sorted(MINDSPEED_KEYS)}"
            )
        fields: dict[str, Any] = {}
        for key, field in MINDSPEED_FORMATS.items():
            if key in entry:
                slots, _ = _ms_format(entry[key], f"{here} {key}")
                if slots is not None:
                    fields[field] = slots
        if "format_tools" in entry:
            _, tool_format = _ms_format(entry["format_tools"], f"{here} format_tools")
            fields["tool_format"] = tool_format or "default"
        default_system = entry.get("default_system", "")
        if isinstance(default_system, list) and all(isinstance(s, str) for s in default_system):
            default_system = "".join(default_system)
        if not isinstance(default_system, str):
            raise AtelierError(f"{here}: default_system must be text")
        stop_words = entry.get("stop_words") or []
        if not (isinstance(stop_words, list) and all(isinstance(s, str) for s in stop_words)):
            raise AtelierError(f"{here}: stop_words must be a list of strings")
        out[name] = _with_mindspeed_defaults(
            name,
            fields,
            default_system=default_system,
            stop_words=tuple(stop_words),
            efficient_eos=bool(entry.get("efficient_eos", False)),
            replace_eos=bool(entry.get("replace_eos", False)),
            source=where,
        )
    return out


def _with_mindspeed_defaults(name: str, fields: dict[str, Any], **rest: Any) -> Template:
    """MindSpeed's `_register_template`: what a template that names no format gets."""
    eos: Slots = () if rest["efficient_eos"] else (EOS,)
    user = fields.get("user", ("{{content}}",))
    template = Template(
        name=name,
        user=user,
        assistant=fields.get("assistant", ("{{content}}", *eos)),
        system=fields.get("system", ("{{content}}",)),
        function_call=fields.get(
            "function_call", ("Action: {{name}}\nAction Input: {{arguments}}", *eos)
        ),
        observation=fields.get("observation", user),
        separator=fields.get("separator", ()),
        prefix=fields.get("prefix", ()),
        tool_format=fields.get("tool_format", "default"),
        tools=fields.get("tools", ""),
        system_in_user=fields.get("system_in_user", name.startswith("llama2")),
        **rest,
    )
    _check(template)
    return template


# ------------------------------------------------------------------ Atelier notation


def _atelier_slots(value: Any, where: str) -> Slots:
    items = value if isinstance(value, list) else [value]
    out: list[Element] = []
    for item in items:
        if not isinstance(item, str):
            raise AtelierError(f"{where}: expected text or a list of texts, got {item!r}")
        for part in _MARKER.split(item):
            if not part:
                continue
            if part == "{bos}":
                out.append(BOS)
            elif part == "{eos}":
                out.append(EOS)
            elif part.startswith("{token:"):
                out.append(Special("token", part[len("{token:") : -1]))
            else:
                out.append(_ATELIER_PLACEHOLDER.sub(r"{{\1}}", part))
    return tuple(out)


def _atelier(data: dict, where: str) -> dict[str, Template]:
    defaults = data.get("defaults", "atelier")
    if defaults not in ("atelier", "mindspeed"):
        raise AtelierError(f"{where}: defaults must be atelier or mindspeed, not {defaults!r}")
    out: dict[str, Template] = {}
    for name, fields in data.items():
        if name == "defaults":
            continue
        here = f"{where}: template {name!r}"
        if not isinstance(fields, dict):
            raise AtelierError(f"{here} must be a mapping")
        unknown = set(fields) - ATELIER_FIELDS
        if unknown:
            raise AtelierError(
                f"{here} has unknown field(s) {sorted(unknown)}; known: {sorted(ATELIER_FIELDS)}"
            )
        if defaults == "atelier":
            for required in ("user", "assistant"):
                if required not in fields:
                    raise AtelierError(f"{here} lacks {required!r}")
        parsed: dict[str, Any] = {
            k: _atelier_slots(v, f"{here} {k}") for k, v in fields.items() if k in SLOT_FIELDS
        }
        if "tools" in fields:
            if not isinstance(fields["tools"], str):
                raise AtelierError(f"{here} tools must be text")
            parsed["tools"] = _ATELIER_PLACEHOLDER.sub(r"{{\1}}", fields["tools"])
        if "tool_format" in fields:
            parsed["tool_format"] = fields["tool_format"]
        if "system_in_user" in fields:
            parsed["system_in_user"] = bool(fields["system_in_user"])
        rest = {
            "default_system": str(fields.get("default_system", "")),
            "stop_words": tuple(str(s) for s in fields.get("stop_words") or ()),
            "efficient_eos": bool(fields.get("efficient_eos", False)),
            "replace_eos": bool(fields.get("replace_eos", False)),
            "source": where,
        }
        if defaults == "mindspeed":
            out[str(name)] = _with_mindspeed_defaults(str(name), parsed, **rest)
            continue
        # Atelier's earlier defaults: tools as text, tool calls and results like replies/users
        parsed.setdefault("tool_format", "text")
        if parsed["tool_format"] == "text":
            parsed.setdefault("tools", "\n\nYou have access to the following tools:\n{{content}}")
        parsed.setdefault("function_call", parsed["assistant"])
        parsed.setdefault("observation", parsed["user"])
        template = Template(name=str(name), **parsed, **rest)
        _check(template)
        out[str(name)] = template
    return out


def _check(t: Template) -> None:
    where = f"{t.source}: template {t.name!r}"
    if t.tool_format not in TOOL_FORMATS:
        raise AtelierError(
            f"{where}: tool_format {t.tool_format!r} unknown; known: {', '.join(TOOL_FORMATS)}"
        )
    if t.replace_eos and not t.stop_words:
        raise AtelierError(f"{where}: replace_eos needs stop_words (the first becomes EOS)")
    if t.system_in_user and not (t.system and isinstance(t.system[0], str)):
        raise AtelierError(f"{where}: system_in_user needs a system format starting with text")
    for slots in (t.user, t.assistant):
        if not any(isinstance(e, str) and "{{content}}" in e for e in slots):
            raise AtelierError(f"{where}: user and assistant formats need a {{content}}")
    fc = [e for e in t.function_call if isinstance(e, str)]
    if not any("{{content}}" in e for e in fc) and not (
        any("{{name}}" in e for e in fc) and any("{{arguments}}" in e for e in fc)
    ):
        raise AtelierError(f"{where}: function_call needs {{content}} or {{name}} + {{arguments}}")


def dump_json(t: Template) -> str:
    """A template as one entry of MindSpeed's templates.json (what `_mindspeed` reads back)."""

    def slots(s: Slots) -> list:
        return [
            e
            if isinstance(e, str)
            else {"token": e.token}
            if e.kind == "token"
            else [f"{e.kind}_token"]
            for e in s
        ]

    body = {
        "name": t.name,
        **{
            k: {"slots": slots(getattr(t, f))}
            for k, f in MINDSPEED_FORMATS.items()
            if f != "observation"
        },
        "format_observation": {"slots": slots(t.format_of("observation"))},
        "format_tools": {"tool_format": t.tool_format},
        "default_system": t.default_system,
        "stop_words": list(t.stop_words),
        "efficient_eos": t.efficient_eos,
        "replace_eos": t.replace_eos,
    }
    return json.dumps(body, ensure_ascii=False, sort_keys=True)
