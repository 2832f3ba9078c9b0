"""Re-compress an OpenVINO model's weights one at a time, never holding its full-precision weights.

OpenVINO GenAI builds a model straight from a GGUF's quantized tensors: each weight is a small
decompression subgraph (packed integers, scales, zero points) feeding a MatMul or the embedding
Gather. Here each such weight is de-quantized alone (in row blocks, so even a 150k-row
embedding costs a few hundred MB), compressed with NNCF's own weight lowering as `recipe` says,
and put back in the graph in the layout NNCF writes, which the CPU, GPU and NPU plugins read as
compressed weights. Peak memory is the source model, the output model and one block of rows.
"""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import openvino as ov
from openvino import opset13 as ops

from npu_engine.errors import ConversionError
from npu_engine.recipes import Recipe

RowSource = Callable[[int, int], np.ndarray]

# Rows de-quantized and compressed at once: 16M weights, 64 MB as float32.
BLOCK_WEIGHTS = 16 << 20
# NNCF's smallest group when a layer's row length is no multiple of the recipe's group size
# ("adjust": the largest power of two dividing the row length, if at least this).
MIN_ADJUSTED_GROUP = 32
INT8_ASYM = "int8_asym"
MIN_PLAIN = 64
# Mean difference, relative to the mean magnitude, between a weight as the file holds it and as
# GenAI's graph rounds it, beyond which they are not the same matrix (a rounded zero point moves
# values by at most half an INT4 step: about 0.1 of the mean magnitude).
SAME_WEIGHT_TOLERANCE = 0.35
SIGNATURE_ROWS = 4


@dataclass(frozen=True)
class Decompression:
    """A weight as the source graph holds it: the node whose float output the MatMul/Gather reads,
    and the constants it is computed from."""

    output: ov.Output
    weights: ov.Node
    zero_point: ov.Node | None
    scale: ov.Node | None
    shape: tuple[int, int]


def find_weights(model: ov.Model) -> list[tuple[Decompression, list[ov.Input]]]:
    """Every 2-D weight read by a MatMul (as its second input) or an embedding Gather (first input),
    with the inputs that read it; each weight once, in graph order."""
    found: dict[tuple[int, int], tuple[Decompression, list[ov.Input]]] = {}
    for node in model.get_ordered_ops():
        kind = node.get_type_name()
        port = 1 if kind == "MatMul" else 0 if kind == "Gather" else None
        if port is None:
            continue
        source = node.input(port).get_source_output()
        key = (source.get_node().get_instance_id(), source.get_index())
        if key in found:
            found[key][1].append(node.input(port))
            continue
        weight = _decompression(source, gathered=kind == "Gather")
        if weight is not None:
            found[key] = (weight, [node.input(port)])
    return list(found.values())


def _decompression(output: ov.Output, gathered: bool) -> Decompression | None:
    """The constants behind `output` when it is a weight: Convert(f32) of [Reshape of]
    Multiply(Subtract(Convert(q), Convert(zp)) | Convert(q), scale), or a plain float constant
    (a MatMul's of at least MIN_PLAIN rows and columns, a Gather's only in 16 bits: a float32
    table a Gather reads is the rotary embedding's, not a weight)."""
    node = output.get_node()
    shape = tuple(output.get_partial_shape().to_shape()) if output.get_partial_shape().is_static else ()
    if len(shape) != 2:
        return None
    if node.get_type_name() == "Convert":
        node = node.input(0).get_source_output().get_node()
    if node.get_type_name() == "Constant":
        kinds = (ov.Type.f16, ov.Type.bf16) if gathered else (ov.Type.f16, ov.Type.f32, ov.Type.bf16)
        if node.get_element_type() not in kinds or min(shape) < MIN_PLAIN:
            return None
        return Decompression(output, node, None, None, (shape[0], shape[1]))
    if node.get_type_name() == "Reshape":
        node = node.input(0).get_source_output().get_node()
    if node.get_type_name() != "Multiply":
        return None
    scale = _constant(node.input(1).get_source_output().get_node())
    body = node.input(0).get_source_output().get_node()
    zero_point = None
    if body.get_type_name() == "Subtract":
        zero_point = _constant(body.input(1).get_source_output().get_node())
        body = body.input(0).get_source_output().get_node()
        if zero_point is None:
            return None
    weights = _constant(body)
    if weights is None or scale is None:
        return None
    return Decompression(output, weights, zero_point, scale, (shape[0], shape[1]))


