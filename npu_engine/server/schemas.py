"""Request bodies of the OpenAI and Ollama APIs the server speaks (pydantic, so the OpenAPI
document describes them and invalid bodies are refused with the field named)."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_TOKENS_CAP = 32768


class _Lenient(BaseModel):
    # Clients send fields we do not use (logprobs, user, tools...): ignored, as OpenAI and Ollama do.
    # The fields we do use are strict: "10" or true is no number and "yes" no boolean (a 400 naming
    # the field), but an integer stands for a float, as JSON clients send 1 for 1.0.
    model_config = ConfigDict(extra="ignore", strict=True)


class ContentPart(_Lenient):
    type: str
    text: str | None = None


class ChatMessage(_Lenient):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class StreamOptions(_Lenient):
    include_usage: bool = False


class _OpenAISampling(_Lenient):
    model: str = Field(min_length=1, max_length=200)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_CAP)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_CAP)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = Field(default=None)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    n: int = Field(default=1, ge=1, le=1, description="only 1 is supported")
    stream: bool = False
    stream_options: StreamOptions | None = None

    def stops(self) -> tuple[str, ...]:
        found = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return tuple(s for s in found if s)


class ChatCompletionRequest(_OpenAISampling):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(_OpenAISampling):
    prompt: str = Field(min_length=1, description="completed as given: no chat template")
    max_tokens: int | None = Field(default=16, ge=1, le=MAX_TOKENS_CAP)  # OpenAI's default
    suffix: str | None = Field(
        default=None, description="the text after the completion: fill in the middle (models with `insert`)"
    )


class OllamaOptions(_Lenient):
    num_predict: int | None = Field(default=None, ge=-2, le=MAX_TOKENS_CAP)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stop: list[str] | None = None


class OllamaMessage(_Lenient):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""


class _OllamaCommon(_Lenient):
    model: str = Field(min_length=1, max_length=200)
    stream: bool = True
    options: OllamaOptions | None = None
    keep_alive: str | float | None = Field(
        default=None,
        description='seconds, or a duration such as "5m", up to ten years; 0 unloads now, -1 keeps loaded',
    )


class OllamaChatRequest(_OllamaCommon):
    messages: list[OllamaMessage] = Field(default_factory=list)


class OllamaGenerateRequest(_OllamaCommon):
    prompt: str = ""
    system: str | None = None
    suffix: str | None = Field(default=None, description="the text after the answer: fill in the middle")
    raw: bool = Field(default=False, description="complete the prompt as it is: no template")
    template: str | None = Field(
        default=None,
        description="an Ollama template: {{ .System }}, {{ .Prompt }}, {{ .Suffix }}, {{ if .X }}…{{ end }}",
    )
    context: list[int] | None = Field(
        default=None, description="the context an earlier answer returned, to continue its conversation"
    )


class OllamaShowRequest(_Lenient):
    model: str | None = Field(default=None, max_length=200)
    name: str | None = Field(default=None, max_length=200)  # older clients


def openai_error(message: str, kind: str) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def error_payload(path: str, message: str, kind: str) -> dict[str, Any]:
    """An error in the protocol the path speaks: OpenAI's shape under /v1, Ollama's elsewhere."""
    return openai_error(message, kind) if path.startswith("/v1") else {"error": message}
