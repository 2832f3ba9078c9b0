"""How to open one OpenVINO GenAI pipeline: plain data, no OpenVINO import."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from npu_engine.devices import GB

# The NPU plugin's NPUW path with CPU as its only device: runs the NPU pipeline (static shapes,
# prompt limits) on machines with no NPU. A correctness path, never a speed figure.
NPU_ON_CPU = {"NPU_USE_NPUW": "YES", "NPUW_DEVICES": "CPU", "NPUW_ONLINE_PIPELINE": "NONE"}

DecodingMode = Literal["plain", "speculative", "prompt_lookup"]
# The backend that runs a converted model: OpenVINO GenAI on its IR, or llama.cpp on the GGUF the IR
# was converted from (the CPU only).
Backend = Literal["openvino", "llama.cpp"]


@dataclass(frozen=True)
class BatchingLimits:
    """How many sequences decode together, and how much KV cache they share."""

    max_sequences: int = 8
    cache_bytes: int = GB
    max_batched_tokens: int = 2048
    recycle_after: int = 100  # requests before the pipeline is reopened (see BatchingPipeline)


@dataclass(frozen=True)
class CpuSettings:
    """OpenVINO CPU plugin properties `npu-bench tune` measures; None leaves the plugin's default."""

    threads: int | None = None  # INFERENCE_NUM_THREADS
    hint: Literal["LATENCY", "THROUGHPUT"] | None = None  # PERFORMANCE_HINT
    pinning: bool | None = None  # ENABLE_CPU_PINNING
    quantization_group: int | None = None  # DYNAMIC_QUANTIZATION_GROUP_SIZE (0: off)
    kv_precision: Literal["u8", "f16", "bf16"] | None = None  # KV_CACHE_PRECISION

    def properties(self) -> dict[str, Any]:
        named = {
            "INFERENCE_NUM_THREADS": self.threads,
            "PERFORMANCE_HINT": self.hint,
            "ENABLE_CPU_PINNING": self.pinning,
            "DYNAMIC_QUANTIZATION_GROUP_SIZE": self.quantization_group,
            "KV_CACHE_PRECISION": self.kv_precision,
        }
        return {name: value for name, value in named.items() if value is not None}

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.properties().items()) or "plugin defaults"


@dataclass(frozen=True)
class Speculation:
    """How far the guessing modes guess: `draft_tokens` a draft model proposes per step (or, with
    `confidence` set, as many as it is that sure of), and prompt lookup's `lookup_tokens` copied
    after a match of at most `ngram` tokens."""

    draft_tokens: int = 5
    confidence: float | None = None
    lookup_tokens: int = 5
    ngram: int = 3

    def describe(self, mode: DecodingMode) -> str:
        if mode == "prompt_lookup":
            return f"{self.lookup_tokens} lookup tokens, n-gram {self.ngram}"
        if mode == "speculative" and self.confidence is not None:
            return f"draft while its confidence >= {self.confidence}"
        return f"{self.draft_tokens} draft tokens" if mode == "speculative" else "plain"


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
    cpu: CpuSettings = CpuSettings()
    speculation: Speculation = Speculation()

    def properties(self) -> dict[str, Any]:
        props: dict[str, Any] = {}
        if self.cache_dir is not None:
            props["CACHE_DIR"] = str(self.cache_dir)
        if self.device == "CPU":
            props.update(self.cpu.properties())
        if self.device == "NPU":
            props.update(MAX_PROMPT_LEN=self.max_prompt_len, MIN_RESPONSE_LEN=self.min_response_len)
            props["GENERATE_HINT"] = "FAST_COMPILE" if self.emulate_npu else "BEST_PERF"
            if self.emulate_npu:
                props.update(NPU_ON_CPU)
        return props


@dataclass(frozen=True)
class EmbeddingSpec:
    """How to open one TextEmbeddingPipeline: the model folder, the device, how its vectors are
    pooled and normalised, and the most tokens it reads (longer texts are truncated to it)."""

    model_path: Path
    device: str
    pooling: Literal["mean", "cls", "last_token"]
    normalize: bool
    max_length: int
    cache_dir: Path | None = None

    def properties(self) -> dict[str, Any]:
        return {} if self.cache_dir is None else {"CACHE_DIR": str(self.cache_dir)}


# llama.cpp evaluates prompts in chunks of this many positions and keeps whole chunks of the last
# prompt for the next request (see LlamaCppPipeline).
LLAMA_CPP_CHUNK = 128


@dataclass(frozen=True)
class LlamaCppSpec:
    """How to open one GGUF in llama.cpp: the file, the converted model's folder whose tokenizer
    holds the chat template both runtimes render prompts with, the context it is opened for, its
    threads, whether its KV cache is kept from one request to the next (prefix reuse), and the
    chunk its prompts are evaluated in (see LlamaCppPipeline: reuse stops at a chunk boundary)."""

    gguf_path: Path
    tokenizer_path: Path
    context: int
    threads: int
    reuse_prefix: bool = True
    chunk: int = LLAMA_CPP_CHUNK
