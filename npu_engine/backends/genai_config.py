"""What every OpenVINO GenAI pipeline shares: the chat prompt, token counts and the GenerationConfig
for a request, with whatever the runtime refuses turned into the request's own error."""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from npu_engine.backends.pipeline_spec import DecodingMode, Speculation
from npu_engine.errors import UserInputError, presentable
from npu_engine.generation import Message, Prompt, RawPrompt, SamplingOptions
from npu_engine.response_format import ResponseFormat
from npu_engine.tool_format import CALL_END, OPEN, ToolConstraint

# What structured output holds an answer to: the calls it may make, or the JSON it must be.
Constraint = ToolConstraint | ResponseFormat

# What the runtime raises when it refuses the request's own values (pybind11 turns a C++ exception
# into RuntimeError, a value it cannot convert into TypeError or ValueError).
_REFUSED = (RuntimeError, TypeError, ValueError)


def chat_history(genai: Any, messages: Sequence[Message], tools: Sequence[dict[str, Any]] = ()) -> Any:
    """The ChatHistory of `messages`, with the tool declarations its chat template renders."""
    history = genai.ChatHistory(list(messages))
    if tools:
        history.set_tools(list(tools))
    return history


def chat_prompt(
    genai: Any, tokenizer: Any, messages: Sequence[Message], tools: Sequence[dict[str, Any]] = ()
) -> str:
    """`messages` (and `tools`) rendered by the model's own chat template, ready for the
    assistant's turn.

    Raises UserInputError when the template or the tokenizer refuses the messages: every device
    would refuse them the same way, so this is no device failure."""
    try:
        history = chat_history(genai, messages, tools)
        return str(tokenizer.apply_chat_template(history, add_generation_prompt=True))
    except _REFUSED as error:
        raise UserInputError(
            f"the model's chat template refused the messages: {presentable(error)}"
        ) from error


def count_tokens(tokenizer: Any, text: str) -> int:
    try:
        return int(tokenizer.encode(text, add_special_tokens=False).input_ids.get_shape()[1])
    except _REFUSED as error:
        raise UserInputError(f"the model's tokenizer refused the text: {presentable(error)}") from error


def structured_output(genai: Any, constraint: Constraint) -> Any:
    """The StructuredOutputConfig that holds an answer to `constraint`: JSON of the response
    format's schema (any object for `json_object`), or tool calls as structural tags, each
    `<tool_call>` and a declared tool's name followed by arguments of that tool's schema."""
    soc = genai.StructuredOutputConfig
    if isinstance(constraint, ResponseFormat):
        schema = constraint.schema if constraint.kind == "json_schema" else None
        return soc(json_schema=json.dumps(schema or {"type": "object"}))
    tags = [
        soc.Tag(
            begin=constraint.begin(tool), content=soc.JSONSchema(json.dumps(tool.parameters)), end=CALL_END
        )
        for tool in constraint.tools
    ]
    triggered = soc.TriggeredTags(
        triggers=[OPEN], tags=tags, at_least_one=constraint.required, stop_after_first=constraint.single
    )
    return soc(structural_tags_config=triggered)


def grammar_refused(error: Exception, constraint: Constraint | None) -> UserInputError | None:
    """The request's own error when OpenVINO GenAI's grammar backend (xgrammar, which compiles the
    schema only once generation starts) refused its schema; else None. json_schema.check_schema
    refuses what it is known to refuse before any device; this catches the rest."""
    if constraint is None or "xgrammar" not in str(error):
        return None
    return UserInputError(f"the schema cannot be enforced by constrained decoding: {presentable(error)}")


@dataclass(frozen=True)
class Ends:
    """Tokens that end an answer: those that are one token each by id (FIM end tokens are special
    tokens, which stop strings never match: the text they are matched against leaves special
    tokens out), the others as stop strings."""

    token_ids: frozenset[int]
    strings: tuple[str, ...]

    @classmethod
    def of(cls, encode: Callable[[str], Sequence[int]], tokens: Sequence[str]) -> "Ends":
        """`encode` gives a token string's ids in the runtime's vocabulary, special tokens parsed."""
        ids, strings = set(), []
        for token in tokens:
            encoded = encode(token)
            if len(encoded) == 1:
                ids.add(int(encoded[0]))
            else:
                strings.append(token)
        return cls(frozenset(ids), tuple(strings))


def generation_config(
    genai: Any,
    options: SamplingOptions,
    mode: DecodingMode,
    constraint: Constraint | None = None,
    ends: Ends | None = None,
    speculation: Speculation | None = None,
) -> Any:
    """The GenerationConfig for `options`, a decoding mode and what structured output holds the
    answer to, checked by OpenVINO GenAI's own validation so that whatever it refuses is the
    request's fault (UserInputError), found before the request reaches a pipeline rather than as
    a failure of the device running it.

    `ends` end the answer besides the model's own end tokens (a raw prompt's FIM end tokens, see
    `ChatPrompting.ends`); `speculation` how far speculative and prompt-lookup modes guess."""
    try:
        config = genai.GenerationConfig(max_new_tokens=options.max_new_tokens)
        if ends is not None and ends.token_ids:
            config.stop_token_ids = set(config.stop_token_ids) | set(ends.token_ids)
        if options.temperature > 0:
            config.do_sample = True
            config.temperature = options.temperature
            config.top_p = options.top_p
            if options.seed is not None:
                config.rng_seed = options.seed
        strings = set(options.stop) | set(ends.strings if ends is not None else ())
        if strings:
            config.stop_strings = strings
            config.include_stop_str_in_output = options.include_stop
        guess = speculation or Speculation()
        if mode == "speculative" and guess.confidence is not None:
            config.assistant_confidence_threshold = guess.confidence
        elif mode == "speculative":
            config.num_assistant_tokens = guess.draft_tokens
        elif mode == "prompt_lookup":
            config.num_assistant_tokens = guess.lookup_tokens
            config.max_ngram_size = guess.ngram
        if constraint is not None:
            config.structured_output_config = structured_output(genai, constraint)
        config.validate()
    except _REFUSED as error:
        raise UserInputError(f"the sampling options were refused: {presentable(error)}") from error
    return config


class ChatPrompting:
    """Chat-template rendering and prompt counting for pipelines holding `_genai` and `_tokenizer`."""

    _genai: Any
    _tokenizer: Any

    def chat_prompt(self, prompt: Prompt, tools: Sequence[dict[str, Any]] = ()) -> str:
        """The prompt text as the pipeline will see it: a raw prompt as it is, chat messages (and
        the tools they declare) after the model's chat template."""
        if isinstance(prompt, RawPrompt):
            return prompt.text
        return chat_prompt(self._genai, self._tokenizer, prompt, tools)

    def count_prompt_tokens(self, prompt: Prompt, tools: Sequence[dict[str, Any]] = ()) -> int:
        """Tokens of the prompt as the pipeline will see it (with the tools it declares)."""
        return count_tokens(self._tokenizer, self.chat_prompt(prompt, tools))

    def _encode(self, text: str) -> Sequence[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).input_ids.data[0])

    def reused_tokens(self, prompt: Prompt, tools: Sequence[dict[str, Any]] = ()) -> int:
        """None: OpenVINO's pipelines evaluate every prompt whole (prefix caching stays off)."""
        return 0

    def ends(self, prompt: Prompt) -> Ends | None:
        """The extra end tokens of a raw prompt (none for chat messages)."""
        if isinstance(prompt, RawPrompt) and prompt.stop_tokens:
            return Ends.of(self._encode, prompt.stop_tokens)
        return None
