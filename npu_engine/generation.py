"""The request and result types shared by the engine and its backends."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

Message = dict[str, str]
# Called with each new piece of text; returning True asks the backend to stop generating.
TextSink = Callable[[str], bool | None]


@dataclass(frozen=True)
class SamplingOptions:
    """How to decode: greedy when temperature is 0."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class RawGeneration:
    """What any backend returns: the text and the backend's own measurements (times in ms)."""

    text: str
    input_tokens: int
    output_tokens: int
    ttft_ms: float
    tpot_ms: float
    tokens_per_second: float
    finish_reason: str
    accepted_tokens: int | None = None  # draft or prompt-lookup tokens the main model accepted


def finish_reason(output_tokens: int, options: SamplingOptions, cancelled: bool = False) -> str:
    if cancelled:
        return "cancelled"
    return "length" if output_tokens >= options.max_new_tokens else "stop"


def as_messages(prompt: str | Sequence[Message]) -> list[Message]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
