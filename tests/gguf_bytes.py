"""GGUF files built and edited byte by byte, for the checks and the fuzz target.

`rewrite` copies a real GGUF with some metadata values or tensor types changed: the tensor data is
copied as it is (its offsets are relative to the aligned data section), so a 100 MB model is
corrupted in a fraction of a second. `tiny_llama` builds a complete, consistent llama GGUF of a
few kilobytes from scratch.
"""

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

U32, I32, F32, BOOL, STRING, ARRAY, U64 = 4, 5, 6, 7, 8, 9, 10
FIXED = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
F32_TYPE, Q8_0_TYPE = 0, 8


@dataclass
class Kv:
    key: str
    type: int
    value: bytes  # encoded as it sits in the file, after the type


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    type: int
    offset: int


def string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def scalar(kind: int, value: float | int | bool) -> bytes:
    return struct.pack(FIXED[kind], value)


def array(kind: int, items: list[bytes]) -> bytes:
    return struct.pack("<IQ", kind, len(items)) + b"".join(items)


def kv(key: str, kind: int, value: bytes) -> Kv:
    return Kv(key, kind, value)


def u32(key: str, value: int) -> Kv:
    return Kv(key, U32, scalar(U32, value))


def f32(key: str, value: float) -> Kv:
    return Kv(key, F32, scalar(F32, value))


def text(key: str, value: str) -> Kv:
    return Kv(key, STRING, string(value))


