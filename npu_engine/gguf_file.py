"""Reading what a GGUF file says about itself, and refusing files that are not whole GGUFs."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from npu_engine.errors import SourceError

GGUF_MAGIC = b"GGUF"


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


def read_gguf(path: Path) -> GgufInfo:
    """Parse the header of a GGUF file; SourceError for anything that is not a complete GGUF."""
    from gguf import GGUFReader

    if not path.is_file():
        raise SourceError(f"no such file: {path}")
    with path.open("rb") as stream:
        magic = stream.read(4)
    if magic != GGUF_MAGIC:
        raise SourceError(f"{path} is not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r})")
    try:
        reader = GGUFReader(path)
    except Exception as error:  # gguf raises ValueError, IndexError, struct errors... on damaged files
        raise SourceError(f"{path} is not a readable GGUF file: {error}") from None
    size = path.stat().st_size
    end = max((int(tensor.data_offset) + int(tensor.n_bytes) for tensor in reader.tensors), default=0)
    if not reader.tensors or end > size:
        raise SourceError(f"{path} is truncated: its tensors end at byte {end:,} but the file has {size:,}")
    metadata = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            metadata[key] = field.contents()
        except Exception:  # a field type gguf cannot decode is not needed here
            continue
    architecture = str(metadata.get("general.architecture", ""))
    if not architecture:
        raise SourceError(f"{path} has no general.architecture key")
    return GgufInfo(
        path=path,
        architecture=architecture,
        parameters=sum(int(tensor.n_elements) for tensor in reader.tensors),
        context_length=int(metadata.get(f"{architecture}.context_length", 0)),
        name=str(metadata.get("general.name", path.stem)),
        tensor_types=frozenset(tensor.tensor_type.name for tensor in reader.tensors),
        metadata=metadata,
    )
