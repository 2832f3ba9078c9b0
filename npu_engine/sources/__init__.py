"""Model sources: turn what the user named into a local file or folder that conversion can read.

Specs: a Hugging Face folder, a `.gguf` file, `hf:ORG/NAME[@REVISION]`, `ollama:NAME[:TAG]`, or
`pkg:NAME` (a catalog model shipped in registry packages).
"""

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from npu_engine.embedding import EmbeddingInfo
from npu_engine.errors import UserInputError
from npu_engine.files import sha256_file
from npu_engine.gguf_file import GgufInfo
from npu_engine.progress import Reporter
from npu_engine.recipes import Recipe

SourceFormat = Literal["gguf", "hf", "ir"]

SPEC_HELP = "a folder (Hugging Face or OpenVINO IR), a .gguf file, hf:ORG/NAME, ollama:NAME[:TAG] or pkg:NAME"


@dataclass(frozen=True)
class ResolvedSource:
    """A source ready to convert: the local file or folder and what is known about it; `embedding`
    when it is an embedding model (a sentence-transformers folder)."""

    kind: str
    id: str
    path: Path
    format: SourceFormat
    digest: str
    default_name: str
    architecture: str
    parameters: int
    context_length: int
    gguf: GgufInfo | None = None
    embedding: EmbeddingInfo | None = None
    recipe: Recipe | None = None  # a pre-converted IR's own; it is stored as it is
    size: int = 0  # bytes of a pre-converted IR folder


def folder_digest(folder: Path, files: list[Path], reporter: Reporter) -> str:
    """`sha256:` over the relative path and sha256 of each of `files` (below `folder`), in order."""
    digest = hashlib.sha256()
    with reporter.step(f"hashing {folder.name}", total=sum(path.stat().st_size for path in files)) as advance:
        for path in files:
            digest.update(f"{path.relative_to(folder)}\0{sha256_file(path, advance)}\n".encode())
    return f"sha256:{digest.hexdigest()}"


def slug(text: str) -> str:
    """A store-friendly name part: lower case, runs of other characters folded to '-'."""
    cleaned = re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.")
    return cleaned[:96] or "model"


def classify(spec: str) -> tuple[str, str]:
    """Split a spec into (kind, rest); raises UserInputError for an empty one."""
    if not spec.strip():
        raise UserInputError(f"empty model source (give {SPEC_HELP})")
    for prefix, kind in (("hf:", "hf-hub"), ("ollama:", "ollama"), ("pkg:", "packaged")):
        if spec.startswith(prefix):
            return kind, spec[len(prefix) :]
    path = Path(spec).expanduser()
    if path.is_dir():
        return "hf-folder", spec
    if path.is_file():
        return "gguf", spec
    raise UserInputError(f"no such file or folder: {spec} (a source is {SPEC_HELP})")