def build(kvs: list[Kv], tensors: list[TensorInfo], data: bytes, alignment: int = 32) -> bytes:
    """A GGUF v3 file from its parts; `data` is the tensor data section."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)))
    for entry in kvs:
        out += string(entry.key) + struct.pack("<I", entry.type) + entry.value
    for tensor in tensors:
        out += string(tensor.name) + struct.pack("<I", len(tensor.shape))
        out += b"".join(struct.pack("<Q", dim) for dim in tensor.shape)
        out += struct.pack("<IQ", tensor.type, tensor.offset)
    out += b"\0" * (-len(out) % alignment)
    return bytes(out) + data


def parse(blob: bytes) -> tuple[list[Kv], list[TensorInfo], int]:
    """The metadata, tensor entries and data-section offset of a well-formed GGUF."""
    offset = 8
    tensor_count, kv_count = struct.unpack_from("<QQ", blob, offset)
    offset += 16
    kvs = []
    for _ in range(kv_count):
        key, offset = _string(blob, offset)
        kind = struct.unpack_from("<I", blob, offset)[0]
        offset += 4
        end = _skip(blob, offset, kind)
        kvs.append(Kv(key.decode(), kind, blob[offset:end]))
        offset = end
    tensors = []
    for _ in range(tensor_count):
        name, offset = _string(blob, offset)
        dims = struct.unpack_from("<I", blob, offset)[0]
        shape = struct.unpack_from(f"<{dims}Q", blob, offset + 4)
        offset += 4 + 8 * dims
        kind, start = struct.unpack_from("<IQ", blob, offset)
        offset += 12
        tensors.append(TensorInfo(name.decode(), tuple(shape), kind, start))
    alignment = 32
    offset += -offset % alignment
    return kvs, tensors, offset


def rewrite(
    source: Path,
    target: Path,
    edit: Callable[[list[Kv]], list[Kv]] = lambda kvs: kvs,
    retype: dict[str, int] | None = None,
) -> Path:
    """Copy `source` to `target` with its metadata passed through `edit` and tensor types changed."""
    blob = source.read_bytes()
    kvs, tensors, data_start = parse(blob)
    for tensor in tensors:
        tensor.type = (retype or {}).get(tensor.name, tensor.type)
    target.write_bytes(build(edit(kvs), tensors, blob[data_start:]))
    return target


def replace(key: str, new: Kv | None) -> Callable[[list[Kv]], list[Kv]]:
    """An edit that swaps (or, with None, drops) the value of `key`."""

    def edit(kvs: list[Kv]) -> list[Kv]:
        return [new if entry.key == key else entry for entry in kvs if entry.key != key or new is not None]

    return edit


def rename_architecture(old: str, new: str, keys_too: bool) -> Callable[[list[Kv]], list[Kv]]:
    """Relabel the architecture; with `keys_too` its `old.*` keys become `new.*` as well."""

    def edit(kvs: list[Kv]) -> list[Kv]:
        out = []
        for entry in kvs:
            if entry.key == "general.architecture":
                entry = text(entry.key, new)
            elif keys_too and entry.key.startswith(f"{old}."):
                entry = Kv(new + entry.key[len(old) :], entry.type, entry.value)
            out.append(entry)
        return out

    return edit


def tiny_llama(edit: Callable[[list[Kv]], list[Kv]] = lambda kvs: kvs, layers: int = 2) -> bytes:
    """A whole llama GGUF: hidden 8, 2 heads of 4, 1 KV head, 16-wide FFN, 4 tokens, F32 zeros."""
    hidden, heads, kv_heads, head_dim, ffn, vocab = 8, 2, 1, 4, 16, 4
    tokens = ["<s>", "</s>", "a", "b"]
    kvs = [
        text("general.architecture", "llama"),
        text("general.name", "tiny"),
        u32("llama.block_count", layers),
        u32("llama.context_length", 64),
        u32("llama.embedding_length", hidden),
        u32("llama.feed_forward_length", ffn),
        u32("llama.attention.head_count", heads),
        u32("llama.attention.head_count_kv", kv_heads),
        f32("llama.attention.layer_norm_rms_epsilon", 1e-5),
        f32("llama.rope.freq_base", 10000.0),
        text("tokenizer.ggml.model", "gpt2"),
        text("tokenizer.ggml.pre", "default"),
        kv("tokenizer.ggml.tokens", ARRAY, array(STRING, [string(token) for token in tokens])),
        kv(
            "tokenizer.ggml.token_type",
            ARRAY,
            array(I32, [scalar(I32, 3), scalar(I32, 3), b"\1\0\0\0", b"\1\0\0\0"]),
        ),
        kv("tokenizer.ggml.merges", ARRAY, array(STRING, [string("a b")])),
        u32("tokenizer.ggml.bos_token_id", 0),
        u32("tokenizer.ggml.eos_token_id", 1),
        text("tokenizer.chat_template", "{% for m in messages %}{{ m['content'] }}{% endfor %}"),
    ]
    shapes: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (hidden, vocab))]
    for layer in range(layers):
        shapes += [
            (f"blk.{layer}.attn_norm.weight", (hidden,)),
            (f"blk.{layer}.attn_q.weight", (hidden, heads * head_dim)),
            (f"blk.{layer}.attn_k.weight", (hidden, kv_heads * head_dim)),
            (f"blk.{layer}.attn_v.weight", (hidden, kv_heads * head_dim)),
            (f"blk.{layer}.attn_output.weight", (heads * head_dim, hidden)),
            (f"blk.{layer}.ffn_norm.weight", (hidden,)),
            (f"blk.{layer}.ffn_gate.weight", (hidden, ffn)),
            (f"blk.{layer}.ffn_up.weight", (hidden, ffn)),
            (f"blk.{layer}.ffn_down.weight", (ffn, hidden)),
        ]
    shapes.append(("output_norm.weight", (hidden,)))
    tensors, data = [], bytearray()
    for name, shape in shapes:
        tensors.append(TensorInfo(name, shape, F32_TYPE, len(data)))
        size = 4
        for dim in shape:
            size *= dim
        data += b"\0" * size + b"\0" * (-size % 32)
    return build(edit(kvs), tensors, bytes(data))


def _string(blob: bytes, offset: int) -> tuple[bytes, int]:
    length = struct.unpack_from("<Q", blob, offset)[0]
    return blob[offset + 8 : offset + 8 + length], offset + 8 + length


def _skip(blob: bytes, offset: int, kind: int) -> int:
    if kind in FIXED:
        return offset + struct.calcsize(FIXED[kind])
    if kind == STRING:
        return _string(blob, offset)[1]
    item, count = struct.unpack_from("<IQ", blob, offset)
    offset += 12
    if item in FIXED:
        return offset + count * struct.calcsize(FIXED[item])
    for _ in range(count):
        offset = _skip(blob, offset, item)
    return offset
