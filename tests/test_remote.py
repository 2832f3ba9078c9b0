"""The OpenAI-compatible adapter against a real third-party server: llama.cpp's own
(`llama_cpp.server`), started on 127.0.0.1 with the SmolLM2 GGUF."""

from pathlib import Path

import pytest

from npu_engine.backends.remote import OpenAICompatibleBackend, ollama_base_url
from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.errors import NetworkError
from npu_engine.generation import SamplingOptions
from npu_engine.store import ModelStore
from npu_engine.targets import RemoteTarget
from npu_engine.wiring import OPENAI
from tests.conftest import free_port


def test_openai_adapter_streams_from_llama_cpp(llama_server: str) -> None:
    pieces: list[str] = []
    backend = OpenAICompatibleBackend(llama_server)
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    raw = backend.generate("smollm2", messages, SamplingOptions(max_new_tokens=16), pieces.append)
    assert raw.text == "".join(pieces) and "Paris" in raw.text
    # llama.cpp's server sends no usage in streams: the adapter counts the streamed pieces.
    assert raw.metrics.output_tokens == len(pieces)
    assert raw.finish_reason in ("stop", "length") and raw.metrics.ttft_ms > 0


def test_engine_falls_back_to_the_openai_server(llama_server: str, tmp_path: Path) -> None:
    remotes = [RemoteTarget(OPENAI, OpenAICompatibleBackend(llama_server + "/v1"), lambda _model: "smollm2")]
    engine = Engine.from_settings(
        store=ModelStore(tmp_path), profile="tiny", inventory=discover(), remotes=remotes
    )
    result = engine.generate("Write a haiku about code.", tier="code", max_new_tokens=24)
    assert (result.device, result.model) == ("openai", "openai:smollm2")
    assert result.text.strip() and result.metrics.output_tokens > 0
    assert [step.target for step in result.fallback] == ["CPU"]


def test_openai_adapter_errors_name_the_endpoint(llama_server: str) -> None:
    port = free_port()
    with pytest.raises(NetworkError, match=f"cannot reach http://127.0.0.1:{port}/v1/chat/completions"):
        OpenAICompatibleBackend(f"http://127.0.0.1:{port}").generate("m", [], SamplingOptions())
    with pytest.raises(NetworkError, match="answered 404"):
        OpenAICompatibleBackend(llama_server + "/nothing").generate("smollm2", [], SamplingOptions())


@pytest.mark.parametrize(
    ("host", "url"),
    [
        (None, "http://127.0.0.1:11434"),
        ("", "http://127.0.0.1:11434"),
        ("0.0.0.0", "http://0.0.0.0:11434"),
        ("example.lan:8080", "http://example.lan:8080"),
        ("https://ollama.example.com", "https://ollama.example.com:443"),
        ("http://ollama.example.com", "http://ollama.example.com:80"),
        ("http://127.0.0.1:11434/", "http://127.0.0.1:11434"),
        ("[::1]:11500", "http://[::1]:11500"),
    ],
)
def test_ollama_host_forms(host: str | None, url: str) -> None:
    assert ollama_base_url(host) == url
