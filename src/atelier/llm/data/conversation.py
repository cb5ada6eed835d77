"""Records -> conversations: Alpaca and ShareGPT/OpenAI layouts, with `--map-keys`.

`--map-keys` follows LLaMA-Factory/MindSpeed: for Alpaca
`{"prompt": "instruction", "query": "input", "response": "output", "system":
"system", "history": "history"}`; for ShareGPT `{"messages": "conversations",
"system": "system", "tools": "tools", "tags": {"role_tag": "from", "content_tag":
"value", "user_tag": "human", "assistant_tag": "gpt", "observation_tag":
"observation", "function_tag": "function_call", "system_tag": "system"}}`.

As in MindSpeed-LLM, only `instruction`/`input`/`output` (Alpaca) and
`conversations` with its first-turn system message (ShareGPT) are read by their
default names; the `system`, `history` and `tools` columns are read only when
`--map-keys` names them (e.g. `{"system": "system", "tools": "tools"}`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from atelier.core.errors import AtelierError


class RecordError(ValueError):
    """A record the user must fix (or skip with --skip-bad-records)."""


@dataclass
class Conversation:
    system: str | None
    tools: str | None
    turns: list[tuple[str, str]] = field(default_factory=list)  # (role, content)


ALPACA_KEYS = {"prompt": "instruction", "query": "input", "response": "output"}
# read only when --map-keys names them (MindSpeed's InstructionDatasetAttr defaults: None)
OPTIONAL_KEYS = ("system", "history", "tools")
SHAREGPT_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}
OPENAI_TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "observation_tag": "tool",
    "function_tag": "function_call",
    "system_tag": "system",
}
# Accept the Alpaca column names themselves as map-keys too ("instruction": ...).
_ALPACA_ALIASES = {"instruction": "prompt", "input": "query", "output": "response"}


def parse_map_keys(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise AtelierError(
            f'--map-keys: not valid JSON ({e.msg}); e.g. \'{{"prompt":"q"}}\''
        ) from None
    if not isinstance(value, dict):
        raise AtelierError("--map-keys: expected a JSON object of field -> column")
    return {_ALPACA_ALIASES.get(k, k): v for k, v in value.items()}


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _keys_present(record: dict) -> str:
    return ", ".join(sorted(map(str, record))) or "none"


def alpaca_conversation(record: Any, map_keys: dict[str, Any]) -> Conversation:
    if not isinstance(record, dict):
        raise RecordError(f"expected a JSON object, got {type(record).__name__}")
    known = (*ALPACA_KEYS, *OPTIONAL_KEYS)
    keys = {**ALPACA_KEYS, **{k: v for k, v in map_keys.items() if k in known}}
    for needed in ("prompt", "response"):
        if keys[needed] not in record:
            raise RecordError(
                f"missing key {keys[needed]!r} (keys present: {_keys_present(record)}); "
                f'map it with --map-keys \'{{"{needed}": "<column>"}}\''
            )
    response = record[keys["response"]]
    if isinstance(response, list):
        raise RecordError(
            f"{keys['response']!r} is a list (pairwise data); instruction handlers need one reply"
        )
    prompt = _text(record[keys["prompt"]], keys["prompt"])
    query = _text(record.get(keys["query"]), keys["query"])
    if query:
        prompt = f"{prompt}\n{query}" if prompt else query
    conv = Conversation(system=None, tools=None)
    if "system" in keys:
        conv.system = _text(record.get(keys["system"]), "system") or None
    if "tools" in keys:
        conv.tools = _text(record.get(keys["tools"]), "tools") or None
    history = (record.get(keys["history"]) or []) if "history" in keys else []
    if not isinstance(history, list):
        raise RecordError(f"{keys['history']!r} must be a list of [question, answer] pairs")
    for i, pair in enumerate(history, 1):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise RecordError(f"{keys['history']!r} item {i} is not a [question, answer] pair")
        conv.turns += [("user", _text(pair[0], "history")), ("assistant", _text(pair[1], "h"))]
    conv.turns += [("user", prompt), ("assistant", _text(response, keys["response"]))]
    return conv


def _messages_key(record: dict, map_keys: dict[str, Any]) -> str:
    if "messages" in map_keys:
        return str(map_keys["messages"])
    for candidate in ("conversations", "messages"):
        if candidate in record:
            return candidate
    return "conversations"


def sharegpt_conversation(record: Any, map_keys: dict[str, Any]) -> Conversation:
    if not isinstance(record, dict):
        raise RecordError(f"expected a JSON object, got {type(record).__name__}")
    key = _messages_key(record, map_keys)
    messages = record.get(key)
    if not isinstance(messages, list) or not messages:
        raise RecordError(
            f"missing or empty message list {key!r} (keys present: {_keys_present(record)}); "
            'map it with --map-keys \'{"messages": "<column>"}\''
        )
    first = messages[0] if isinstance(messages[0], dict) else {}
    base = OPENAI_TAGS if "role" in first and "from" not in first else SHAREGPT_TAGS
    tags = {**base, **(map_keys.get("tags") or {})}
    role_of = {
        tags["user_tag"]: "user",
        tags["assistant_tag"]: "assistant",
        tags["observation_tag"]: "observation",
        tags["function_tag"]: "function_call",
        tags["system_tag"]: "system",
    }
    system = tools = None
    if "system" in map_keys:
        system = _text(record.get(map_keys["system"]), "system") or None
    if "tools" in map_keys:
        tools = _text(record.get(map_keys["tools"]), "tools") or None
    turns: list[tuple[str, str]] = []
    for i, msg in enumerate(messages, 1):
        if not isinstance(msg, dict) or tags["role_tag"] not in msg:
            raise RecordError(f"turn {i} has no {tags['role_tag']!r} field")
        tag = msg[tags["role_tag"]]
        role = role_of.get(tag)
        if role is None:
            raise RecordError(
                f"turn {i} has unknown {tags['role_tag']} {tag!r}; known: {', '.join(role_of)}"
            )
        content = _text(msg.get(tags["content_tag"]), "content")
        if role == "system":
            if i != 1:
                raise RecordError(f"turn {i}: a system turn may only come first")
            system = content
            continue
        turns.append((role, content))
    for j, (role, _) in enumerate(turns):
        asking = j % 2 == 0
        if asking and role not in ("user", "observation"):
            raise RecordError(
                f"turn order: message {j + 1} is {role!r} where a user/observation turn belongs "
                "(turns must alternate user -> assistant)"
            )
        if not asking and role not in ("assistant", "function_call"):
            raise RecordError(
                f"turn order: message {j + 1} is {role!r} where an assistant/function_call "
                "turn belongs (turns must alternate user -> assistant)"
            )
    if not turns or len(turns) % 2:
        raise RecordError("turn order: the conversation must end with an assistant reply")
    return Conversation(system=system, tools=tools, turns=turns)
