"""Reading what a GGUF file says about itself, and refusing files that are not whole GGUFs.

The header is parsed here rather than by gguf's GGUFReader: that reader trusts the counts it reads
(an array that claims 2**62 one-byte items past the end of a 1 KB file keeps it looping for ever)
and takes 7 s over SmolLM2's 100,000 vocabulary strings, where this takes a fraction of a second.
Every count is checked against the bytes that are really there before anything is read.
"""

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from npu_engine.errors import SourceError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
# ggml tensors have at most four dimensions; nested metadata arrays are never deeper than two.
MAX_DIMS = 4
MAX_ARRAY_DEPTH = 4
# GGUF metadata value types: strings, arrays, and the struct codes of the scalars.
STRING, ARRAY = 8, 9
SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


@dataclass(frozen=True)
class GgufTensor:
    """One tensor as the header declares it; `shape` in ggml order (the row length first)."""

    name: str
    type: str
    shape: tuple[int, ...]
    offset: int
    n_bytes: int


@dataclass(frozen=True)
class GgufInfo:
    """The facts about a GGUF model that conversion needs."""

    path: Path
    architecture: str
    parameters: int
    context_length: int
    name: str
    tensor_types: frozenset[str]
    metadata: dict[str, Any]
    tensors: tuple[GgufTensor, ...] = ()
    alignment: int = 32
    size: int = 0


def read_gguf(path: Path) -> GgufInfo:
    """Parse the header of a GGUF file; SourceError for anything that is not a complete GGUF."""
    if not path.is_file():
        raise SourceError(f"no such file: {path}")
    with path.open("rb") as stream:
        magic = stream.read(4)
    if magic != GGUF_MAGIC:
        raise SourceError(f"{path} is not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r})")
    size = path.stat().st_size
    try:
        with path.open("rb") as stream, mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as data:
            metadata, tensors, alignment = _parse(data)
    except _Malformed as error:
        raise SourceError(f"{path} is not a readable GGUF file: {error}") from None
    end = max((tensor.offset + tensor.n_bytes for tensor in tensors), default=0)
    if not tensors or end > size:
        raise SourceError(f"{path} is truncated: its tensors end at byte {end:,} but the file has {size:,}")
    architecture = metadata.get("general.architecture")
    if not isinstance(architecture, str) or not architecture:
        raise SourceError(f"{path} has no general.architecture key")
    context = metadata.get(f"{architecture}.context_length", 0)
    name = metadata.get("general.name")
    return GgufInfo(
        path=path,
        architecture=architecture,
        parameters=sum(_elements(tensor.shape) for tensor in tensors),
        context_length=context if isinstance(context, int) and not isinstance(context, bool) else 0,
        name=name if isinstance(name, str) else path.stem,
        tensor_types=frozenset(tensor.type for tensor in tensors),
        metadata=metadata,
        tensors=tuple(tensors),
        alignment=alignment,
        size=size,
    )