def _constant(node: ov.Node) -> ov.Node | None:
    """`node` if it is a Constant, or the Constant a Convert reads."""
    if node.get_type_name() == "Convert":
        node = node.input(0).get_source_output().get_node()
    return node if node.get_type_name() == "Constant" else None


def dequantize_rows(weight: Decompression, start: int, stop: int) -> np.ndarray:
    """Rows `start:stop` of `weight` as float32, computed as the graph computes them."""
    rows, columns = weight.shape
    q = _float_rows(weight.weights, rows, start, stop)
    if weight.scale is None:
        return q.reshape(stop - start, columns)
    # q is [rows, groups, group] (or [rows, columns]); zero point and scale broadcast over it.
    if weight.zero_point is not None:
        q = q - _float_rows(weight.zero_point, rows, start, stop)
    return np.asarray(q * _float_rows(weight.scale, rows, start, stop)).reshape(stop - start, columns)


def _float_rows(node: ov.Node, rows: int, start: int, stop: int) -> np.ndarray:
    """Rows `start:stop` of a constant whose first dimension is the weight's rows (all of a
    scalar or a constant without one) as float32; 4-bit values unpacked, low nibble first."""
    kind = node.get_element_type()
    shape = tuple(node.get_shape())
    if not shape or shape[0] != rows:
        start, stop = 0, shape[0] if shape else 1
    if kind not in (ov.Type.u4, ov.Type.i4):
        data = np.asarray(node.get_data()).reshape(shape)
        return np.asarray(data[start:stop] if shape else data, dtype=np.float32)
    per_row = int(np.prod(shape[1:], dtype=np.int64))
    packed = np.asarray(node.get_data()).view(np.uint8).reshape(-1)
    if per_row % 2:
        raise ConversionError(f"a 4-bit constant of shape {shape} has rows of an odd length")
    chunk = packed[start * per_row // 2 : stop * per_row // 2]
    nibbles = np.empty(chunk.size * 2, dtype=np.int16)
    nibbles[0::2] = chunk & 0x0F
    nibbles[1::2] = chunk >> 4
    if kind == ov.Type.i4:
        nibbles = np.where(nibbles > 7, nibbles - 16, nibbles)
    return nibbles.astype(np.float32).reshape((stop - start, *shape[1:]))


def mode_for(recipe: Recipe, role: str) -> str:
    """NNCF's mode for a weight: INT4 recipes keep the embedding and the head at INT8 (as
    NNCF's default backup mode does), INT8 and FP16 recipes treat every weight alike."""
    if recipe.weight_format == "fp16":
        return "fp16"
    if recipe.weight_format == "int8":
        return "int8_sym" if recipe.sym else INT8_ASYM
    if role in ("embedding", "head"):
        return INT8_ASYM
    return "int4_sym" if recipe.sym else "int4_asym"


def group_for(recipe: Recipe, mode: str, columns: int) -> int | None:
    """The group size a weight is compressed with; None when the recipe leaves it as it is."""
    if not mode.startswith("int4") or recipe.group_size == -1:
        return -1
    if columns % recipe.group_size == 0:
        return recipe.group_size
    if recipe.group_size_fallback != "adjust":
        return None
    adjusted = columns & -columns
    return adjusted if adjusted >= MIN_ADJUSTED_GROUP else None


@cache
def quiet_nncf() -> None:
    """NNCF imported (with torch under it) and its logs silenced: called where it is first needed,
    so that a conversion loads it only after its calibration (see gguf_export)."""
    import nncf  # sets its own logger's level when imported: import it before setting ours

    nncf.set_log_level(logging.ERROR)
    for name in ("nncf", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)


def compress_rows(
    values: np.ndarray, mode: str, group: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """NNCF's integer compression of a block of rows: (integers, scale, zero point), grouped as
    [rows, groups, group] when `group` is not -1."""
    quiet_nncf()
    from nncf import CompressWeightsMode
    from nncf.quantization.algorithms.weight_compression.config import WeightCompressionConfig
    from nncf.quantization.algorithms.weight_compression.weight_lowering import compress_weight
    from nncf.tensor import Tensor

    config = WeightCompressionConfig(mode=CompressWeightsMode(mode), group_size=group)
    compressed = compress_weight(Tensor(values), (1,), config)
    # Copies: NNCF's OpenVINO-accelerated lowering hands back its infer request's own buffers,
    # which the next block overwrites.
    zero_point = None if compressed.zero_point is None else np.array(compressed.zero_point.data)
    return np.array(compressed.tensor.data), np.array(compressed.scale.data), zero_point


# NNCF mode: the OpenVINO type of its integers, and the NumPy type they are handed over in (a
# Constant built from another NumPy type takes its bytes, not its values).
COMPRESSED_TYPES: dict[str, tuple[ov.Type, type[np.integer[Any]]]] = {
    "int4_asym": (ov.Type.u4, np.uint8),
    "int4_sym": (ov.Type.i4, np.int8),
    "int8_asym": (ov.Type.u8, np.uint8),
    "int8_sym": (ov.Type.i8, np.int8),
}


def blocks(rows: int, columns: int) -> list[tuple[int, int]]:
    """Row ranges of about BLOCK_WEIGHTS weights."""
    step = max(1, BLOCK_WEIGHTS // columns)
    return [(start, min(rows, start + step)) for start in range(0, rows, step)]


def compressed_subgraph(
    shape: tuple[int, int], source: RowSource, mode: str, group: int, name: str
) -> ov.Output:
    """The weight `source` reads compressed in `mode`, block of rows by block, as NNCF lays it
    out in a model."""
    rows, columns = shape
    parts = [compress_rows(source(start, stop), mode, group) for start, stop in blocks(rows, columns)]
    kind, numpy_type = COMPRESSED_TYPES[mode]
    integers = np.concatenate([p[0] for p in parts]).astype(numpy_type)
    scale = np.concatenate([p[1] for p in parts]).astype(np.float16)
    body = ops.convert(ops.constant(integers, dtype=kind, name=name), ov.Type.f16)
    if parts[0][2] is not None:
        zero_point = np.concatenate([p[2] for p in parts if p[2] is not None]).astype(numpy_type)
        zp = ops.convert(ops.constant(zero_point, dtype=kind, name=f"{name}/zero_point"), ov.Type.f16)
        body = ops.subtract(body, zp, name=f"{name}/zero_point/subtract")
    product = ops.multiply(body, ops.constant(scale, name=f"{name}/scale"), name=f"{name}/fq_weights")
    if group != -1:
        product = ops.reshape(product, ops.constant(np.array([rows, columns], dtype=np.int64)), False)
    return ops.convert(product, ov.Type.f32, name=f"{name}/fq_weights/convert").output(0)


def fp16_subgraph(shape: tuple[int, int], source: RowSource, name: str) -> ov.Output:
    values = np.concatenate([source(start, stop).astype(np.float16) for start, stop in blocks(*shape)])
    return ops.convert(ops.constant(values, name=name), ov.Type.f32).output(0)


@dataclass(frozen=True)
class ExactWeight:
    """A weight as the source file holds it: its name there, its shape, and its rows."""

    name: str
    shape: tuple[int, int]
    rows: RowSource


def match_exact(weights: Sequence[Decompression], candidates: Sequence[ExactWeight]) -> list[ExactWeight]:
    """For each graph weight, the file's matrix it was built from: of those of its shape not yet
    used, the one whose first rows are closest to the graph's own rounding of them, if within
    SAME_WEIGHT_TOLERANCE (a wrong matrix differs by about the values themselves; a tied
    embedding and head differ only by their rounding). ConversionError when none is."""
    signatures = {id(c): c.rows(0, min(SIGNATURE_ROWS, c.shape[0])) for c in candidates}
    unused = list(candidates)
    matched = []
    for weight in weights:
        graph = dequantize_rows(weight, 0, min(SIGNATURE_ROWS, weight.shape[0]))
        distances = [
            (_distance(graph, signatures[id(c)]), i) for i, c in enumerate(unused) if c.shape == weight.shape
        ]
        if not distances or min(distances)[0] > SAME_WEIGHT_TOLERANCE:
            raise ConversionError(
                f"no matrix of the file matches a {weight.shape[0]}x{weight.shape[1]} weight of the "
                "model OpenVINO GenAI built from it"
            )
        matched.append(unused.pop(min(distances)[1]))
    if unused:
        raise ConversionError(
            f"the model OpenVINO GenAI built does not read {unused[0].name} of the file as a weight "
            "this converter recognises (npu-convert --dequantize takes the float path)"
        )
    return matched


def _distance(graph: np.ndarray, exact: np.ndarray) -> float:
    """Mean absolute difference relative to the mean magnitude."""
    return float(np.mean(np.abs(graph - exact))) / (float(np.mean(np.abs(exact))) or 1.0)


@dataclass(frozen=True)
class WeightPlan:
    """How one weight is re-compressed: where it is read from and with which NNCF mode
    (`fp16` for left as it is) and group size."""

    weight: Decompression
    users: list[ov.Input]
    name: str
    rows: RowSource
    role: str  # embedding, head or layer
    mode: str
    group: int


def plan_weights(model: ov.Model, recipe: Recipe, exact: Sequence[ExactWeight]) -> list[WeightPlan]:
    """How `recipe` re-compresses each weight of `model`: INT4 recipes keep the embedding and the
    head at INT8 (NNCF's default). `exact` are the weights' true values, as the source file
    holds them: each graph weight is matched to one, and each to a graph weight."""
    weights = find_weights(model)
    matched = match_exact([w for w, _ in weights], exact)
    head = _head(model, weights)
    plans = []
    for index, (weight, users) in enumerate(weights):
        role = "embedding" if _gathered(users) else "head" if weight is head else "layer"
        mode = mode_for(recipe, role)
        group = group_for(recipe, mode, weight.shape[1]) if mode != "fp16" else -1
        if group is None:
            mode, group = "fp16", -1
        source = matched[index]
        plans.append(WeightPlan(weight, users, source.name, source.rows, role, mode, group))
    return plans


def apply_plans(plans: Sequence[WeightPlan]) -> None:
    """Replace each planned weight in its graph by its re-compressed subgraph."""
    for plan in plans:
        shape = plan.weight.shape
        if plan.mode == "fp16":
            replacement = fp16_subgraph(shape, plan.rows, plan.name)
        else:
            replacement = compressed_subgraph(shape, plan.rows, plan.mode, plan.group, plan.name)
        for user in plan.users:
            user.replace_source_output(replacement)


def _head(model: ov.Model, weights: list[tuple[Decompression, list[ov.Input]]]) -> Decompression | None:
    """The weight the model's last MatMul reads: the head (the embedding itself when tied)."""
    last = next((n for n in reversed(model.get_ordered_ops()) if n.get_type_name() == "MatMul"), None)
    if last is None:
        return None
    source = last.input(1).get_source_output()
    return next((w for w, _ in weights if w.output == source), None)


def _gathered(users: list[ov.Input]) -> bool:
    return any(user.get_node().get_type_name() == "Gather" for user in users)
