"""The wire shapes of tool calling and structured output in the OpenAI and Ollama APIs (`tools`,
`tool_choice`, `tool_calls` in messages, `response_format`, Ollama's `format`), and their mapping
onto the engine's types (Tool, ToolChoice, ToolCall, ResponseFormat)."""

import json
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from npu_engine.errors import UserInputError
from npu_engine.generation import Message
from npu_engine.response_format import ResponseFormat
from npu_engine.tools import Tool, ToolCall, ToolChoice


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class FunctionSpec(_Wire):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolSpec(_Wire):
    type: Literal["function"] = "function"
    function: FunctionSpec


class NamedFunction(_Wire):
    name: str = Field(min_length=1, max_length=64)


class NamedToolChoice(_Wire):
    type: Literal["function"] = "function"
    function: NamedFunction


OpenAIToolChoice = Literal["auto", "none", "required"] | NamedToolChoice


class CalledFunction(_Wire):
    name: str
    arguments: str  # OpenAI: a JSON text


class OpenAIToolCall(_Wire):
    id: str = ""
    type: Literal["function"] = "function"
    function: CalledFunction


class OllamaCalledFunction(_Wire):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)  # Ollama: an object


class OllamaToolCall(_Wire):
    function: OllamaCalledFunction


class JsonSchemaSpec(_Wire):
    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)
    name: str = Field(default="", max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormatSpec(_Wire):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None


def tools_of(specs: Sequence[ToolSpec] | None) -> tuple[Tool, ...]:
    return tuple(
        Tool(
            s.function.name,
            s.function.description or "",
            s.function.parameters
            if s.function.parameters is not None
            else {"type": "object", "properties": {}},
        )
        for s in specs or ()
    )


def tool_choice_of(choice: OpenAIToolChoice | None) -> ToolChoice:
    if choice is None:
        return "auto"
    if isinstance(choice, NamedToolChoice):
        return choice.function.name
    return choice


def response_format_of(spec: ResponseFormatSpec | None) -> ResponseFormat | None:
    if spec is None or spec.type == "text":
        return None
    if spec.type == "json_object":
        return ResponseFormat("json_object")
    if spec.json_schema is None:
        raise UserInputError("response_format.json_schema is required for type json_schema")
    j = spec.json_schema
    return ResponseFormat("json_schema", j.schema_, j.name, bool(j.strict))


def ollama_format_of(value: str | dict[str, Any] | None) -> ResponseFormat | None:
    """Ollama's `format`: "" or none, "json" (any JSON object) or a JSON schema."""
    if value is None or value == "":
        return None
    if value == "json":
        return ResponseFormat("json_object", field="format")
    if isinstance(value, dict):
        return ResponseFormat("json_schema", value, field="format")
    raise UserInputError('format must be "json" or a JSON schema object')


def openai_calls(index: int, calls: Sequence[OpenAIToolCall]) -> list[dict[str, Any]]:
    """An assistant message's earlier calls as the engine's messages carry them (arguments as
    objects); UserInputError naming the call whose arguments are no JSON object."""
    found = []
    for number, call in enumerate(calls):
        try:
            arguments = json.loads(call.function.arguments or "{}")
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            raise UserInputError(
                f"messages[{index}].tool_calls[{number}].function.arguments must be a JSON object text"
            )
        found.append(
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.function.name, "arguments": arguments},
            }
        )
    return found


def ollama_calls(calls: Sequence[OllamaToolCall]) -> list[dict[str, Any]]:
    return [
        {
            "id": "",
            "type": "function",
            "function": {"name": c.function.name, "arguments": c.function.arguments},
        }
        for c in calls
    ]


def with_calls(message: Message, calls: list[dict[str, Any]] | None) -> Message:
    return {**message, "tool_calls": calls} if calls else message


def openai_call(call: ToolCall, index: int | None = None) -> dict[str, Any]:
    """A call as OpenAI's message (or, with `index`, its first stream delta) carries it."""
    body: dict[str, Any] = {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
    }
    return body if index is None else {"index": index, **body}


def ollama_call(call: ToolCall) -> dict[str, Any]:
    return {"function": {"name": call.name, "arguments": call.arguments}}
