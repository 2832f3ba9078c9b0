"""The request and result types shared by the engine and its backends, and the checks a request
passes before any backend sees it."""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from npu_engine.errors import UserInputError

# A chat message as chat templates take it: `role` and `content` strings, and for tool calling an
# assistant's `tool_calls` or a tool result's `tool_call_id` / `name`.
Message = dict[str, Any]
# Called with each new piece of text; returning True asks the backend to stop generating.
TextSink = Callable[[str], bool | None]


@dataclass(frozen=True)
class RawPrompt:
    """Text a model completes as given, without its chat template (a raw or fill-in-the-middle
    completion), and the model's special tokens that end the completion (its FIM end tokens)."""

    text: str
    stop_tokens: tuple[str, ...] = ()


# What a pipeline is asked to continue: chat messages, rendered by the model's chat template, or raw text.
Prompt = Sequence[Message] | RawPrompt

# OpenVINO GenAI samples in float32: a temperature or top_p that rounds to 0 there (1e-300), or a
# temperature so small that logits / temperature overflow, fails inside the runtime. Below these
# floors sampling is greedy in all but name anyway.
MIN_TEMPERATURE = 1e-6
MAX_TEMPERATURE = 2.0
MIN_TOP_P = 1e-6
MAX_NEW_TOKENS = 2**31 - 1
MAX_SEED = 2**63 - 1
# Every stop sequence is matched against the text after every token while the request holds the
# model's pipeline: 50,000 of them cost 10x the token itself. OpenAI allows 4.
MAX_STOP_SEQUENCES = 16
MAX_STOP_BYTES = 4096


@dataclass(frozen=True)
class SamplingOptions:
    """How to decode: greedy when temperature is 0.

    `validate()` states the limits: temperature 0 or from 1e-6 to 2, top_p from 1e-6 to 1,
    max_new_tokens at least 1, seed from 0 to 2**63 - 1, at most 16 non-empty stop sequences of
    4096 UTF-8 bytes in all.
    """

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # Keep the stop sequence that ended the answer at the end of its text, so that the caller can
    # tell which one it was (Anthropic's `stop_sequence`); remote fallbacks always drop it.
    include_stop: bool = False

    def validate(self) -> "SamplingOptions":
        """Raise UserInputError naming the first field a backend could not take; else return self."""
        if not _integer(self.max_new_tokens) or not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise UserInputError(f"max_new_tokens must be an integer from 1 to {MAX_NEW_TOKENS}")
        if not _number(self.temperature) or not (
            self.temperature == 0 or MIN_TEMPERATURE <= self.temperature <= MAX_TEMPERATURE
        ):
            raise UserInputError(
                f"temperature must be 0 (greedy) or from {MIN_TEMPERATURE:g} to {MAX_TEMPERATURE:g}"
            )
        if not _number(self.top_p) or not MIN_TOP_P <= self.top_p <= 1:
            raise UserInputError(f"top_p must be from {MIN_TOP_P:g} to 1")
        if self.seed is not None and (not _integer(self.seed) or not 0 <= self.seed <= MAX_SEED):
            raise UserInputError(f"seed must be an integer from 0 to {MAX_SEED}")
        if len(self.stop) > MAX_STOP_SEQUENCES:
            raise UserInputError(
                f"stop has {len(self.stop)} sequences; at most {MAX_STOP_SEQUENCES} are allowed"
            )
        size = 0
        for index, sequence in enumerate(self.stop):
            if not isinstance(sequence, str) or not sequence:
                raise UserInputError(f"stop[{index}] must be a non-empty string")
            size += len(utf8_text(sequence, f"stop[{index}]"))
        if size > MAX_STOP_BYTES:
            raise UserInputError(f"stop sequences total {size} bytes; at most {MAX_STOP_BYTES} are allowed")
        return self


def validate_messages(messages: Sequence[Message]) -> None:
    """Raise UserInputError naming the first message whose role or content is not text a tokenizer
    can take (not a string, or a string that is not valid Unicode, such as a lone surrogate)."""
    for index, message in enumerate(messages):
        for key in ("role", "content"):
            value = message.get(key)
            if not isinstance(value, str):
                raise UserInputError(f"messages[{index}].{key} must be a string")
            utf8_text(value, f"messages[{index}].{key}")


def utf8_text(text: str, field: str) -> bytes:
    """`text` in UTF-8; UserInputError naming `field` when it is not valid Unicode."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise UserInputError(
            f"{field} is not valid Unicode text (an unpaired surrogate at character {error.start})"
        ) from None


def held_tail(text: str, marker: str) -> int:
    """How many characters at the end of `text` may begin `marker` (never all of it): the tail a
    stream holds back until the next piece shows whether the marker follows."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class GenerationMetrics:
    """Measurements of one call; times in milliseconds, load in seconds (0 when already loaded)."""

    ttft_ms: float
    tpot_ms: float
    tokens_per_second: float
    input_tokens: int
    output_tokens: int
    load_seconds: float = 0.0
    accepted_tokens: int | None = None  # draft or prompt-lookup tokens the main model accepted
    cached_tokens: int = 0  # prompt tokens read back from the KV cache rather than evaluated


@dataclass(frozen=True)
class RawGeneration:
    """What any backend returns: the text, why it ended, and the backend's own measurements."""

    text: str
    finish_reason: str
    metrics: GenerationMetrics


def finish_reason(output_tokens: int, options: SamplingOptions, cancelled: bool = False) -> str:
    if cancelled:
        return "cancelled"
    return "length" if output_tokens >= options.max_new_tokens else "stop"


def as_messages(prompt: str | Sequence[Message]) -> list[Message]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
