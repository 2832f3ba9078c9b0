"""Real tools, unchanged, against a real server on Qwen2.5-Coder-0.5B: aider over both of its
providers (`openai/` and `ollama_chat/`, whole-file edits) makes a correct edit, and learns the
context window (over the OpenAI API from `.aider.model.metadata.json`, over Ollama from /api/show);
litellm's `ollama/`, `ollama_chat/` and `openai/` providers complete and stream.

aider-chat pins many packages, so it lives in its own venv under build/ (made the first time, then
reused), never in the project's; litellm comes with it."""

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from npu_engine.convert import ConvertRequest
from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.manifest import Manifest
from npu_engine.server.app import create_app
from npu_engine.server.config import ServerConfig
from npu_engine.store import ModelStore
from tests.conftest import RUN_TESTS_SCHEMA, WEATHER_SCHEMA, make_converter
from tests.test_server import ServerThread

pytestmark = pytest.mark.slow

QWEN = "qwen2.5-coder-0.5b-instruct"
SOURCE = 'def hello(name):\n    return "Hello, " + name\n'


@pytest.fixture(scope="module")
def qwen_server(cache_store: ModelStore) -> Iterator[ServerThread]:
    manifest: Manifest = (
        make_converter(cache_store).convert(ConvertRequest(source=f"pkg:{QWEN}", device="cpu")).manifest
    )
    assert manifest.model == QWEN
    engine = Engine.from_settings(store=cache_store, profile="embedded", inventory=discover(), remotes=())
    with ServerThread(create_app(engine, ServerConfig())) as server:
        yield server


