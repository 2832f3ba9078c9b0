"""A GGUF's matrices, de-quantized exactly, a block of rows at a time, in the layout of the model
OpenVINO GenAI builds from the file.

GenAI's own reader turns a Q4_1 or Q4_K group's float minimum into a rounded integer zero point,
which moves every weight of the group by up to half a step; the bounded conversion reads the
values from the file instead (gguf's de-quantizers, as transformers' GGUF loader does), so it
starts from the weights llama.cpp runs.
"""

import mmap
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import numpy as np

from npu_engine.errors import ConversionError
from npu_engine.gguf_file import GgufInfo, GgufTensor

# The matrices of one layer in the order GenAI's builder creates their MatMuls.
LAYER_MATRICES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
# GenAI's reader takes these types (others it refuses); F32 holds the norms, never a matrix here.
GENAI_TYPES = frozenset({"F32", "F16", "Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q6_K"})
GENAI_ARCHITECTURES = ("llama", "qwen2", "qwen3")


@dataclass(frozen=True)
class Matrix:
    """One weight matrix of the file: `rows` by `columns` as the model multiplies by it.
    `permute` is GenAI's reordering of a llama q/k projection's rows (GGUF stores them
    interleaved), by head size; 0 when none."""

    tensor: GgufTensor
    rows: int
    columns: int
    permute: int = 0


def matrices(info: GgufInfo) -> list[Matrix]:
    """The file's matrices in the order the GenAI-built graph reads them: the embedding, each
    layer's seven projections, and the output head when it is not tied to the embedding."""
    by_name = {tensor.name: tensor for tensor in info.tensors}
    layers = int(info.metadata.get(f"{info.architecture}.block_count", 0))
    heads = int(info.metadata.get(f"{info.architecture}.attention.head_count", 0))
    embedding = int(info.metadata.get(f"{info.architecture}.embedding_length", 0))
    head_size = int(info.metadata.get(f"{info.architecture}.attention.key_length", 0)) or (
        embedding // heads if heads else 0
    )
    names = ["token_embd.weight"]
    names += [f"blk.{layer}.{matrix}.weight" for layer in range(layers) for matrix in LAYER_MATRICES]
    if "output.weight" in by_name:
        names.append("output.weight")
    missing = [name for name in names if name not in by_name]
    if missing:
        raise ConversionError(f"{info.path.name} has no tensor {missing[0]}")
    reorder = "llama" in info.architecture
    found = []
    for name in names:
        tensor = by_name[name]
        columns, rows = tensor.shape[0], tensor.shape[1] if len(tensor.shape) > 1 else 1
        projection = name.endswith(("attn_q.weight", "attn_k.weight"))
        found.append(Matrix(tensor, rows, columns, head_size if reorder and projection else 0))
    return found


def unsupported(info: GgufInfo) -> str | None:
    """Why GenAI cannot build `info`'s model (its tensor types aside: see gguf_standin); None
    when it can."""
    if info.architecture not in GENAI_ARCHITECTURES:
        return f"OpenVINO GenAI reads {', '.join(GENAI_ARCHITECTURES)} GGUFs, not {info.architecture}"
    if not isinstance(info.metadata.get("general.file_type"), int):
        return "the file has no general.file_type, which OpenVINO GenAI's reader needs"
    return None


class GgufRows:
    """Exact float32 rows of a GGUF's matrices, read through a memory map."""

    def __init__(self, data: mmap.mmap) -> None:
        self.data = data

    def rows(self, matrix: Matrix, start: int, stop: int) -> np.ndarray:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
        from gguf.quants import dequantize

        kind = GGMLQuantizationType[matrix.tensor.type]
        block, block_bytes = GGML_QUANT_SIZES[kind]
        row_bytes = matrix.columns // block * block_bytes
        index = np.arange(start, stop)
        if matrix.permute:
            index = _interleaved_source(index, matrix.permute)
        raw = np.frombuffer(
            self.data, dtype=np.uint8, count=matrix.rows * row_bytes, offset=matrix.tensor.offset
        ).reshape(matrix.rows, row_bytes)
        try:
            picked = raw[index]  # a copy: no view of the map outlives this call
        finally:
            del raw
        values = np.asarray(dequantize(picked, kind), dtype=np.float32).reshape(stop - start, matrix.columns)
        self._release(
            matrix.tensor.offset + int(index.min()) * row_bytes,
            int(index.max() - index.min() + 1) * row_bytes,
        )
        return values

    def _release(self, offset: int, length: int) -> None:
        """Let the kernel drop the pages just read from this process's resident set: each block is
        read once (twice for its first rows), and the page cache keeps it for a second read."""
        start = offset - offset % mmap.PAGESIZE
        self.data.madvise(mmap.MADV_DONTNEED, start, offset + length - start)


def _interleaved_source(rows: np.ndarray, head_size: int) -> np.ndarray:
    """GenAI's reordering: row r of a head comes from row 2r of the GGUF's head for the first half,
    from row 2(r - half) + 1 for the second."""
    head, within = np.divmod(rows, head_size)
    half = head_size // 2
    source = np.where(within < half, within * 2, (within - half) * 2 + 1)
    return np.asarray(head * head_size + source)


@contextmanager
def gguf_rows(info: GgufInfo) -> Iterator[GgufRows]:
    with info.path.open("rb") as stream:
        data = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            yield GgufRows(data)
        finally:
            # A view still held by a traceback's frame keeps the map open: it goes with the frame.
            with suppress(BufferError):
                data.close()
