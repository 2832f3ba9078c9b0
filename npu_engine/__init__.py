"""npu-engine: local, NPU-first inference for coder models on OpenVINO."""

from npu_engine.engine import Engine, GenerationMetrics, GenerationResult

__all__ = ["Engine", "GenerationMetrics", "GenerationResult"]
