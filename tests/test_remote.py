"""The OpenAI-compatible adapter against a real third-party server: llama.cpp's own
(`llama_cpp.server`), started on 127.0.0.1 with the SmolLM2 GGUF."""

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from npu_engine.backends.remote import OpenAICompatibleBackend, ollama_base_url
from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.errors import NetworkError
from npu_engine.generation import SamplingOptions
from npu_engine.store import ModelStore
from npu_engine.targets import RemoteTarget
from npu_engine.wiring import OPENAI


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def llama_server(smollm_gguf: Path) -> Iterator[str]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(smollm_gguf),
        "--model_alias",
        "smollm2",
    ]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_threads", "2", "--n_ctx", "2048"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, "llama_cpp.server exited"
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "llama_cpp.server did not start in 120 s"
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(30)


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
