"""Tool calling text: the `tools` column as a system-prompt block, a tool call as text.

Byte for byte what MindSpeed-LLM 2.0.0's `ToolFormatter` (`tool_format: default`)
and `FunctionFormatter` write, so ids match its preprocessing. MindSpeed drops
what it cannot parse (an empty tools block; `Action: ` with no name): that stays
the default, and `--template-quirks fixed` (`strict=True` here) makes those
records errors instead, which `--skip-bad-records` can count and skip.
"""

from __future__ import annotations

import json
from typing import Any

from atelier.llm.data.conversation import RecordError

_JSON_FORMAT = (
    ", in a JSON format representing the kwargs "
    """(e.g. ```{"input": "hello world", "num_beams": 5}```)"""
)
_TOOL_PROMPT = (
    "You have access to the following tools:\n{tool_text}"
    "Use the following format if using a tool:\n"
    "```\n"
    "Action: tool name (one of [{tool_names}]).\n"
    "Action Input: the input to the tool{format_prompt}.\n"
    "```\n"
)
# What a malformed tool list raises while being rendered (MindSpeed catches them all).
_BAD_TOOL = (KeyError, TypeError, AttributeError, ValueError)


def _default_tools(tools: list[dict[str, Any]]) -> str:
    tool_text = ""
    names = []
    for tool in tools:
        params = ""
        for name, param in tool["parameters"]["properties"].items():
            required = ", required" if name in tool["parameters"].get("required", []) else ""
            enum = f", should be one of [{', '.join(param['enum'])}]" if param.get("enum") else ""
            items = (
                f", where each item should be {param['items'].get('type', '')}"
                if param.get("items")
                else ""
            )
            params += (
                f"  - {name} ({param.get('type', '')}{required}): "
                f"{param.get('description', '')}{enum}{items}\n"
            )
        tool_text += (
            f"> Tool Name: {tool['name']}\nTool Description: {tool.get('description', '')}\n"
            f"Tool Args:\n{params}\n"
        )
        names.append(tool["name"])
    return _TOOL_PROMPT.format(
        tool_text=tool_text, tool_names=", ".join(names), format_prompt=_JSON_FORMAT
    )


def tools_block(tool_format: str, tools: str, text: str, strict: bool) -> str:
    """The tools column rendered for the system message ("" for no tools)."""
    if tool_format == "text":
        return text.replace("{{content}}", tools, 1)
    try:
        parsed = json.loads(tools)
    except ValueError:
        if strict:
            raise RecordError("tools: not valid JSON") from None
        return ""
    if not parsed:
        return ""
    if tool_format != "default":
        if strict:
            raise RecordError(
                f"tools: tool_format {tool_format!r} is not rendered by MindSpeed-LLM 2.0.0 "
                "(the tools would be dropped); use a template with tool_format default"
            )
        return ""
    try:
        return _default_tools(parsed)
    except _BAD_TOOL as e:
        if strict:
            raise RecordError(
                f"tools: not a list of {{name, parameters}} objects ({e!r})"
            ) from None
        return ""


def function_call(content: str, strict: bool) -> tuple[str, str]:
    """(name, arguments JSON) of a `{"name": ..., "arguments": ...}` tool call."""
    try:
        call = json.loads(content)
        name = call["name"]
        arguments = json.dumps(call["arguments"], ensure_ascii=False)
    except (*_BAD_TOOL, IndexError):
        if strict:
            raise RecordError(
                'function_call: expected JSON {"name": ..., "arguments": ...}'
            ) from None
        return "", ""
    if not isinstance(name, str):
        raise RecordError("function_call: its name must be text")
    return name, arguments
