"""Running IR models with openvino_genai.LLMPipeline: plain, draft-model speculative, or prompt lookup."""

import time
from collections.abc import Sequence
from typing import Any

from npu_engine.backends.genai_config import (
    ChatPrompting,
    Constraint,
    chat_history,
    generation_config,
    grammar_refused,
)
from npu_engine.backends.pipeline_spec import PipelineSpec
from npu_engine.generation import (
    GenerationMetrics,
    Prompt,
    RawGeneration,
    RawPrompt,
    SamplingOptions,
    TextSink,
    finish_reason,
)


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
        self,
        prompt: Prompt,
        options: SamplingOptions,
        on_text: TextSink | None = None,
        tools: Sequence[dict[str, Any]] = (),
        constraint: Constraint | None = None,
    ) -> RawGeneration:
        config = generation_config(
            self._genai, options, self.spec.mode, constraint, self.ends(prompt), self.spec.speculation
        )
        cancelled = False

        def stream(text: str) -> Any:
            nonlocal cancelled
            if on_text is not None and on_text(text):
                cancelled = True
                return self._genai.StreamingStatus.CANCEL
            return self._genai.StreamingStatus.RUNNING

        if isinstance(prompt, RawPrompt):
            config.apply_chat_template = False  # a raw prompt is completed as it is
            inputs: Any = [prompt.text]  # a list: the results then carry their metrics
        else:
            inputs = chat_history(self._genai, prompt, tools)
        try:
            result = self._pipeline.generate(inputs, config, stream)
        except RuntimeError as error:
            refused = grammar_refused(error, constraint)
            if refused is None:
                raise
            raise refused from error
        metrics = result.perf_metrics
        output_tokens = int(metrics.get_num_generated_tokens())
        accepted = None
        if self.spec.mode == "speculative" and result.extended_perf_metrics is not None:
            accepted = int(result.extended_perf_metrics.get_num_accepted_tokens())
        elif self.spec.mode == "prompt_lookup":
            # Each main-model step emits its own token plus the lookup tokens it accepted.
            accepted = output_tokens - len(metrics.raw_metrics.m_batch_sizes)
        measured = GenerationMetrics(
            ttft_ms=float(metrics.get_ttft().mean),
            tpot_ms=float(metrics.get_tpot().mean),
            tokens_per_second=float(metrics.get_throughput().mean),
            input_tokens=int(metrics.get_num_input_tokens()),
            output_tokens=output_tokens,
            accepted_tokens=accepted,
        )
        return RawGeneration(result.texts[0], finish_reason(output_tokens, options, cancelled), measured)
