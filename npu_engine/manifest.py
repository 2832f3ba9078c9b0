"""The manifest: what a converted model folder holds and how it was made.

A folder counts as a model only when its `manifest.json` parses and names every file.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from npu_engine.files import ByteProgress, folder_files, sha256_file
from npu_engine.recipes import DeviceClass, Recipe

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SourceInfo:
    """Where the weights came from: kind (`hf-folder`, `hf-hub`, `gguf`, `ollama`, `packaged`), id, digest."""

    kind: str
    id: str
    digest: str


@dataclass(frozen=True)
class FileEntry:
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """Everything known about one converted model; `model` names the weights (a catalog name when known)."""

    name: str
    model: str
    source: SourceInfo
    recipe: Recipe
    device: DeviceClass
    parameters: int
    architecture: str
    context_length: int
    files: tuple[FileEntry, ...]
    tool_versions: dict[str, str]
    created: str
    format_version: int = FORMAT_VERSION

    @property
    def size(self) -> int:
        return sum(entry.size for entry in self.files)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "Manifest":
        return cls(
            name=raw["name"],
            model=raw["model"],
            source=SourceInfo(**raw["source"]),
            recipe=Recipe.from_dict(raw["recipe"]),
            device=raw["device"],
            parameters=int(raw["parameters"]),
            architecture=raw["architecture"],
            context_length=int(raw["context_length"]),
            files=tuple(FileEntry(**entry) for entry in raw["files"]),
            tool_versions=dict(raw["tool_versions"]),
            created=raw["created"],
            format_version=int(raw["format_version"]),
        )


def read_manifest(folder: Path) -> Manifest:
    """Parse `folder/manifest.json`; raises ValueError/KeyError/OSError when absent or malformed."""
    raw = json.loads((folder / MANIFEST_NAME).read_text("utf-8"))
    if raw.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"manifest format {raw.get('format_version')!r} is not {FORMAT_VERSION}")
    return Manifest.from_dict(raw)


def hash_folder(folder: Path, on_bytes: ByteProgress | None = None) -> tuple[FileEntry, ...]:
    """A FileEntry for every file below `folder` except the manifest itself."""
    return tuple(
        FileEntry(str(path.relative_to(folder)), sha256_file(path, on_bytes), path.stat().st_size)
        for path in folder_files(folder)
        if path.name != MANIFEST_NAME or path.parent != folder
    )


def verify_files(folder: Path, manifest: Manifest, on_bytes: ByteProgress | None = None) -> list[str]:
    """Problems found re-hashing `folder` against `manifest`: missing, extra, resized or changed files."""
    problems = []
    expected = {entry.path: entry for entry in manifest.files}
    present = {str(path.relative_to(folder)) for path in folder_files(folder)} - {MANIFEST_NAME}
    for extra in sorted(present - set(expected)):
        problems.append(f"{extra}: not in the manifest")
    for path, entry in sorted(expected.items()):
        file = folder / path
        if path not in present:
            problems.append(f"{path}: missing")
        elif file.stat().st_size != entry.size:
            problems.append(f"{path}: size {file.stat().st_size} differs from {entry.size}")
        elif sha256_file(file, on_bytes) != entry.sha256:
            problems.append(f"{path}: sha256 differs")
    return problems
