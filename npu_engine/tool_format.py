"""Tool calls between the engine and a model: how a request's tools reach the prompt (the model's
own chat template, or the engine's documented system message), which calls the answer may make
(the constraint OpenVINO GenAI's structured output enforces), and how the answer's text becomes
ToolCall objects.

Every family calls tools the same way, as Qwen2.5's template asks:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

For families whose template has no tool format (`tools: "prompt"` in models/families.json) the
engine writes the tools into a system message (`tool_prompt`, the format the README documents),
renders earlier calls as that text and tool results as `<tool_response>` user turns."""

import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from npu_engine.errors import UserInputError
from npu_engine.families import ToolFormat
from npu_engine.generation import Message, TextSink, held_tail
from npu_engine.json_schema import check_schema, validates
from npu_engine.tools import Tool, ToolCall, ToolChoice

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
CALL_END = "}\n" + CLOSE
MAX_TOOLS = 128
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

TOOL_PROMPT = """\
# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""


@dataclass(frozen=True)
class ToolConstraint:
    """The calls an answer may make, as structured output enforces them: each begins with
    `<tool_call>` and the tool's name, and its arguments match the tool's schema. `required`: the
    answer is calls only, at least one; `single`: it stops after the first call."""

    tools: tuple[Tool, ...]
    required: bool = False
    single: bool = False

    def begin(self, tool: Tool) -> str:
        """What a call of `tool` starts with; its arguments follow, then CALL_END."""
        return f'{OPEN}\n{{"name": {json.dumps(tool.name)}, "arguments": '


def tool_dict(tool: Tool) -> dict[str, Any]:
    """The tool as OpenAI declares it (and chat templates read it)."""
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    }


def tool_prompt(tools: Sequence[Tool]) -> str:
    """The system message that declares `tools` to a model with no tool format of its own."""
    return TOOL_PROMPT.format(tools="\n".join(json.dumps(tool_dict(t)) for t in tools))


def offered(tools: Sequence[Tool], choice: ToolChoice) -> tuple[Tool, ...]:
    """The tools the prompt declares: none for tool_choice `none`."""
    return () if choice == "none" else tuple(tools)


def constraint(tools: Sequence[Tool], choice: ToolChoice, parallel: bool) -> ToolConstraint | None:
    """What structured output enforces for this tool_choice: nothing without tools or for `none`;
    `required` or a named tool: at least one call (of that tool only, when named)."""
    if not tools or choice == "none":
        return None
    if choice in ("auto", "required"):
        return ToolConstraint(tuple(tools), required=choice == "required", single=not parallel)
    named = tuple(t for t in tools if t.name == choice)
    return ToolConstraint(named, required=True, single=not parallel)


def chat_messages(
    messages: Sequence[Message], tools: Sequence[Tool], form: ToolFormat | None
) -> tuple[list[Message], list[dict[str, Any]]]:
    """The messages and tool declarations a chat template is given: for `template` families the
    messages as they are (earlier calls' arguments as objects) and the tools for the template;
    for the others the tools in a system message and earlier calls and results as text."""
    if form == "template":
        return [_for_template(m) for m in messages], [tool_dict(t) for t in tools]
    rendered = [_as_text(m) for m in messages]
    if tools:
        declared = tool_prompt(tools)
        if rendered and rendered[0]["role"] == "system":
            rendered[0] = {"role": "system", "content": f"{rendered[0]['content']}\n\n{declared}"}
        else:
            rendered.insert(0, {"role": "system", "content": declared})
    return rendered, []


def _calls(message: Message) -> list[dict[str, Any]]:
    return list(message.get("tool_calls") or [])


def _for_template(message: Message) -> Message:
    if not _calls(message):
        return dict(message)
    calls = [
        {
            "id": call.get("id", ""),
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": call["function"]["arguments"]},
        }
        for call in _calls(message)
    ]
    return {**message, "tool_calls": calls}


def call_text(name: str, arguments: dict[str, Any]) -> str:
    return f"{OPEN}\n{json.dumps({'name': name, 'arguments': arguments})}\n{CLOSE}"


def _as_text(message: Message) -> Message:
    role, content = message["role"], message.get("content") or ""
    if role == "tool":
        return {"role": "user", "content": f"<tool_response>\n{content}\n</tool_response>"}
    calls = [call_text(c["function"]["name"], c["function"]["arguments"]) for c in _calls(message)]
    if calls:
        return {"role": role, "content": "\n".join([content, *calls] if content else calls)}
    return {"role": role, "content": content}


def parse(text: str, tools: Sequence[Tool]) -> tuple[str, tuple[ToolCall, ...]]:
    """The answer's content (the text before its first call) and its calls. A call that does not
    parse, names no declared tool or whose arguments break the tool's schema (possible only when
    generation stopped inside it) leaves the whole text as content.

    Small models asked in `auto` mode often answer with the call's JSON alone, bare or in a
    ```json block, instead of `<tool_call>` (Qwen2.5-Coder-0.5B does): an answer that is nothing
    but such calls, each of a declared tool with arguments valid for its schema, is taken too."""
    start = text.find(OPEN)
    if not tools:
        return text, ()
    if start < 0:
        bare = _bare_calls(text, tools)
        return ("", bare) if bare else (text, ())
    by_name = {t.name: t for t in tools}
    decoder = json.JSONDecoder()
    calls: list[ToolCall] = []
    at = start
    while at >= 0:
        body = at + len(OPEN)
        try:
            value, after = decoder.raw_decode(text, _skip_space(text, body))
        except ValueError:
            return text, ()
        call = _tool_call(value, by_name)
        if call is None:
            return text, ()
        calls.append(call)
        at = text.find(OPEN, after)
    return text[:start].rstrip(), tuple(calls)


_FENCED = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
# How an answer that is a bare call begins; HeldText holds such a start back until the end.
BARE_STARTS = ("{", "[", "```json", "```\n{", "```\n[")


def _bare_calls(text: str, tools: Sequence[Tool]) -> tuple[ToolCall, ...]:
    body = text.strip()
    fenced = _FENCED.match(body)
    try:
        value = json.loads(fenced.group(1) if fenced else body)
    except ValueError:
        return ()
    by_name = {t.name: t for t in tools}
    calls = []
    for item in value if isinstance(value, list) else [value]:
        call = _tool_call(item, by_name)
        if call is None:
            return ()
        calls.append(call)
    return tuple(calls)


def _tool_call(value: Any, by_name: dict[str, Tool]) -> ToolCall | None:
    """The call a decoded `{"name": …, "arguments": {…}}` makes: None unless it names a declared
    tool and its arguments are an object valid for the tool's schema."""
    tool = by_name.get(str(value.get("name"))) if isinstance(value, dict) else None
    arguments = value.get("arguments") if isinstance(value, dict) else None
    if tool is None or not isinstance(arguments, dict) or not validates(arguments, tool.parameters):
        return None
    return ToolCall(f"call_{secrets.token_hex(12)}", tool.name, arguments)


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


class HeldText:
    """A TextSink in front of another that holds back the text from the first `<tool_call>` on
    (and a tail that may be the start of one, and an answer that starts as a bare call's JSON), so
    that a stream carries only the content and the calls arrive parsed with the result.
    `release()` passes on what was held when no call came."""

    def __init__(self, sink: TextSink) -> None:
        self._sink = sink
        self._held = ""
        self._calling = False
        self._started = False  # some content went out: no bare call can follow

    def __call__(self, text: str) -> bool | None:
        if self._calling:
            self._held += text
            return None
        text = self._held + text
        if not self._started:
            begun = text.lstrip()
            if begun.startswith(BARE_STARTS):
                self._calling, self._held = True, text
                return None
            if not begun or any(start.startswith(begun) for start in BARE_STARTS):
                self._held = text
                return None
            self._started = True
        found = text.find(OPEN)
        if found >= 0:
            self._calling, self._held = True, text[found:]
            return self._sink(text[:found]) if found else None
        keep = held_tail(text, OPEN)
        self._held = text[len(text) - keep :] if keep else ""
        ready = text[: len(text) - keep]
        return self._sink(ready) if ready else None

    def release(self, calls: Sequence[ToolCall]) -> None:
        if self._held and not calls:
            self._sink(self._held)
        self._held = ""


def validate_tools(tools: Sequence[Tool], choice: ToolChoice) -> None:
    """Raise UserInputError naming the first tool field no model could be asked for: a name
    that is not 1 to 64 letters, digits, `_`, `.` or `-`, a repeated name, arguments whose schema is
    malformed or uses a keyword constrained decoding cannot enforce, or a tool_choice naming no
    declared tool (or `required` with no tools)."""
    if len(tools) > MAX_TOOLS:
        raise UserInputError(f"tools has {len(tools)} entries; at most {MAX_TOOLS} are allowed")
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        field = f"tools[{index}].function"
        if not isinstance(tool.name, str) or not _NAME.match(tool.name):
            raise UserInputError(f"{field}.name must be 1 to 64 letters, digits, '_', '.' or '-'")
        if tool.name in seen:
            raise UserInputError(f"{field}.name {tool.name!r} is declared twice")
        seen.add(tool.name)
        if not isinstance(tool.description, str):
            raise UserInputError(f"{field}.description must be a string")
        if not isinstance(tool.parameters, dict) or tool.parameters.get("type", "object") != "object":
            raise UserInputError(f"{field}.parameters must be a JSON schema of type object")
        check_schema(tool.parameters, f"{field}.parameters")
    if choice in ("auto", "none"):
        return
    if choice == "required":
        if not tools:
            raise UserInputError("tool_choice 'required' needs at least one tool in tools")
        return
    if not isinstance(choice, str) or choice not in seen:
        known = ", ".join(sorted(seen)) or "none declared"
        raise UserInputError(f"tool_choice names {choice!r}, which is not in tools ({known})")


def validate_tool_messages(messages: Sequence[Message]) -> None:
    """Raise UserInputError naming the first earlier tool call in `messages` a template could not
    render: each needs a function name and its arguments as a JSON object."""
    for index, message in enumerate(messages):
        calls = message.get("tool_calls")
        if calls is None:
            continue
        if not isinstance(calls, list):
            raise UserInputError(f"messages[{index}].tool_calls must be a list")
        for number, call in enumerate(calls):
            field = f"messages[{index}].tool_calls[{number}].function"
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise UserInputError(f"{field}.name must be a string")
            if not isinstance(function.get("arguments"), dict):
                raise UserInputError(f"{field}.arguments must be a JSON object")
