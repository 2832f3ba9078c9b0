"""What every OpenVINO GenAI pipeline shares: the chat prompt, token counts and the GenerationConfig
for a request, with whatever the runtime refuses turned into the request's own error."""

from collections.abc import Sequence
from typing import Any

from npu_engine.backends.pipeline_spec import DecodingMode
from npu_engine.errors import UserInputError, presentable
from npu_engine.generation import Message, SamplingOptions

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


def generation_config(genai: Any, options: SamplingOptions, mode: DecodingMode) -> Any:
    """The GenerationConfig for `options` and a decoding mode, checked by OpenVINO GenAI's own
    validation so that whatever it refuses is the request's fault (UserInputError), found before
    the request reaches a pipeline rather than as a failure of the device running it."""
    try:
        config = genai.GenerationConfig(max_new_tokens=options.max_new_tokens)
        if options.temperature > 0:
            config.do_sample = True
            config.temperature = options.temperature
            config.top_p = options.top_p
            if options.seed is not None:
                config.rng_seed = options.seed
        if options.stop:
            config.stop_strings = set(options.stop)
            config.include_stop_str_in_output = options.include_stop
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

    def chat_prompt(self, messages: Sequence[Message]) -> str:
        """The prompt text after the model's chat template, as the pipeline will see it."""
        return chat_prompt(self._genai, self._tokenizer, messages)

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens of the prompt after the chat template."""
        return count_tokens(self._tokenizer, self.chat_prompt(messages))
