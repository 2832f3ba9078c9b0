"""The default pipeline factory: which OpenVINO GenAI pipeline opens a PipelineSpec."""

from typing import Any

from npu_engine.backends.batching import BatchingPipeline
from npu_engine.backends.openvino_embedding import OpenVinoEmbedder
from npu_engine.backends.openvino_genai import OpenVinoPipeline
from npu_engine.backends.pipeline_spec import EmbeddingSpec, PipelineSpec


class OpenVinoPipelineFactory:
    """The default pipeline factory; the engine takes any callable of the same shape.

    Plain decoding on the CPU or GPU gets a continuous-batching pipeline, so concurrent requests
    decode together; the NPU (static shapes, one request at a time) and the speculative and
    prompt-lookup modes get an LLMPipeline whose callers queue. An embedding model gets a
    TextEmbeddingPipeline.
    """

    def __call__(self, spec: PipelineSpec | EmbeddingSpec) -> Any:
        if isinstance(spec, EmbeddingSpec):
            return OpenVinoEmbedder(spec)
        if spec.batching is not None and spec.mode == "plain" and not spec.device.startswith("NPU"):
            return BatchingPipeline(spec, spec.batching)
        return OpenVinoPipeline(spec)
