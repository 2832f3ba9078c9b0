"""Fallback adapters to models served over HTTP: Ollama's native API and any OpenAI-compatible
`/v1/chat/completions` endpoint (OpenVINO Model Server, vLLM, llama.cpp's server, a cloud API).

The HTTP client is passed in, so tests can point it anywhere; both stream and time the first token.
"""

import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from npu_engine.errors import NetworkError
from npu_engine.generation import GenerationMetrics, Message, RawGeneration, SamplingOptions, TextSink


def ollama_base_url(host: str | None) -> str:
    """`OLLAMA_HOST` read as Ollama reads it: `host[:port]` is http on port 11434 by default, an
    explicit `http://` or `https://` defaults to port 80 or 443, and nothing means 127.0.0.1:11434."""
    value = (host or "").strip()
    scheme, found, hostport = value.partition("://")
    if not found:
        scheme, hostport, port = "http", value, "11434"
    else:
        port = "443" if scheme == "https" else "80"
    hostport = hostport.rstrip("/")
    if hostport.startswith("["):  # an IPv6 literal, with or without a port
        literal, _, rest = hostport.partition("]")
        given = rest[1:] if rest.startswith(":") and rest[1:].isdigit() else port
        return f"{scheme}://{literal}]:{given}"
    name, colon, given = hostport.rpartition(":")
    if colon and given.isdigit() and ":" not in name:
        return f"{scheme}://{name or '127.0.0.1'}:{given}"
    return f"{scheme}://{hostport or '127.0.0.1'}:{port}"


def _sampling(options: SamplingOptions) -> dict[str, Any]:
    """The sampling fields Ollama's options and OpenAI's request body name alike."""
    fields: dict[str, Any] = {"temperature": options.temperature, "top_p": options.top_p}
    if options.stop:
        fields["stop"] = list(options.stop)
    if options.seed is not None:
        fields["seed"] = options.seed
    return fields


class _Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: float | None = None
        self.pieces = 0

    def saw_text(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        self.pieces += 1

    def ttft_ms(self) -> float:
        return 1000 * ((self.first or time.perf_counter()) - self.start)

    def decode_seconds(self) -> float:
        return time.perf_counter() - (self.first or self.start)

    def result(
        self, parts: list[str], input_tokens: int, output_tokens: int, decode_seconds: float, reason: str
    ) -> RawGeneration:
        """The RawGeneration of a streamed answer, timed by this timer unless the server timed it."""
        metrics = GenerationMetrics(
            ttft_ms=self.ttft_ms(),
            tpot_ms=1000 * decode_seconds / max(output_tokens, 1),
            tokens_per_second=output_tokens / decode_seconds if decode_seconds > 0 else 0.0,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )
        return RawGeneration("".join(parts), reason, metrics)


def _error_text(response: httpx.Response) -> str:
    try:
        body = json.loads(response.read())
        message = body.get("error")
        if isinstance(message, dict):
            message = message.get("message")
        return str(message or body)
    except ValueError:
        return response.text[:200]


class OllamaBackend:
    """Ollama's `/api/chat`, streamed as NDJSON."""

    name = "ollama"

    def __init__(self, base_url: str, client: httpx.Client | None = None, timeout: float = 600.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = client or httpx.Client(timeout=httpx.Timeout(timeout, connect=5.0))

    def generate(
        self,
        model: str,
        messages: Sequence[Message],
        options: SamplingOptions,
        on_text: TextSink | None = None,
    ) -> RawGeneration:
        body: dict[str, Any] = {
            "model": model,
            "messages": list(messages),
            "stream": True,
            "options": {"num_predict": options.max_new_tokens, **_sampling(options)},
        }
        timer, parts, final = _Timer(), [], {}
        for line in self._lines("/api/chat", body):
            chunk = json.loads(line)
            if "error" in chunk:
                raise NetworkError(f"Ollama at {self.base_url} failed: {chunk['error']}")
            text = chunk.get("message", {}).get("content", "")
            if text:
                timer.saw_text()
                parts.append(text)
                if on_text is not None and on_text(text):
                    break
            if chunk.get("done"):
                final = chunk
                break
        reason = str(final.get("done_reason", "stop")) if final else "cancelled"
        return timer.result(
            parts,
            input_tokens=int(final.get("prompt_eval_count", 0)),
            output_tokens=int(final.get("eval_count", timer.pieces)),
            decode_seconds=float(final.get("eval_duration", 0)) / 1e9 or timer.decode_seconds(),
            reason=reason,
        )

    def _lines(self, path: str, body: dict[str, Any]) -> Iterator[str]:
        url = self.base_url + path
        try:
            with self._client.stream("POST", url, json=body) as response:
                if response.status_code != 200:
                    raise NetworkError(
                        f"Ollama at {self.base_url} answered {response.status_code}: {_error_text(response)}"
                    )
                for line in response.iter_lines():
                    if line.strip():
                        yield line
        except httpx.TransportError as error:
            raise NetworkError(
                f"cannot reach Ollama at {self.base_url}: {error or type(error).__name__}"
            ) from None


class OpenAICompatibleBackend:
    """Any `/v1/chat/completions` endpoint, streamed as server-sent events."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        client: httpx.Client | None = None,
        timeout: float = 600.0,
    ) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.Client(timeout=httpx.Timeout(timeout, connect=5.0), headers=headers)

    def generate(
        self,
        model: str,
        messages: Sequence[Message],
        options: SamplingOptions,
        on_text: TextSink | None = None,
    ) -> RawGeneration:
        body: dict[str, Any] = {
            "model": model,
            "messages": list(messages),
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": options.max_new_tokens,
            **_sampling(options),
        }
        timer, parts, reason = _Timer(), [], "cancelled"
        usage: dict[str, Any] = {}
        url = f"{self.base_url}/v1/chat/completions"
        try:
            with self._client.stream("POST", url, json=body) as response:
                if response.status_code != 200:
                    raise NetworkError(f"{url} answered {response.status_code}: {_error_text(response)}")
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices", []):
                        text = (choice.get("delta") or {}).get("content") or ""
                        if text:
                            timer.saw_text()
                            parts.append(text)
                            if on_text is not None and on_text(text):
                                return _openai_result(parts, usage, timer, "cancelled")
                        if choice.get("finish_reason"):
                            reason = choice["finish_reason"]
        except httpx.TransportError as error:
            raise NetworkError(f"cannot reach {url}: {error or type(error).__name__}") from None
        return _openai_result(parts, usage, timer, reason)


def _openai_result(parts: list[str], usage: dict[str, Any], timer: _Timer, reason: str) -> RawGeneration:
    # Servers that send no usage in streams (llama.cpp's) leave the streamed pieces to count.
    output_tokens = int(usage.get("completion_tokens", timer.pieces))
    return timer.result(
        parts, int(usage.get("prompt_tokens", 0)), output_tokens, timer.decode_seconds(), reason
    )
