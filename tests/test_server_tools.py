"""Tool calls and structured output over HTTP on real IR (SmolLM2): the official `openai` and
`ollama` clients, unchanged, against a server on 127.0.0.1. Constrained decoding makes even a 135M
model's forced call parse and validate; bad tools and schemas are 400s naming the field."""

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema_rs
import ollama
import openai
import pytest

from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.manifest import Manifest
from npu_engine.server.app import create_app
from npu_engine.server.config import ServerConfig
from npu_engine.store import ModelStore
from tests.test_server import ServerThread

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 40}},
    "required": ["city"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "The weather in a city", "parameters": WEATHER_SCHEMA},
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
CAT = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def served(cache_store: ModelStore, smollm_cpu: Manifest) -> Iterator[ServerThread]:
    engine = Engine.from_settings(store=cache_store, profile="tiny", inventory=discover(), remotes=())
    with ServerThread(create_app(engine, ServerConfig())) as server:
        yield server


def test_forced_tool_call_is_a_valid_call(served: ServerThread) -> None:
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)
    plain = client.chat.completions.create(model="code", messages=ASK, max_tokens=40)  # type: ignore[arg-type]
    reply = client.chat.completions.create(
        model="code",
        messages=ASK,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
        max_tokens=40,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    assert jsonschema_rs.is_valid(WEATHER_SCHEMA, json.loads(call.function.arguments))
    # The tools reached the model: its prompt grew by their declaration.
    assert reply.usage is not None and plain.usage is not None
    assert reply.usage.prompt_tokens > plain.usage.prompt_tokens + 50
    # tool_choice none: no tools in the prompt, nothing enforced: the plain answer.
    none = client.chat.completions.create(
        model="code",
        messages=ASK,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
        max_tokens=40,
    )
    assert none.usage is not None and none.usage.prompt_tokens == plain.usage.prompt_tokens
    assert none.choices[0].message.content == plain.choices[0].message.content
    assert not none.choices[0].message.tool_calls
    streamed = list(
        client.chat.completions.create(
            model="code",
            messages=ASK,  # type: ignore[arg-type]
            tools=[WEATHER],  # type: ignore[list-item]
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            parallel_tool_calls=False,
            max_tokens=40,
            stream=True,
        )
    )
    deltas = [d for c in streamed for d in (c.choices[0].delta.tool_calls or []) if c.choices]
    assert deltas[0].id and deltas[0].function and deltas[0].function.name == "get_weather"
    arguments = "".join(d.function.arguments or "" for d in deltas if d.function)
    assert json.loads(arguments) == json.loads(call.function.arguments)  # greedy: the same call
    assert streamed[-1].choices[0].finish_reason == "tool_calls"
    assert not "".join(c.choices[0].delta.content or "" for c in streamed if c.choices).strip()


def test_response_format_json_schema_validates(served: ServerThread) -> None:
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(
        model="code",
        messages=[{"role": "user", "content": "Describe a cat as JSON."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "cat", "schema": CAT, "strict": True},
        },
        max_tokens=60,
    )
    assert jsonschema_rs.is_valid(CAT, json.loads(reply.choices[0].message.content or ""))
    shaped = ollama.Client(host=served.url).chat(
        model="code",
        messages=[{"role": "user", "content": "Describe a cat as JSON."}],
        format=CAT,
        options={"num_predict": 60},
    )
    assert jsonschema_rs.is_valid(CAT, json.loads(shaped.message.content or ""))
    anything = ollama.Client(host=served.url).generate(
        model="code",
        prompt='Answer with the JSON object {"ok": true}.',
        format="json",
        options={"num_predict": 30},
    )
    assert isinstance(json.loads(anything.response), dict)


def test_ollama_forced_tools_by_schema(served: ServerThread) -> None:
    """Ollama has no tool_choice: a call comes when the model starts one; SmolLM2 then completes
    it within the schema, and the stream carries it before the last line."""
    client = ollama.Client(host=served.url)
    ask = [
        {"role": "system", "content": "Always answer by calling a tool."},
        {"role": "user", "content": "What is the weather in Paris?"},
    ]
    reply = client.chat(model="code", messages=ask, tools=[WEATHER], options={"num_predict": 60})
    for call in reply.message.tool_calls or []:
        assert call.function.name == "get_weather"
        assert jsonschema_rs.is_valid(WEATHER_SCHEMA, dict(call.function.arguments))
    streamed = list(
        client.chat(model="code", messages=ask, tools=[WEATHER], options={"num_predict": 60}, stream=True)
    )
    calls = [c for part in streamed for c in (part.message.tool_calls or [])]
    assert [c.function.name for c in calls] == [c.function.name for c in reply.message.tool_calls or []]
    assert streamed[-1].done


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "strnig"}}}]},
            "tools[0].function.parameters",
        ),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "x",
                        "schema": {
                            "type": "object",
                            "properties": {"n": {"type": "integer", "multipleOf": 3}},
                        },
                    },
                }
            },
            "multipleOf",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format.json_schema",
        ),
        ({"response_format": {"type": "yaml"}}, "response_format"),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
                        ],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
    ],
)
def test_bad_tools_and_schemas_are_400s_naming_the_field(
    served: ServerThread, body: dict[str, Any], named: str
) -> None:
    sent = {"model": "code", "messages": ASK, "max_tokens": 4, **body}
    answer = httpx.post(f"{served.url}/v1/chat/completions", json=sent, timeout=60)
    assert answer.status_code == 400, answer.text
    assert named in answer.text


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"format": {"type": "object", "patternProperties": {"^x": {"not": {}}}}}, "format"),
        ({"format": "yaml"}, "format"),
        (
            {"format": {"type": "object", "properties": {"a": {"type": "string", "pattern": "^(?!x)"}}}},
            "format.properties.a.pattern",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "f", "parameters": {"type": "object", "required": "city"}},
                    }
                ]
            },
            "tools[0].function.parameters",
        ),
    ],
)
def test_ollama_bad_format_and_tools_are_400s(served: ServerThread, body: dict[str, Any], named: str) -> None:
    sent = {"model": "code", "messages": ASK, "stream": False, "options": {"num_predict": 4}, **body}
    answer = httpx.post(f"{served.url}/api/chat", json=sent, timeout=60)
    assert answer.status_code == 400, answer.text
    assert named in answer.json()["error"]


def test_tools_that_do_not_fit_the_context_are_a_400_with_the_counts(served: ServerThread) -> None:
    """The declarations are part of the prompt: tools past the tier's context are refused as a
    prompt that long would be, with its token count, before generating."""
    bulky = {**WEATHER, "function": {**WEATHER["function"], "description": "weather " * 9000}}  # type: ignore[dict-item]
    sent = {"model": "code", "messages": ASK, "max_tokens": 4, "tools": [bulky]}
    answer = httpx.post(f"{served.url}/v1/chat/completions", json=sent, timeout=60)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["type"] == "context_length_exceeded" and "8192" in answer.text
