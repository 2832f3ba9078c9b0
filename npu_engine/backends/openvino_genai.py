"""Running IR models with openvino_genai.LLMPipeline."""

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The NPU plugin's NPUW path with CPU as its only device: runs the NPU pipeline (static shapes,
# prompt limits) on machines with no NPU. A correctness path, never a speed figure.
NPU_ON_CPU = {"NPU_USE_NPUW": "YES", "NPUW_DEVICES": "CPU", "NPUW_ONLINE_PIPELINE": "NONE"}


@dataclass(frozen=True)
class PipelineSpec:
    """How to open one pipeline: which model folder, on which OpenVINO device, with what limits."""

    model_path: Path
    device: str
    cache_dir: Path | None = None
    max_prompt_len: int = 1024
    min_response_len: int = 256
    emulate_npu: bool = False

    def properties(self) -> dict[str, Any]:
        props: dict[str, Any] = {}
        if self.cache_dir is not None:
            props["CACHE_DIR"] = str(self.cache_dir)
        if self.device == "NPU":
            props.update(MAX_PROMPT_LEN=self.max_prompt_len, MIN_RESPONSE_LEN=self.min_response_len)
            if self.emulate_npu:
                props.update(NPU_ON_CPU)
        return props


@dataclass(frozen=True)
class RawGeneration:
    """What a backend returns: the text and OpenVINO's own measurements."""

    text: str
    input_tokens: int
    output_tokens: int
    ttft_ms: float
    tpot_ms: float
    tokens_per_second: float
    extra: dict[str, float] = field(default_factory=dict)


class OpenVinoPipeline:
    """One loaded LLMPipeline. Not re-entrant: callers serialize their calls."""

    def __init__(self, spec: PipelineSpec) -> None:
        import openvino_genai

        started = time.monotonic()
        self.spec = spec
        self._genai = openvino_genai
        self._pipeline = openvino_genai.LLMPipeline(str(spec.model_path), spec.device, **spec.properties())
        self.load_seconds = time.monotonic() - started

    def generate(
        self,
        messages: Sequence[dict[str, str]],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stop: Sequence[str],
        seed: int | None,
    ) -> RawGeneration:
        config = self._genai.GenerationConfig(max_new_tokens=max_new_tokens)
        if temperature > 0:
            config.do_sample = True
            config.temperature = temperature
            config.top_p = top_p
            if seed is not None:
                config.rng_seed = seed
        if stop:
            config.stop_strings = set(stop)
            config.include_stop_str_in_output = False
        history = self._genai.ChatHistory(list(messages))
        result = self._pipeline.generate(history, config)
        metrics = result.perf_metrics
        return RawGeneration(
            text=result.texts[0],
            input_tokens=int(metrics.get_num_input_tokens()),
            output_tokens=int(metrics.get_num_generated_tokens()),
            ttft_ms=float(metrics.get_ttft().mean),
            tpot_ms=float(metrics.get_tpot().mean),
            tokens_per_second=float(metrics.get_throughput().mean),
        )


class OpenVinoPipelineFactory:
    """The default pipeline factory; the engine takes any callable of the same shape."""

    def __call__(self, spec: PipelineSpec) -> OpenVinoPipeline:
        return OpenVinoPipeline(spec)
