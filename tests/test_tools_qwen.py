"""Tool calls and structured output on the real coder models (Qwen2.5-Coder 0.5B and 1.5B, CPU,
embedded profile) with the official `openai` and `ollama` clients, unchanged, against a server on
127.0.0.1: a call of a declared tool with valid arguments, its result fed back and used, calls
streamed as OpenAI's deltas, `parse()` into a pydantic model, Ollama's tools and `format`."""

import json

import jsonschema_rs
import ollama
import openai
import pytest
from pydantic import BaseModel

from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.manifest import Manifest
from npu_engine.server.app import create_app
from npu_engine.server.config import ServerConfig
from npu_engine.store import ModelStore
from tests.conftest import RUN_TESTS_SCHEMA, WEATHER_SCHEMA
from tests.test_server import ServerThread

pytestmark = pytest.mark.slow

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": WEATHER_SCHEMA,
    },
}
RUN_TESTS = {
    "type": "function",
    "function": {
        "name": "run_tests",
        "description": "Run the project's test suite and report failures",
        "parameters": RUN_TESTS_SCHEMA,
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris right now?"}]


class Function(BaseModel):
    name: str
    arguments: list[str]
    returns: str


def _client(served: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)


def test_tool_call_then_its_result_is_used(qwen_served: ServerThread) -> None:
    client = _client(qwen_served)
    reply = client.chat.completions.create(
        model="code",
        messages=ASK,  # type: ignore[arg-type]
        tools=[WEATHER, RUN_TESTS],  # type: ignore[list-item]
        max_tokens=80,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    [call] = choice.message.tool_calls
    arguments = json.loads(call.function.arguments)
    assert call.function.name == "get_weather" and jsonschema_rs.is_valid(WEATHER_SCHEMA, arguments)
    assert arguments["city"].lower() == "paris"
    followed = client.chat.completions.create(
        model="code",
        messages=[
            *ASK,
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 31, "sky": "sunny"}'},
        ],  # type: ignore[list-item]
        tools=[WEATHER, RUN_TESTS],  # type: ignore[list-item]
        max_tokens=60,
    )
    answer = followed.choices[0].message.content or ""
    assert followed.choices[0].finish_reason == "stop" and "31" in answer


def test_streamed_tool_call_assembles_from_deltas(qwen_served: ServerThread) -> None:
    client = _client(qwen_served)
    chunks = list(
        client.chat.completions.create(
            model="code",
            messages=ASK,  # type: ignore[arg-type]
            tools=[WEATHER, RUN_TESTS],  # type: ignore[list-item]
            tool_choice="required",
            max_tokens=80,
            stream=True,
        )
    )
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for delta in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            found = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            found["id"] += delta.id or ""
            found["name"] += (delta.function.name or "") if delta.function else ""
            found["arguments"] += (delta.function.arguments or "") if delta.function else ""
    assert [c["name"] for c in calls.values()] == ["get_weather"]
    assert calls[0]["id"].startswith("call_")
    assert jsonschema_rs.is_valid(WEATHER_SCHEMA, json.loads(calls[0]["arguments"]))
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_parse_into_a_pydantic_model(qwen_served: ServerThread) -> None:
    parsed = _client(qwen_served).chat.completions.parse(
        model="code",
        messages=[{"role": "user", "content": "Describe the Python function `def add(a, b): return a + b`."}],
        response_format=Function,
        max_tokens=80,
    )
    function = parsed.choices[0].message.parsed
    assert function is not None and function.name == "add" and function.arguments == ["a", "b"]


def test_ollama_tools_and_format(qwen_served: ServerThread) -> None:
    client = ollama.Client(host=qwen_served.url)
    reply = client.chat(model="code", messages=ASK, tools=[WEATHER, RUN_TESTS], options={"num_predict": 80})
    [call] = reply.message.tool_calls or []
    assert call.function.name == "get_weather"
    assert jsonschema_rs.is_valid(WEATHER_SCHEMA, dict(call.function.arguments))
    shaped = client.chat(
        model="code",
        messages=[{"role": "user", "content": "Describe the Python function `def add(a, b): return a + b`."}],
        format=Function.model_json_schema(),
        options={"num_predict": 80},
    )
    assert Function.model_validate_json(shaped.message.content or "").name == "add"


def test_large_tier_tool_call(cache_store: ModelStore, qwen_large_cpu: Manifest) -> None:
    engine = Engine.from_settings(
        store=cache_store, profile="embedded", inventory=discover(), remotes=(), measurements=[]
    )
    with ServerThread(create_app(engine, ServerConfig())) as server:
        reply = _client(server).chat.completions.create(
            model="large",
            messages=ASK,  # type: ignore[arg-type]
            tools=[WEATHER, RUN_TESTS],  # type: ignore[list-item]
            max_tokens=80,
        )
    [call] = reply.choices[0].message.tool_calls or []
    assert reply.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert jsonschema_rs.is_valid(WEATHER_SCHEMA, json.loads(call.function.arguments))
    assert reply.model == "large" and engine.loaded()[0][0] == qwen_large_cpu.name