def run_aider(python: Path, folder: Path, model: str, env: dict[str, str]) -> str:
    """aider, non-interactive and offline, asked to rename a function in greet.py; its output."""
    aider = python.parent / "aider"
    home = folder / "home"
    home.mkdir(exist_ok=True)
    command = [
        str(aider),
        "--model", model,
        "--edit-format", "whole",
        "--yes-always", "--no-git", "--no-auto-commits", "--no-check-update", "--no-analytics",
        "--no-show-release-notes", "--no-pretty", "--no-stream", "--no-fancy-input",
        "--no-detect-urls", "--no-suggest-shell-commands", "--map-tokens", "0",
        "--message", "Rename the function hello to greet. Change nothing else.",
        "greet.py",
    ]  # fmt: skip
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "OLLAMA", "ANTHROPIC"))}
    done = subprocess.run(
        command,
        cwd=folder,
        env={**clean, "HOME": str(home), "AIDER_ANALYTICS_DISABLE": "true", **env},
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def assert_renamed(folder: Path, output: str) -> None:
    edited = (folder / "greet.py").read_text()
    namespace: dict[str, object] = {}
    exec(compile(edited, "greet.py", "exec"), namespace)
    assert "hello" not in namespace and callable(namespace["greet"]), (edited, output)
    assert namespace["greet"]("Ada") == "Hello, Ada", edited  # type: ignore[operator]


def test_aider_over_the_openai_api_edits_and_knows_the_context(
    clients_python: Path, qwen_server: ServerThread, tmp_path: Path
) -> None:
    (tmp_path / "greet.py").write_text(SOURCE)
    # What the README tells aider users to write: litellm has no way to ask an OpenAI-compatible
    # server for its context, so without this file aider warns "Unknown context window size".
    metadata = {
        "openai/code": {
            "max_input_tokens": 8192,
            "max_output_tokens": 4096,
            "input_cost_per_token": 0,
            "output_cost_per_token": 0,
            "litellm_provider": "openai",
            "mode": "chat",
        }
    }
    (tmp_path / ".aider.model.metadata.json").write_text(json.dumps(metadata))
    env = {"OPENAI_API_BASE": f"{qwen_server.url}/v1", "OPENAI_API_KEY": "unused"}
    output = run_aider(clients_python, tmp_path, "openai/code", env)
    assert "Unknown context window size" not in output, output
    assert_renamed(tmp_path, output)


def test_aider_over_the_ollama_api_edits_and_knows_the_context(
    clients_python: Path, qwen_server: ServerThread, tmp_path: Path
) -> None:
    """litellm's ollama_chat/ provider sends its JSON without a Content-Type and reads the
    context from /api/show's model_info."""
    (tmp_path / "greet.py").write_text(SOURCE)
    output = run_aider(clients_python, tmp_path, "ollama_chat/code", {"OLLAMA_API_BASE": qwen_server.url})
    assert "Unknown context window size" not in output, output
    assert_renamed(tmp_path, output)


LITELLM_SCRIPT = """
import json, sys
import litellm
url = sys.argv[1]
found = {}
for provider, base in (("ollama", url), ("ollama_chat", url), ("openai", url + "/v1")):
    model = provider + "/code"
    messages = [{"role": "user", "content": "Write a Python function that adds two numbers."}]
    keys = {"api_base": base, "max_tokens": 24, "temperature": 0}
    if provider == "openai":
        keys["api_key"] = "unused"
    whole = litellm.completion(model=model, messages=messages, **keys)
    pieces = [
        chunk.choices[0].delta.content or ""
        for chunk in litellm.completion(model=model, messages=messages, stream=True, **keys)
        if chunk.choices
    ]
    found[provider] = {
        "text": whole.choices[0].message.content,
        "streamed": "".join(pieces),
        "completion_tokens": whole.usage.completion_tokens,
        "max_input_tokens": litellm.get_model_info(model).get("max_input_tokens")
        if provider != "openai" else None,
    }
print(json.dumps(found))
"""


def test_litellm_providers_complete_and_stream(clients_python: Path, qwen_server: ServerThread) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "OLLAMA"))}
    done = subprocess.run(
        [str(clients_python), "-c", LITELLM_SCRIPT, qwen_server.url],
        env={**clean, "OLLAMA_API_BASE": qwen_server.url, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(found) == {"ollama", "ollama_chat", "openai"}
    for provider, answer in found.items():
        assert "def " in answer["text"] and answer["completion_tokens"] > 0, (provider, answer)
        assert answer["streamed"] == answer["text"], provider  # greedy: the same answer streamed
    assert found["ollama"]["max_input_tokens"] == found["ollama_chat"]["max_input_tokens"] == 8192


WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "input_schema": WEATHER_SCHEMA,
}
RUN_TESTS = {
    "name": "run_tests",
    "description": "Run the project's test suite and report failures",
    "input_schema": RUN_TESTS_SCHEMA,
}


def test_anthropic_tool_use_round_trip(qwen_server: ServerThread) -> None:
    """The official `anthropic` client: a tool_use with valid input, the same call streamed (as
    input_json_delta), and the tool_result fed back and used (the 0.5B may quote it rather than
    put it in a sentence: the figure is only in the result). The calls themselves are made and
    parsed by the engine's tool calling (GenerationResult.tool_calls)."""
    client = anthropic.Anthropic(base_url=qwen_server.url, api_key="unused", max_retries=0, timeout=300)
    asked = [{"role": "user", "content": "What is the weather in Paris right now?"}]
    keys: dict[str, Any] = {
        "model": "code",
        "max_tokens": 80,
        "tools": [WEATHER, RUN_TESTS],
        "messages": asked,
    }
    first = client.messages.create(**keys, tool_choice={"type": "any"})
    assert first.stop_reason == "tool_use", first
    calls = [block for block in first.content if block.type == "tool_use"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    arguments: dict[str, Any] = calls[0].input  # type: ignore[assignment]
    assert set(arguments) <= {"city", "unit"} and arguments["city"].lower() == "paris"
    assert arguments.get("unit", "celsius") in ("celsius", "fahrenheit")
    with client.messages.stream(**keys, tool_choice={"type": "any"}) as stream:
        streamed = stream.get_final_message()
    assert streamed.stop_reason == "tool_use"
    assert [(b.name, b.input) for b in streamed.content if b.type == "tool_use"] == [
        ("get_weather", arguments)
    ]
    result = {
        "type": "tool_result",
        "tool_use_id": calls[0].id,
        "content": '{"temperature_c": 31, "sky": "sunny"}',
    }
    history = [
        *asked,
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {"role": "user", "content": [result]},
    ]
    answer = client.messages.create(**{**keys, "messages": history})
    assert answer.stop_reason in ("end_turn", "max_tokens")
    text = "".join(block.text for block in answer.content if block.type == "text")
    assert "31" in text, text


def test_copilot_sees_the_coder_models_capabilities(qwen_server: ServerThread) -> None:
    """On the embedded profile's Qwen2.5-Coder, /api/show says what Copilot and Continue look for:
    a positive context under the architecture's key, tools, and insert (fill-in-the-middle)."""
    with httpx.Client(base_url=qwen_server.url, timeout=60) as http:
        shown = http.post("/api/show", json={"model": "code"}).json()
    info = shown["model_info"]
    assert (
        info["general.architecture"] == "qwen2" and info["general.basename"] == "Qwen2.5-Coder-0.5B-Instruct"
    )
    assert info["qwen2.context_length"] == 8192 and info["npu_engine.model_context_length"] == 32768
    assert info["qwen2.embedding_length"] == 896
    assert shown["capabilities"] == ["completion", "tools", "insert"]
