"""The one request every edge builds (the OpenAI and Ollama adapters, the CLI, the Python API's
keyword form) and the engine passes whole to the target that answers it, and the typed pieces a
stream of its answer is made of."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from npu_engine.errors import UserInputError
from npu_engine.generation import (
    GenerationMetrics,
    Message,
    SamplingOptions,
    as_messages,
    utf8_text,
    validate_messages,
)
from npu_engine.receipt import Receipt
from npu_engine.response_format import ResponseFormat, validate_response_format
from npu_engine.router import Route
from npu_engine.tool_format import ToolConstraint, constraint, validate_tool_messages, validate_tools
from npu_engine.tools import Tool, ToolCall, ToolChoice

Decoding = Literal["auto", "plain", "speculative", "prompt_lookup"]
# The backend asked for: `auto` is the one expected fastest for the request (see Planner.backend);
# `remote` the server remote-tiers.json places the tier on.
BackendChoice = Literal["auto", "openvino", "llama.cpp", "remote"]
AUTO = "auto"


@dataclass(frozen=True)
class GenerateRequest:
    """What to answer and how: chat messages (a bare prompt is one user message), the tier asked for
    (`auto`: the router chooses), the sampling options and the decoding mode (`auto`: the one
    measured fastest for the tier and device).

    `tools` the model may call and how (`tool_choice`; `parallel_tool_calls` False: one call at
    most), and the shape the answer must take (`response_format`). New request fields belong
    here, so that every edge sets them once and every target reads them from the same place.

    A raw completion has no messages but a `prompt`, which the model continues as given (no chat
    template); with a `suffix` too, the model fills in the code between them (FIM, with the FIM
    tokens of the model's family; see `Engine.prepare`).

    `receipt`: sign the answer (see attest.py); its result then carries the receipt."""

    messages: tuple[Message, ...]
    tier: str = "code"
    options: SamplingOptions = field(default_factory=SamplingOptions)
    decoding: Decoding = "auto"
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = "auto"
    response_format: ResponseFormat | None = None
    parallel_tool_calls: bool = True
    # A cap on the context for this request (Ollama's `options.num_ctx`): a longer prompt is refused
    # with both counts, as one over the tier's context is. None: the tier's context.
    context_limit: int | None = None
    prompt: str | None = None
    suffix: str | None = None
    backend: BackendChoice = "auto"
    receipt: bool = False

    @property
    def raw(self) -> bool:
        """A raw or fill-in-the-middle completion rather than a chat."""
        return self.prompt is not None

    @classmethod
    def of(
        cls,
        prompt: str | Sequence[Message],
        *,
        tier: str = "code",
        max_new_tokens: int = 512,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
        decoding: Decoding = "auto",
        tools: Sequence[Tool] = (),
        tool_choice: ToolChoice = "auto",
        response_format: ResponseFormat | None = None,
        parallel_tool_calls: bool = True,
        backend: BackendChoice = "auto",
        receipt: bool = False,
    ) -> "GenerateRequest":
        """The request for a prompt or chat messages, from the Python API's keywords."""
        options = SamplingOptions(max_new_tokens, temperature, top_p, tuple(stop), seed)
        return cls(
            tuple(as_messages(prompt)),
            tier,
            options,
            decoding,
            tuple(tools),
            tool_choice,
            response_format,
            parallel_tool_calls,
            backend=backend,
            receipt=receipt,
        )

    @classmethod
    def completion(
        cls,
        prompt: str,
        *,
        suffix: str | None = None,
        tier: str = "code",
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
        decoding: Decoding = "auto",
        backend: BackendChoice = "auto",
        receipt: bool = False,
    ) -> "GenerateRequest":
        """The request for a raw completion of `prompt` (no chat template), or with `suffix` for
        the code between `prompt` and `suffix`."""
        options = SamplingOptions(max_new_tokens, temperature, top_p, tuple(stop), seed)
        return cls(
            (), tier, options, decoding, prompt=prompt, suffix=suffix, backend=backend, receipt=receipt
        )

    def validate(self) -> "GenerateRequest":
        """Raise UserInputError for what no backend could take (see SamplingOptions.validate and
        validate_messages); else return self. Checked before any device: a request the runtime
        would reject is the caller's mistake, never a device failure."""
        self.options.validate()
        validate_messages(self.messages)
        validate_tool_messages(self.messages)
        validate_tools(self.tools, self.tool_choice)
        if self.response_format is not None:
            validate_response_format(self.response_format)
            if self.tools and self.tool_choice != "none":
                raise UserInputError(
                    f"{self.response_format.field} cannot be combined with tools (leave one of them out)"
                )
        if self.constraint() is not None and self.decoding in ("speculative", "prompt_lookup"):
            raise UserInputError(
                f"decoding {self.decoding!r} cannot be combined with tools or a response format"
            )
        if self.prompt is None:
            if self.suffix is not None:
                raise UserInputError("suffix needs a prompt: the code before the gap it closes")
            return self
        if self.messages:
            raise UserInputError("a raw completion has a prompt and no messages")
        for name, text in (("prompt", self.prompt), ("suffix", self.suffix)):
            if text is not None:
                if not isinstance(text, str):
                    raise UserInputError(f"{name} must be a string")
                utf8_text(text, name)
        if not self.prompt and not self.suffix:
            raise UserInputError("prompt must not be empty")
        if self.tools:
            raise UserInputError("a raw completion takes no tools")
        return self

    def constraint(self) -> "ToolConstraint | ResponseFormat | None":
        """What structured output holds the answer to: the tool calls it may make, the JSON it
        must be, or nothing."""
        if self.response_format is not None:
            return self.response_format
        return constraint(self.tools, self.tool_choice, self.parallel_tool_calls)


@dataclass(frozen=True)
class FallbackStep:
    """A step of the chain that did not answer, and why."""

    target: str
    reason: str


@dataclass(frozen=True)
class GenerationResult:
    """The answer: its text, who answered (tier, converted model, device, decoding) and how fast,
    the chain's steps that did not answer, the router's choice when the tier was `auto`, and the
    tool calls it makes (then `finish_reason` is "tool_calls" and `text` what came before them).

    `prompt_sha256` is the sha256 of the prompt as the model saw it (after its chat template), when
    a receipt was asked for and a local model answered; `receipt` the signed receipt then."""

    text: str
    finish_reason: str
    tier: str
    model: str
    device: str
    decoding: str
    metrics: GenerationMetrics
    fallback: tuple[FallbackStep, ...] = ()
    route: Route | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    backend: str = "openvino"  # what ran the model: openvino, llama.cpp, or the remote's name
    prompt_sha256: str | None = None
    receipt: Receipt | None = None


@dataclass(frozen=True)
class StreamChunk:
    """One step of a streamed answer: a piece of text, or (last) the whole result with its metrics,
    route and fallback steps, whose `text` is then empty."""

    text: str = ""
    result: GenerationResult | None = None
