"""npu-engine: local, NPU-first inference for coder models on OpenVINO."""

from npu_engine.embedding import EmbeddingResult
from npu_engine.engine import Engine
from npu_engine.generation import GenerationMetrics
from npu_engine.request import GenerateRequest, GenerationResult, StreamChunk

__all__ = [
    "EmbeddingResult",
    "Engine",
    "GenerateRequest",
    "GenerationMetrics",
    "GenerationResult",
    "StreamChunk",
]