def _elements(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


class _Cursor:
    """Reads little-endian values from the header, refusing to read past the end."""

    def __init__(self, data: mmap.mmap) -> None:
        self.data = data
        self.offset = 0

    def take(self, count: int, what: str) -> bytes:
        if count < 0 or self.offset + count > len(self.data):
            raise _Malformed(f"{what} at byte {self.offset:,} runs past the end of the file")
        chunk = self.data[self.offset : self.offset + count]
        self.offset += count
        return chunk

    def skip(self, count: int, what: str) -> None:
        if count < 0 or self.offset + count > len(self.data):
            raise _Malformed(f"{what} at byte {self.offset:,} runs past the end of the file")
        self.offset += count

    def u32(self, what: str) -> int:
        value: int = struct.unpack("<I", self.take(4, what))[0]
        return value

    def u64(self, what: str) -> int:
        value: int = struct.unpack("<Q", self.take(8, what))[0]
        return value

    def text(self, what: str, strict: bool = True) -> str:
        raw = self.take(self.u64(what), what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            if strict:
                raise _Malformed(f"{what} before byte {self.offset:,} is not UTF-8") from None
            return raw.decode("utf-8", "replace")

    def left(self) -> int:
        return len(self.data) - self.offset


class _Malformed(Exception):
    pass


def _parse(data: mmap.mmap) -> tuple[dict[str, Any], list[GgufTensor], int]:
    """Metadata, tensors and alignment from the header, every count checked against the file."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    cursor = _Cursor(data)
    cursor.skip(4, "magic")
    version = cursor.u32("version")
    if version not in SUPPORTED_VERSIONS:
        raise _Malformed(f"GGUF version {version} is not supported (supported: 2, 3; little-endian only)")
    tensor_count = cursor.u64("tensor count")
    kv_count = cursor.u64("metadata count")
    # Each metadata entry takes at least 13 bytes and each tensor entry at least 24.
    if kv_count * 13 > cursor.left() or tensor_count * 24 > cursor.left():
        raise _Malformed(
            f"it declares {kv_count:,} metadata entries and {tensor_count:,} tensors, more than fit"
        )
    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = cursor.text("metadata key")
        if key in metadata:
            raise _Malformed(f"metadata key {key!r} appears twice")
        metadata[key] = _value(cursor, cursor.u32("metadata type"), 0)
    entries = []
    for _ in range(tensor_count):
        name = cursor.text("tensor name")
        dims = cursor.u32("tensor dimension count")
        if not 1 <= dims <= MAX_DIMS:
            raise _Malformed(f"tensor {name!r} has {dims} dimensions (ggml allows 1 to {MAX_DIMS})")
        shape = tuple(cursor.u64("tensor shape") for _ in range(dims))
        entries.append((name, shape, cursor.u32("tensor type"), cursor.u64("tensor offset")))
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if (
        isinstance(alignment, bool)
        or not isinstance(alignment, int)
        or alignment < 1
        or alignment & (alignment - 1)
    ):
        raise _Malformed(f"general.alignment {alignment!r} is not a power of two")
    start = cursor.offset + (-cursor.offset % alignment)
    tensors, names = [], set()
    for name, shape, kind, offset in entries:
        if name in names:
            raise _Malformed(f"tensor {name!r} appears twice")
        names.add(name)
        try:
            quant = GGMLQuantizationType(kind)
            block, block_bytes = GGML_QUANT_SIZES[quant]
        except (ValueError, KeyError):
            raise _Malformed(f"tensor {name!r} has unknown type {kind}") from None
        if shape[0] % block:
            raise _Malformed(
                f"tensor {name!r} rows of {shape[0]} do not split into {quant.name} blocks of {block}"
            )
        n_bytes = _elements(shape) // block * block_bytes
        tensors.append(GgufTensor(name, quant.name, shape, start + offset, n_bytes))
    return metadata, tensors, alignment


def _value(cursor: _Cursor, kind: int, depth: int) -> Any:
    if kind in SCALAR_FORMATS:
        code = SCALAR_FORMATS[kind]
        return struct.unpack(f"<{code}", cursor.take(struct.calcsize(code), "metadata value"))[0]
    if kind == STRING:
        return cursor.text("metadata string", strict=False)
    if kind != ARRAY:
        raise _Malformed(f"unknown metadata type {kind} at byte {cursor.offset:,}")
    if depth >= MAX_ARRAY_DEPTH:
        raise _Malformed(f"metadata arrays nested deeper than {MAX_ARRAY_DEPTH} at byte {cursor.offset:,}")
    item = cursor.u32("array type")
    count = cursor.u64("array length")
    if item in SCALAR_FORMATS:
        code = SCALAR_FORMATS[item]
        chunk = cursor.take(count * struct.calcsize(code), "metadata array")
        return list(struct.unpack(f"<{count}{code}", chunk))
    # Strings and arrays take at least 8 bytes each: a longer count cannot be real.
    if count * 8 > cursor.left():
        raise _Malformed(f"a metadata array of {count:,} items at byte {cursor.offset:,} cannot fit")
    return [_value(cursor, item, depth + 1) for _ in range(count)]
