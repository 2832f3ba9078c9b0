"""A stand-in GGUF for OpenVINO GenAI's reader when a file holds tensor types it does not take.

GenAI's reader takes F32, F16, Q4_0, Q4_1, Q8_0, Q4_K and Q6_K. A llama.cpp Q4_K_M file of a model
whose rows are no multiple of 256 (Qwen2.5-Coder-0.5B: 896) falls back to Q5_0 for most of its
matrices, and other mixes use Q5_K, Q3_K or the IQ types. The bounded conversion only takes the
graph from GenAI (its weights are read exactly from the original file, `gguf_weights`), so the
stand-in is the same file with each such matrix re-quantized to Q8_0 from its exact values: close
enough for `requantize.match_exact` to recognise it, and the same shapes.
"""

from pathlib import Path
from typing import Any

import numpy as np

from npu_engine.gguf_file import GgufInfo
from npu_engine.gguf_weights import GENAI_TYPES

# Types gguf's de-quantizers read (gguf.quants), which the stand-in re-quantizes.
STANDIN_TYPES = frozenset(
    {"BF16", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q5_K", "IQ1_M", "IQ1_S", "IQ2_S", "IQ2_XS", "IQ2_XXS"}
    | {"IQ3_S", "IQ3_XXS", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0"}
)


def needs_standin(info: GgufInfo) -> bool:
    return bool(info.tensor_types - GENAI_TYPES)


def standin_refusal(info: GgufInfo) -> str | None:
    """Why no stand-in can be written for `info`; None when one can (or none is needed)."""
    other = sorted(info.tensor_types - GENAI_TYPES - STANDIN_TYPES)
    if other:
        return f"OpenVINO GenAI does not read {', '.join(other)} tensors"
    return None  # every quantized type here has blocks of 32 or 256 values: Q8_0's 32 divide them


def copy_metadata(
    reader: Any, writer: Any, overrides: dict[str, Any] | None = None, skip: tuple[str, ...] = ()
) -> None:
    """Every metadata key of a GGUFReader into a GGUFWriter, with its types, but the reader's own
    header fields, the architecture (the writer has it) and `skip`; `overrides` replace values."""
    from gguf import GGUFValueType

    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in skip:
            continue
        kind = field.types[0]
        sub = field.types[1] if kind == GGUFValueType.ARRAY else None
        value = (overrides or {}).get(key, field.contents())
        writer.add_key_value(key, value, kind, sub_type=sub)


def write_standin(info: GgufInfo, out: Path) -> None:
    """Write the stand-in of `info` to `out`: its metadata, and its tensors, each of a type GenAI's
    reader does not take re-quantized to Q8_0 (BF16 to F16)."""
    from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter
    from gguf.quants import dequantize, quantize

    reader = GGUFReader(info.path)
    writer = GGUFWriter(str(out), info.architecture)
    if info.alignment != writer.data_alignment:
        writer.add_custom_alignment(info.alignment)
    copy_metadata(reader, writer, skip=("general.alignment",))
    for tensor in reader.tensors:
        data: Any = tensor.data
        kind = GGMLQuantizationType(int(tensor.tensor_type))
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        if kind.name in GENAI_TYPES:
            writer.add_tensor(tensor.name, data, raw_dtype=kind)
            continue
        values = np.asarray(dequantize(np.asarray(data), kind), dtype=np.float32).reshape(shape)
        if kind == GGMLQuantizationType.BF16:
            writer.add_tensor(tensor.name, values.astype(np.float16))
        else:
            q8 = GGMLQuantizationType.Q8_0
            writer.add_tensor(tensor.name, quantize(values, q8), raw_dtype=q8)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
