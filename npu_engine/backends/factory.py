"""The default pipeline factory: which pipeline opens a spec (OpenVINO GenAI's, or llama.cpp's)."""

from typing import Any

from npu_engine.backends.batching import BatchingPipeline
from npu_engine.backends.llama_cpp import LlamaCppPipeline
from npu_engine.backends.openvino_embedding import OpenVinoEmbedder
from npu_engine.backends.openvino_genai import OpenVinoPipeline
from npu_engine.backends.pipeline_spec import EmbeddingSpec, LlamaCppSpec, PipelineSpec


class OpenVinoPipelineFactory:
    """The default pipeline factory; the engine takes any callable of the same shape.

    Plain decoding on the CPU or GPU gets a continuous-batching pipeline, so concurrent requests
    decode together; the NPU (static shapes, one request at a time) and the speculative and
    prompt-lookup modes get an LLMPipeline whose callers queue. An embedding model gets a
    TextEmbeddingPipeline; a GGUF for llama.cpp a LlamaCppPipeline.
    """

    def __call__(self, spec: PipelineSpec | EmbeddingSpec | LlamaCppSpec) -> Any:
        if isinstance(spec, LlamaCppSpec):
            return LlamaCppPipeline(spec)
        if isinstance(spec, EmbeddingSpec):
            return OpenVinoEmbedder(spec)
        if spec.batching is not None and spec.mode == "plain" and not spec.device.startswith("NPU"):
            return BatchingPipeline(spec, spec.batching)
        return OpenVinoPipeline(spec)
