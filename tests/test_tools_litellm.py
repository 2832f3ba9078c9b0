"""litellm's `openai/`, `ollama_chat/` and `ollama/` providers, unchanged, against the server on
Qwen2.5-Coder-0.5B: tools give a call with valid arguments, `response_format` a JSON answer that
validates. litellm pins its own dependencies, so it runs in the clients' virtual environment
(build/clients-venv), as a client would: in another process."""

import json
import subprocess
from pathlib import Path

import jsonschema_rs
import pytest

from tests.test_server import ServerThread

pytestmark = pytest.mark.slow

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
FUNCTION_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "arguments": {"type": "array", "items": {"type": "string"}}},
    "required": ["name", "arguments"],
    "additionalProperties": False,
}
SCRIPT = """
import json, sys
import litellm
model, base = sys.argv[1], sys.argv[2]
weather, function = json.loads(sys.argv[3]), json.loads(sys.argv[4])
tool = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city", "parameters": weather,
}}
called = litellm.completion(
    model=model, api_base=base, api_key="unused", max_tokens=80,
    messages=[{"role": "user", "content": "What is the weather in Paris right now?"}], tools=[tool],
)
shaped = litellm.completion(
    model=model, api_base=base, api_key="unused", max_tokens=80,
    messages=[{"role": "user", "content": "Describe the Python function `def add(a, b): return a + b`."}],
    response_format={
        "type": "json_schema", "json_schema": {"name": "function", "schema": function, "strict": True},
    },
)
choice = called.choices[0]
print(json.dumps({
    "finish": choice.finish_reason,
    "calls": [[c.function.name, c.function.arguments] for c in choice.message.tool_calls or []],
    "json": shaped.choices[0].message.content,
}))
"""


@pytest.mark.parametrize(
    ("model", "path"), [("openai/code", "/v1"), ("ollama_chat/code", ""), ("ollama/code", "")]
)
def test_litellm_provider_tools_and_json(
    qwen_served: ServerThread, clients_python: Path, model: str, path: str
) -> None:
    ran = subprocess.run(
        [
            str(clients_python),
            "-c",
            SCRIPT,
            model,
            qwen_served.url + path,
            json.dumps(WEATHER_SCHEMA),
            json.dumps(FUNCTION_SCHEMA),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    found = json.loads(ran.stdout.strip().splitlines()[-1])
    assert found["finish"] == "tool_calls"
    [[name, arguments]] = found["calls"]
    assert name == "get_weather" and jsonschema_rs.is_valid(WEATHER_SCHEMA, json.loads(arguments))
    described = json.loads(found["json"])
    assert jsonschema_rs.is_valid(FUNCTION_SCHEMA, described) and described["name"] == "add"
