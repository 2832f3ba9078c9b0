"""Request bodies of Anthropic's Messages API (`POST /v1/messages`).
Strict on the fields used, lenient on the rest (`metadata`, `cache_control`, `anthropic-beta`
extras are ignored), as the OpenAI and Ollama bodies are."""

from typing import Any, Literal

from pydantic import Field

from npu_engine.server.schemas import _Extended, _Lenient
from npu_engine.tool_format import MAX_TOOLS

MAX_ANTHROPIC_TOKENS = 1 << 20


class AnthropicBlock(_Lenient):
    """A content block. Every kind shares one model so that a block of a kind not served here is
    refused by name (see anthropic_messages.py) rather than by a union's list of mismatches."""

    type: str = Field(max_length=64)
    text: str | None = None
    id: str | None = Field(default=None, max_length=256)
    name: str | None = Field(default=None, max_length=256)
    input: dict[str, Any] | None = None
    tool_use_id: str | None = Field(default=None, max_length=256)
    content: "str | list[AnthropicBlock] | None" = None
    is_error: bool | None = None


class AnthropicMessage(_Lenient):
    role: Literal["user", "assistant"]
    content: str | list[AnthropicBlock]


class AnthropicTool(_Lenient):
    name: str = Field(min_length=1, max_length=128)
    description: str = ""
    input_schema: dict[str, Any] | None = None
    type: str | None = Field(default=None, max_length=64)  # "custom", or one of Anthropic's server tools


class AnthropicToolChoice(_Lenient):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = Field(default=None, max_length=128)
    disable_parallel_tool_use: bool | None = None


class _AnthropicPrompt(_Extended):
    model: str = Field(min_length=1, max_length=200)
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[AnthropicBlock] | None = None
    tools: list[AnthropicTool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: AnthropicToolChoice | None = None


class MessagesRequest(_AnthropicPrompt):
    # Required, as Anthropic's API has it, and an upper bound only: clients send large ones (Claude
    # Code 32000), so the route takes the server's limit when it is lower.
    max_tokens: int = Field(ge=1, le=MAX_ANTHROPIC_TOKENS)
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stream: bool = False
