"""LLaMA-Factory's tool formats: the `tools` column -> system text, a tool call -> reply text.

Same texts as LLaMA-Factory 0.9.5's `tool_utils.py` (default, qwen, llama3, mistral, glm4),
reimplemented so the output is byte-identical without importing it; the golden tests
(tests/llm/data/test_lf_templates.py) hold the proof. Bad JSON is a `RecordError` naming
the field, where LLaMA-Factory raises a RuntimeError.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from atelier.llm.data.conversation import RecordError

DEFAULT_TOOL_PROMPT = (
    "You have access to the following tools:\n{tool_text}"
    "Use the following format if using a tool:\n"
    "```\n"
    "Action: tool name (one of [{tool_names}])\n"
    "Action Input: the input to the tool, in a JSON format representing the kwargs "
    """(e.g. ```{{"input": "hello world", "num_beams": 5}}```)\n"""
    "```\n"
)
GLM4_TOOL_PROMPT = (
    "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱 AI 公司训练的语言模型 GLM-4 模型开发的，"
    "你的任务是针对用户的问题和要求提供适当的答复和支持。\n\n# 可用工具{tool_text}"
)
LLAMA3_TOOL_PROMPT = (
    "Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n"
    "You have access to the following functions. To call a function, please respond with JSON "
    "for a function call. "
    """Respond in the format {{"name": function name, "parameters": dictionary of argument name """
    """and its value}}. """
    "Do not use variables.\n\n{tool_text}"
)
QWEN_TOOL_PROMPT = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>{tool_text}"
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
    """within <tool_call></tool_call> XML tags:\n<tool_call>\n{{"name": <function-name>, """
    """"arguments": <args-json-object>}}\n</tool_call>"""
)

Call = tuple[str, str]  # (name, arguments as JSON text)


def _dumps(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _function(tool: dict) -> dict:
    """The function object of an OpenAI-style {"type": "function", "function": ...} entry."""
    return tool.get("function", "") if tool.get("type") == "function" else tool


def _wrapped(tool: dict) -> dict:
    return tool if tool.get("type") == "function" else {"type": "function", "function": tool}


def _default_tools(tools: list[dict], date: str) -> str:
    tool_text = ""
    names = []
    for tool in tools:
        tool = _function(tool)
        params = ""
        for name, param in tool["parameters"]["properties"].items():
            required = ", required" if name in tool["parameters"].get("required", []) else ""
            enum = ""
            if param.get("enum", None):
                enum = ", should be one of [{}]".format(", ".join(param["enum"]))
            items = ""
            if param.get("items", None):
                items = ", where each item should be {}".format(param["items"].get("type", ""))
            params += "  - {name} ({type}{required}): {desc}{enum}{items}\n".format(
                name=name,
                type=param.get("type", ""),
                required=required,
                desc=param.get("description", ""),
                enum=enum,
                items=items,
            )
        tool_text += "> Tool Name: {name}\nTool Description: {desc}\nTool Args:\n{args}\n".format(
            name=tool["name"], desc=tool.get("description", ""), args=params
        )
        names.append(tool["name"])
    return DEFAULT_TOOL_PROMPT.format(tool_text=tool_text, tool_names=", ".join(names))


def _qwen_tools(tools: list[dict], date: str) -> str:
    return QWEN_TOOL_PROMPT.format(tool_text="".join("\n" + _dumps(_wrapped(t)) for t in tools))


def _llama3_tools(tools: list[dict], date: str) -> str:
    text = "".join(_dumps(_wrapped(t), indent=4) + "\n\n" for t in tools)
    return LLAMA3_TOOL_PROMPT.format(date=date, tool_text=text)


def _mistral_tools(tools: list[dict], date: str) -> str:
    return "[AVAILABLE_TOOLS] " + _dumps([_wrapped(t) for t in tools]) + "[/AVAILABLE_TOOLS]"


def _glm4_tools(tools: list[dict], date: str) -> str:
    text = ""
    for tool in tools:
        tool = _function(tool)
        text += (
            "\n\n## {name}\n\n{body}\n在调用上述函数时，请使用 Json 格式表示调用的参数。".format(
                name=tool["name"], body=_dumps(tool, indent=4)
            )
        )
    return GLM4_TOOL_PROMPT.format(tool_text=text)


def _default_calls(calls: list[Call]) -> str:
    return "\n".join(f"Action: {name}\nAction Input: {args}" for name, args in calls)


def _qwen_calls(calls: list[Call]) -> str:
    texts = [_dumps({"name": name, "arguments": json.loads(args)}) for name, args in calls]
    return "\n".join(f"<tool_call>\n{text}\n</tool_call>" for text in texts)


def _llama3_calls(calls: list[Call]) -> str:
    objects = [{"name": name, "parameters": json.loads(args)} for name, args in calls]
    return _dumps(objects[0] if len(objects) == 1 else objects)


def _mistral_calls(calls: list[Call]) -> str:
    return _dumps([{"name": name, "arguments": json.loads(args)} for name, args in calls])


def _glm4_calls(calls: list[Call]) -> str:
    if len(calls) > 1:
        raise RecordError("function_call: GLM-4 templates take one call per turn, not a list")
    return f"{calls[0][0]}\n{calls[0][1]}"


TOOLS: dict[str, Callable[[list[dict], str], str]] = {
    "default": _default_tools,
    "qwen": _qwen_tools,
    "llama3": _llama3_tools,
    "mistral": _mistral_tools,
    "glm4": _glm4_tools,
}
CALLS: dict[str, Callable[[list[Call]], str]] = {
    "default": _default_calls,
    "qwen": _qwen_calls,
    "llama3": _llama3_calls,
    "mistral": _mistral_calls,
    "glm4": _glm4_calls,
}


def tools_text(fmt: str, tools: str, date: str) -> str:
    """The system text for a `tools` value (JSON text); "" for an empty list, as LF does."""
    try:
        parsed = json.loads(tools)
    except json.JSONDecodeError as e:
        raise RecordError(
            f"tools: not valid JSON ({e.msg}); give a JSON list of functions"
        ) from None
    if not parsed:
        return ""
    if not isinstance(parsed, list) or not all(isinstance(t, dict) for t in parsed):
        raise RecordError("tools: expected a JSON list of function objects")
    try:
        return TOOLS[fmt](parsed, date)
    except (KeyError, TypeError, AttributeError) as e:
        raise RecordError(f"tools: a function lacks a field LLaMA-Factory reads ({e!r})") from None


def parse_calls(content: str) -> list[Call]:
    """A function_call turn's JSON (one call or a list) -> (name, arguments JSON) pairs."""
    try:
        calls = json.loads(content)
    except json.JSONDecodeError as e:
        raise RecordError(
            f"function_call: not valid JSON ({e.msg}); give "
            '{"name": ..., "arguments": {...}} or a list of them'
        ) from None
    if not isinstance(calls, list):
        calls = [calls]
    try:
        return [(c["name"], _dumps(c["arguments"])) for c in calls]
    except (KeyError, TypeError):
        raise RecordError('function_call: each call needs "name" and "arguments"') from None


def calls_text(fmt: str, calls: list[Call]) -> str:
    return CALLS[fmt](calls)
