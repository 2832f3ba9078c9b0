"""Data-aware mixed precision for the bounded conversion: which layers stay at INT8.

NNCF's criterion (`MAX_ACTIVATION_VARIANCE`, its default with a dataset) scores each layer by the
largest per-channel variance of its input over the calibration tokens times the inverse of the
INT8 error of its weights, and gives INT4 to the lowest-scored layers until `ratio` of the
layers' weights is INT4. Here the activations come from running the model OpenVINO GenAI built
from the GGUF's quantized tensors (the de-quantize path runs its float32 export), and the INT8
errors from the exact weights, a block of rows at a time.
"""

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import openvino as ov
from openvino import opset13 as ops

from npu_engine.requantize import INT8_ASYM, RowSource, WeightPlan, blocks, quiet_nncf

# NNCF's eps in the weight score: float32's.
EPS = float(np.finfo(np.float32).eps)


def activation_variances(
    graph: Path, matmuls: Sequence[str], token_ids: Sequence[Sequence[int]]
) -> list[float]:
    """For each MatMul named in `matmuls` (of the stateful GenAI-style LLM saved at `graph`), the
    mean over the calibration samples of the largest variance, over the sequence, of one channel
    of the activation it multiplies; measured in one compiled copy with extra outputs."""
    core = ov.Core()
    model = core.read_model(graph)
    by_name = {node.get_friendly_name(): node for node in model.get_ordered_ops()}
    index_of: dict[tuple[int, int], int] = {}
    outputs: list[ov.Output] = []
    order: list[int] = []
    for name in matmuls:
        source = by_name[name].input(0).get_source_output()
        key = (source.get_node().get_instance_id(), source.get_index())
        if key not in index_of:
            index_of[key] = len(outputs)
            mean = ops.reduce_mean(source, np.array([-2]), keep_dims=True)
            variance = ops.reduce_mean(ops.squared_difference(source, mean), np.array([-2]), keep_dims=True)
            rank = source.get_partial_shape().rank.get_length()
            outputs.append(ops.reduce_max(variance, np.arange(rank), keep_dims=False).output(0))
        order.append(index_of[key])
    first = len(model.outputs)
    model.add_outputs(outputs)
    request = core.compile_model(model, "CPU").create_infer_request()
    measured = np.zeros((len(token_ids), len(outputs)))
    # Longest sample first: the plugin's buffers are sized once for it and reused by the shorter
    # ones (the 1.5B's calibration peaked 0.3 GB lower than in the given order).
    for sample in sorted(range(len(token_ids)), key=lambda i: -len(token_ids[i])):
        ids = token_ids[sample]
        request.reset_state()
        length = len(ids)
        request.infer(
            {
                "input_ids": np.array([ids], dtype=np.int64),
                "attention_mask": np.ones((1, length), dtype=np.int64),
                "position_ids": np.arange(length, dtype=np.int64)[None, :],
                "beam_idx": np.zeros(1, dtype=np.int32),
            }
        )
        for index in range(len(outputs)):
            measured[sample, index] = float(request.get_output_tensor(first + index).data)
    totals = np.zeros(len(outputs))
    for row in measured:  # summed in the samples' own order, as they always were
        totals += row
    means = totals / max(1, len(token_ids))
    return [float(means[index]) for index in order]


def int8_error(rows: RowSource, shape: tuple[int, int]) -> float:
    """NNCF's INT8 asymmetric error of a weight, `max_mean`: the largest, over output rows, mean
    squared difference between a row and its INT8 round trip."""
    quiet_nncf()
    from nncf import CompressWeightsMode
    from nncf.quantization.algorithms.weight_compression.config import WeightCompressionConfig
    from nncf.quantization.algorithms.weight_compression.weight_lowering import (
        integer_quantize_dequantize_weight,
    )
    from nncf.tensor import Tensor

    config = WeightCompressionConfig(mode=CompressWeightsMode(INT8_ASYM))
    worst = 0.0
    for start, stop in blocks(*shape):
        values = rows(start, stop)
        trip = np.asarray(integer_quantize_dequantize_weight(Tensor(values), config, (1,)).data)
        worst = max(worst, float(np.max(np.mean((trip.reshape(values.shape) - values) ** 2, axis=1))))
    return worst


def int4_layers(sizes: Sequence[int], scores: Sequence[float], ratio: float) -> set[int]:
    """NNCF's choice: in ascending order of score, layers take INT4 while the INT4 share of all
    the layers' weights stays below `ratio`."""
    total = sum(sizes)
    chosen: set[int] = set()
    taken = 0
    for index in sorted(range(len(scores)), key=lambda i: scores[i]):
        if (taken + sizes[index]) / total >= ratio:
            break
        chosen.add(index)
        taken += sizes[index]
    return chosen


def calibration_token_ids(tokenizer_dir: Path, texts: Sequence[str]) -> list[list[int]]:
    """The calibration texts tokenized by the converted model's own OpenVINO tokenizer."""
    import openvino_genai

    tokenizer = openvino_genai.Tokenizer(str(tokenizer_dir))
    return [list(np.asarray(tokenizer.encode(text).input_ids.data)[0]) for text in texts]


def mixed_precision(
    plans: list[WeightPlan], ratio: float, graph: Path, token_ids: Sequence[Sequence[int]]
) -> list[WeightPlan]:
    """`plans` with the INT4 layers that NNCF's criterion would keep at INT8 set back to INT8:
    of the layers (not the embedding or head) planned as INT4, the highest-scored whose weights
    make up the last (1 - `ratio`) of them."""
    candidates = [i for i, plan in enumerate(plans) if plan.role == "layer" and plan.mode.startswith("int4")]
    if not candidates or ratio >= 1.0:
        return plans
    names = [plans[i].users[0].get_node().get_friendly_name() for i in candidates]
    # Without calibration text, NNCF's data-free score: the inverse INT8 error alone.
    variances = activation_variances(graph, names, token_ids) if token_ids else [1.0] * len(candidates)
    scores = [
        variance / (int8_error(plans[i].rows, plans[i].weight.shape) + EPS)
        for i, variance in zip(candidates, variances, strict=True)
    ]
    sizes = [plans[i].weight.shape[0] * plans[i].weight.shape[1] for i in candidates]
    keep = int4_layers(sizes, scores, ratio)
    back_to_int8 = {index for k, index in enumerate(candidates) if k not in keep}
    return [
        replace(plan, mode=INT8_ASYM, group=-1) if i in back_to_int8 else plan for i, plan in enumerate(plans)
    ]
