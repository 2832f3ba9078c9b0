"""Running IR models with openvino_genai.LLMPipeline: plain, draft-model speculative, or prompt lookup."""

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from npu_engine.devices import GB
from npu_engine.errors import UserInputError, presentable
from npu_engine.generation import Message, RawGeneration, SamplingOptions, TextSink, finish_reason

# The NPU plugin's NPUW path with CPU as its only device: runs the NPU pipeline (static shapes,
# prompt limits) on machines with no NPU. A correctness path, never a speed figure.
NPU_ON_CPU = {"NPU_USE_NPUW": "YES", "NPUW_DEVICES": "CPU", "NPUW_ONLINE_PIPELINE": "NONE"}

DecodingMode = Literal["plain", "speculative", "prompt_lookup"]
ASSISTANT_TOKENS = 5
LOOKUP_NGRAM = 3


@dataclass(frozen=True)
class BatchingLimits:
    """How many sequences decode together, and how much KV cache they share."""

    max_sequences: int = 8
    cache_bytes: int = GB
    max_batched_tokens: int = 2048
    recycle_after: int = 100  # requests before the pipeline is reopened (see BatchingPipeline)


@dataclass(frozen=True)
class PipelineSpec:
    """How to open one pipeline: which model folder, on which OpenVINO device, with what limits."""

    model_path: Path
    device: str
    cache_dir: Path | None = None
    max_prompt_len: int = 1024
    min_response_len: int = 256
    emulate_npu: bool = False
    mode: DecodingMode = "plain"
    draft_path: Path | None = None
    batching: BatchingLimits | None = None

    def properties(self) -> dict[str, Any]:
        props: dict[str, Any] = {}
        if self.cache_dir is not None:
            props["CACHE_DIR"] = str(self.cache_dir)
        if self.device == "NPU":
            props.update(MAX_PROMPT_LEN=self.max_prompt_len, MIN_RESPONSE_LEN=self.min_response_len)
            props["GENERATE_HINT"] = "FAST_COMPILE" if self.emulate_npu else "BEST_PERF"
            if self.emulate_npu:
                props.update(NPU_ON_CPU)
        return props


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

    def chat_prompt(self, messages: Sequence[Message]) -> str:
        """The prompt text after the model's chat template, as the pipeline will see it."""
        return chat_prompt(self._genai, self._tokenizer, messages)

    def count_prompt_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens of the prompt after the chat template."""
        return count_tokens(self._tokenizer, self.chat_prompt(messages))


class OpenVinoPipeline(ChatPrompting):
    """One loaded LLMPipeline. Not re-entrant: callers serialize their calls."""

    concurrent = False

    def __init__(self, spec: PipelineSpec) -> None:
        import openvino_genai

        started = time.monotonic()
        self.spec = spec
        self._genai = openvino_genai
        props = spec.properties()
        if not spec.device.startswith("NPU"):
            # LLMPipeline runs paged attention with prefix caching on the CPU and GPU; a prefix read
            # back from the (u8) KV cache changes greedy answers, so the same request would answer
            # differently the second time. Same request, same answer: no prefix caching.
            scheduler = openvino_genai.SchedulerConfig()
            scheduler.enable_prefix_caching = False
            props["scheduler_config"] = scheduler
        if spec.mode == "speculative":
            if spec.draft_path is None:
                raise ValueError("speculative decoding needs a draft model")
            props["draft_model"] = openvino_genai.draft_model(str(spec.draft_path), spec.device)
        elif spec.mode == "prompt_lookup":
            props["prompt_lookup"] = True
        self._pipeline = openvino_genai.LLMPipeline(str(spec.model_path), spec.device, **props)
        self._tokenizer = self._pipeline.get_tokenizer()
        self.load_seconds = time.monotonic() - started

    def generate(
        self, messages: Sequence[Message], options: SamplingOptions, on_text: TextSink | None = None
    ) -> RawGeneration:
        config = generation_config(self._genai, options, self.spec.mode)
        cancelled = False

        def stream(text: str) -> Any:
            nonlocal cancelled
            if on_text is not None and on_text(text):
                cancelled = True
                return self._genai.StreamingStatus.CANCEL
            return self._genai.StreamingStatus.RUNNING

        result = self._pipeline.generate(self._genai.ChatHistory(list(messages)), config, stream)
        metrics = result.perf_metrics
        output_tokens = int(metrics.get_num_generated_tokens())
        accepted = None
        if self.spec.mode == "speculative" and result.extended_perf_metrics is not None:
            accepted = int(result.extended_perf_metrics.get_num_accepted_tokens())
        elif self.spec.mode == "prompt_lookup":
            # Each main-model step emits its own token plus the lookup tokens it accepted.
            accepted = output_tokens - len(metrics.raw_metrics.m_batch_sizes)
        return RawGeneration(
            text=result.texts[0],
            input_tokens=int(metrics.get_num_input_tokens()),
            output_tokens=output_tokens,
            ttft_ms=float(metrics.get_ttft().mean),
            tpot_ms=float(metrics.get_tpot().mean),
            tokens_per_second=float(metrics.get_throughput().mean),
            finish_reason=finish_reason(output_tokens, options, cancelled),
            accepted_tokens=accepted,
        )


class OpenVinoPipelineFactory:
    """The default pipeline factory; the engine takes any callable of the same shape.

    Plain decoding on the CPU or GPU gets a continuous-batching pipeline, so concurrent requests
    decode together; the NPU (static shapes, one request at a time) and the speculative and
    prompt-lookup modes get an LLMPipeline whose callers queue.
    """

    def __call__(self, spec: PipelineSpec) -> Any:
        if spec.batching is not None and spec.mode == "plain" and not spec.device.startswith("NPU"):
            from npu_engine.backends.batching import BatchingPipeline

            return BatchingPipeline(spec, spec.batching)
        return OpenVinoPipeline(spec)
