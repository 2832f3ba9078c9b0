"""Request bodies of the OpenAI and Ollama APIs the server speaks (pydantic, so the OpenAPI
document describes them and invalid bodies are refused with the field named)."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from npu_engine.request import Decoding
from npu_engine.server.tool_schemas import (
    OllamaToolCall,
    OpenAIToolCall,
    OpenAIToolChoice,
    ResponseFormatSpec,
    ToolSpec,
)

MAX_TOKENS_CAP = 32768
MAX_CHOICES = 4  # OpenAI's `n`: each choice is a generation of its own, one after the other


class _Lenient(BaseModel):
    # Clients send fields we do not use (logprobs, user, tools...): ignored, as OpenAI and Ollama do.
    # The fields we do use are strict: "10" or true is no number and "yes" no boolean (a 400 naming
    # the field), but an integer stands for a float, as JSON clients send 1 for 1.0.
    model_config = ConfigDict(extra="ignore", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data: Any) -> Any:
        # OpenAI's clients send `null` for what the caller left unset (litellm's embeddings send
        # "encoding_format": null): a JSON null means the field's default, as OpenAI reads it.
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


class NpuEngineOptions(_Lenient):
    """The `npu_engine` object of a request body: what this server does beyond the API it speaks."""

    receipt: bool = Field(
        default=False, description="sign the answer: the response's `npu_engine.receipt` is its DSSE envelope"
    )
    decoding: Decoding = Field(
        default="auto", description="the decoding mode (`auto`: the one measured fastest for the tier)"
    )


class _Extended(_Lenient):
    npu_engine: NpuEngineOptions | None = None

    def receipt_asked(self) -> bool:
        extension = self.npu_engine
        return extension is not None and extension.receipt

    def decoding_asked(self) -> Decoding:
        extension = self.npu_engine
        return extension.decoding if extension is not None else "auto"


class ContentPart(_Lenient):
    type: str
    text: str | None = None


class ChatMessage(_Lenient):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[OpenAIToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class StreamOptions(_Lenient):
    include_usage: bool = False


class _OpenAISampling(_Extended):
    model: str = Field(min_length=1, max_length=200)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_CAP)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_CAP)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = Field(default=None)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    n: int = Field(default=1, ge=1, le=MAX_CHOICES, description=f"at most {MAX_CHOICES}, without stream")
    logprobs: bool | int | None = Field(default=None, description="not available: a 400 when asked for")
    top_logprobs: int | None = Field(default=None, ge=0, le=20, description="not available")
    stream: bool = False
    stream_options: StreamOptions | None = None

    def stops(self) -> tuple[str, ...]:
        found = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return tuple(s for s in found if s)


class ChatCompletionRequest(_OpenAISampling):
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[ToolSpec] | None = None
    tool_choice: OpenAIToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormatSpec | None = None


class CompletionRequest(_OpenAISampling):
    # Empty only with a suffix (an infill at the top of a file): GenerateRequest.validate says so.
    prompt: str = Field(description="completed as given: no chat template")
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
    num_ctx: int | None = Field(default=None, ge=1, le=2**31 - 1, description="a cap on the context")


class OllamaMessage(_Lenient):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: list[OllamaToolCall] | None = None
    tool_name: str | None = None


class _OllamaCommon(_Extended):
    model: str = Field(min_length=1, max_length=200)
    stream: bool = True
    options: OllamaOptions | None = None
    keep_alive: str | float | None = Field(
        default=None,
        description='seconds, or a duration such as "5m", up to ten years; 0 unloads now, -1 keeps loaded',
    )
    think: bool | Literal["low", "medium", "high"] | None = Field(
        default=None, description="taken; models that do not reason ignore it, and the answer says so"
    )


class OllamaChatRequest(_OllamaCommon):
    messages: list[OllamaMessage] = Field(default_factory=list)
    tools: list[ToolSpec] | None = None
    format: str | dict[str, Any] | None = None


class OllamaGenerateRequest(_OllamaCommon):
    prompt: str = ""
    system: str | None = None
    format: str | dict[str, Any] | None = None
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


# Our error kinds as Anthropic names them.
_ANTHROPIC_KINDS = {
    "invalid_request_error": "invalid_request_error",
    "context_length_exceeded": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "not_found_error": "not_found_error",
    "server_busy": "overloaded_error",
    "no_device_available": "overloaded_error",
    "server_error": "api_error",
}


def anthropic_error(message: str, kind: str) -> dict[str, Any]:
    """Anthropic's error shape: {"type": "error", "error": {"type": ..., "message": ...}}."""
    return {"type": "error", "error": {"type": _ANTHROPIC_KINDS.get(kind, "api_error"), "message": message}}


def error_payload(path: str, message: str, kind: str) -> dict[str, Any]:
    """An error in the protocol the path speaks: Anthropic's under /v1/messages, OpenAI's
    elsewhere under /v1, Ollama's elsewhere."""
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return anthropic_error(message, kind)
    return openai_error(message, kind) if path.startswith("/v1") else {"error": message}
