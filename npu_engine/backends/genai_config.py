"""What every OpenVINO GenAI pipeline shares: the chat prompt, token counts and the GenerationConfig
for a request, with whatever the runtime refuses turned into the request's own error."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from npu_engine.backends.pipeline_spec import DecodingMode
from npu_engine.errors import UserInputError, presentable
from npu_engine.generation import Message, Prompt, RawPrompt, SamplingOptions

ASSISTANT_TOKENS = 5
LOOKUP_NGRAM = 3

# What the runtime raises when it refuses the request's own values (pybind11 turns a C++ exception
# into RuntimeError, a value it cannot convert into TypeError or ValueError).
_REFUSED = (RuntimeError, TypeError, ValueError)


def chat_prompt(genai: Any, tokenizer: Any, messages: Sequence[Message]) -> str:
    """`messages` rendered by the model's own chat template, ready for the assistant's turn.

    Raises UserInputError when the template or the tokenizer refuses the messages: every device
    would refuse them the same way, so this is no device failure."""
    try:
        history = genai.ChatHistory(list(messages))
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


@dataclass(frozen=True)
class Ends:
    """Tokens that end an answer: those that are one token each by id (FIM end tokens are special
    tokens, which stop strings never match: the text they are matched against leaves special
    tokens out), the others as stop strings."""

    token_ids: frozenset[int]
    strings: tuple[str, ...]

    @classmethod
    def of(cls, tokenizer: Any, tokens: Sequence[str]) -> "Ends":
        ids, strings = set(), []
        for token in tokens:
            encoded = tokenizer.encode(token, add_special_tokens=False).input_ids.data[0]
            if len(encoded) == 1:
                ids.add(int(encoded[0]))
            else:
                strings.append(token)
        return cls(frozenset(ids), tuple(strings))


def generation_config(
    genai: Any, options: SamplingOptions, mode: DecodingMode, ends: Ends | None = None
) -> Any:
    """The GenerationConfig for `options` and a decoding mode, checked by OpenVINO GenAI's own
    validation so that whatever it refuses is the request's fault (UserInputError), found before
    the request reaches a pipeline rather than as a failure of the device running it.

    `ends` end the answer besides the model's own end tokens (a raw prompt's FIM end tokens, see
    `ChatPrompting.ends`)."""
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
            config.include_stop_str_in_output = False
        if mode != "plain":
            config.num_assistant_tokens = ASSISTANT_TOKENS
        if mode == "prompt_lookup":
            config.max_ngram_size = LOOKUP_NGRAM
        config.validate()
    except _REFUSED as error:
        raise UserInputError(f"the sampling options were refused: {presentable(error)}") from error
    return config


class ChatPrompting:
    """Chat-template rendering and prompt counting for pipelines holding `_genai` and `_tokenizer`."""

    _genai: Any
    _tokenizer: Any

    def chat_prompt(self, prompt: Prompt) -> str:
        """The prompt text as the pipeline will see it: a raw prompt as it is, chat messages after
        the model's chat template."""
        if isinstance(prompt, RawPrompt):
            return prompt.text
        return chat_prompt(self._genai, self._tokenizer, prompt)

    def count_prompt_tokens(self, prompt: Prompt) -> int:
        """Tokens of the prompt as the pipeline will see it."""
        return count_tokens(self._tokenizer, self.chat_prompt(prompt))

    def ends(self, prompt: Prompt) -> Ends | None:
        """The extra end tokens of a raw prompt (none for chat messages)."""
        if isinstance(prompt, RawPrompt) and prompt.stop_tokens:
            return Ends.of(self._tokenizer, prompt.stop_tokens)
        return None
