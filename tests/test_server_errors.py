"""Requests the runtime would reject are the client's mistake (400 naming the field), never a
device failure that takes the model out of service; and no error body carries a library's path.
Real SmolLM2 IR behind a real server on 127.0.0.1."""

import json
import os
from pathlib import Path

import httpx
import pytest

from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.errors import UserInputError
from npu_engine.generation import SamplingOptions
from npu_engine.manifest import Manifest
from npu_engine.server.app import create_app
from npu_engine.store import ModelStore
from tests.test_server import HELLO, ServerThread


def post(server: ServerThread, path: str, body: dict[str, object]) -> httpx.Response:
    # json.dumps escapes a lone surrogate as \ud800: valid JSON that a client may well send.
    content = json.dumps(body)
    headers = {"Content-Type": "application/json"}
    return httpx.post(f"{server.url}{path}", content=content, headers=headers, timeout=120)


def openai_chat(**fields: object) -> tuple[str, dict[str, object]]:
    return "/v1/chat/completions", {"model": "code", "messages": HELLO, "max_tokens": 2, **fields}


def ollama_chat(**options: object) -> tuple[str, dict[str, object]]:
    return "/api/chat", {
        "model": "code",
        "messages": HELLO,
        "stream": False,
        "options": {"num_predict": 2, **options},
    }


def surrogate(path: str, stream: bool) -> tuple[str, dict[str, object]]:
    messages = [{"role": "user", "content": "hi \ud800 there"}]
    return path, {"model": "code", "messages": messages, "max_tokens": 2, "stream": stream}


HOSTILE = [
    ("openai temperature", openai_chat(temperature=1e-300), "temperature"),
    ("openai top_p", openai_chat(top_p=1e-300, temperature=0.7), "top_p"),
    ("openai surrogate", surrogate("/v1/chat/completions", False), "messages[0].content"),
    ("openai streamed surrogate", surrogate("/v1/chat/completions", True), "messages[0].content"),
    ("openai 50,000 stops", openai_chat(stop=[f"s{i}" for i in range(50_000)]), "stop"),
    ("ollama temperature", ollama_chat(temperature=1e-300), "temperature"),
    ("ollama top_p", ollama_chat(top_p=1e-300, temperature=0.7), "top_p"),
    ("ollama surrogate", surrogate("/api/chat", False), "messages[0].content"),
    ("ollama streamed surrogate", surrogate("/api/chat", True), "messages[0].content"),
    ("ollama 50,000 stops", ollama_chat(stop=[f"s{i}" for i in range(50_000)]), "stop"),
]


@pytest.mark.parametrize(("case", "request_", "field"), HOSTILE, ids=[case for case, _, _ in HOSTILE])
def test_a_value_the_runtime_rejects_is_a_400_and_no_device_is_marked_failed(
    served: ServerThread, engine: Engine, case: str, request_: tuple[str, dict[str, object]], field: str
) -> None:
    path, body = request_
    refused = post(served, path, body)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    message = error["message"] if isinstance(error, dict) else error
    assert message.startswith(field), message
    assert "/" not in message
    # Right after: every tier on that model still answers (nothing was marked failed).
    for tier in engine.tiers():
        answer = post(served, "/v1/chat/completions", {"model": tier, "messages": HELLO, "max_tokens": 2})
        assert answer.status_code == 200, (tier, answer.text)
        assert answer.json()["npu_engine"]["device"] == "CPU"


def test_the_backend_checks_sampling_options_with_openvinos_own_validation() -> None:
    import openvino_genai

    from npu_engine.backends.genai_config import generation_config

    unchecked = SamplingOptions(max_new_tokens=4, temperature=1e-300)  # never validate()d
    with pytest.raises(UserInputError) as refused:
        generation_config(openvino_genai, unchecked, "plain")
    assert "emperature" in str(refused.value) and ".cpp" not in str(refused.value)
    for mode in ("plain", "speculative", "prompt_lookup"):
        sampled = SamplingOptions(max_new_tokens=4, temperature=0.7, top_p=0.9, stop=("\n\n",), seed=1)
        generation_config(openvino_genai, sampled, mode)  # type: ignore[arg-type]


def test_a_model_that_fails_to_load_answers_503_without_any_path(
    cache_store: ModelStore, smollm_cpu: Manifest, tmp_path: Path
) -> None:
    """A real OpenVINO failure (a corrupt IR): the device is marked failed, as it should be, and
    the 503 says so in a sentence, without OpenVINO's source paths or the store's."""
    home = tmp_path / "home"
    broken = home / "models" / smollm_cpu.name
    broken.mkdir(parents=True)
    for item in cache_store.path(smollm_cpu.name).iterdir():
        if item.name == "openvino_model.xml":
            text = item.read_text()
            (broken / item.name).write_text(text[: len(text) // 2])  # the IR cut in half
        else:
            os.symlink(item, broken / item.name)
    engine = Engine.from_settings(store=ModelStore(home), profile="tiny", inventory=discover(), remotes=())
    with ServerThread(create_app(engine)) as server:
        for path, body in (openai_chat(), ollama_chat()):
            failed = post(server, path, body)
            assert failed.status_code == 503, failed.text
            text = failed.text
            assert "CPU" in text and str(tmp_path) not in text and ".cpp" not in text, text
            assert "/home/" not in text and "src/" not in text, text
