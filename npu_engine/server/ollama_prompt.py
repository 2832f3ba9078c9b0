"""What Ollama's `/api/generate` body asks for, as the engine's request: Ollama's `raw`, `suffix`,
`system`, `template` and `context`.

- `suffix` (not empty): fill in the middle between `prompt` and `suffix` with the FIM tokens of
  the model's family, `raw` or not (Continue sends `raw: true` with its `suffix`); with a
  `template`, the template rendered with `.Prompt` and `.Suffix` is the raw prompt instead.
- `raw`: `prompt` completed as it is; `system`, `template` and `context` do not apply.
- otherwise a chat turn: `system` and `prompt`, after the turns `context` holds, rendered by the
  model's own chat template, or with a `template` rendered by ollama_template.py (each earlier
  turn rendered with it, then its answer, as Ollama puts its context before the prompt).

`context` is Ollama's token context. The engine keeps no token ids between requests: the `context`
it returns holds the conversation so far as UTF-8 bytes of JSON, `[[system, prompt, answer], …]`,
one byte per number, and it accepts that back to continue the conversation. A non-raw chat turn
returns one; raw completions and infills return none, as they continue no conversation."""

import json
from dataclasses import dataclass

from npu_engine.errors import UserInputError
from npu_engine.generation import Message, SamplingOptions
from npu_engine.request import GenerateRequest
from npu_engine.server.ollama_template import render
from npu_engine.server.schemas import OllamaGenerateRequest


@dataclass(frozen=True)
class Turn:
    """One exchange of a generate conversation."""

    system: str
    prompt: str
    response: str = ""


@dataclass(frozen=True)
class Generate:
    """The engine's request for a generate body, and for a chat turn the turns its answer's
    `context` will hold before the answer's own (None: the answer returns no context)."""

    request: GenerateRequest
    turns: tuple[Turn, ...] | None = None

    def context(self, answer: str) -> list[int] | None:
        """The `context` to return with `answer`."""
        if self.turns is None:
            return None
        *earlier, last = self.turns
        return encode_context((*earlier, Turn(last.system, last.prompt, answer)))


def encode_context(turns: tuple[Turn, ...]) -> list[int]:
    text = json.dumps([[t.system, t.prompt, t.response] for t in turns], ensure_ascii=False)
    return list(text.encode("utf-8"))


def decode_context(context: list[int] | None) -> tuple[Turn, ...]:
    """The turns a `context` this server returned holds; UserInputError naming `context` else."""
    if not context:
        return ()
    try:
        raw = json.loads(bytes(context).decode("utf-8"))
        if not isinstance(raw, list):
            raise ValueError
        turns = []
        for item in raw:
            if not (isinstance(item, list) and len(item) == 3 and all(isinstance(v, str) for v in item)):
                raise ValueError
            turns.append(Turn(*item))
        return tuple(turns)
    except (ValueError, TypeError, OverflowError, RecursionError):  # deep nesting: RecursionError
        raise UserInputError(
            "context is not one this server returned (it holds a conversation as UTF-8 JSON bytes)"
        ) from None


def generate_request(body: OllamaGenerateRequest, tier: str, options: SamplingOptions) -> Generate | None:
    """The request for a generate body, or None when it asks for nothing (Ollama then loads or
    unloads the model)."""
    suffix = body.suffix or None
    if suffix is not None:
        if body.template is not None and not body.raw:
            text = render(
                body.template, {"System": body.system or "", "Prompt": body.prompt, "Suffix": suffix}
            )
            return Generate(GenerateRequest((), tier, options, prompt=text))
        return Generate(GenerateRequest((), tier, options, prompt=body.prompt, suffix=suffix))
    if body.raw:
        return Generate(GenerateRequest((), tier, options, prompt=body.prompt)) if body.prompt else None
    earlier = decode_context(body.context)
    system = body.system or ""
    if not body.prompt and not system:
        return None
    turns = (*earlier, Turn(system, body.prompt))
    if body.template is not None:
        parts = [render(body.template, {"System": t.system, "Prompt": t.prompt}) + t.response for t in turns]
        return Generate(GenerateRequest((), tier, options, prompt="".join(parts)), turns)
    return Generate(GenerateRequest(_messages(turns), tier, options), turns)


def _messages(turns: tuple[Turn, ...]) -> tuple[Message, ...]:
    """The chat of `turns`: the latest system prompt first (a chat has one), then each prompt and
    answer; the last turn has no answer yet."""
    system = next((t.system for t in reversed(turns) if t.system), "")
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    for turn in turns:
        if turn.prompt:
            messages.append({"role": "user", "content": turn.prompt})
        if turn.response:
            messages.append({"role": "assistant", "content": turn.response})
    return tuple(messages)
