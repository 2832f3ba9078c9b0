"""The manifest: what a converted model folder holds and how it was made.

A folder counts as a model only when its `manifest.json` parses and names every file.
"""

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from npu_engine.embedding import EmbeddingInfo
from npu_engine.files import ByteProgress, folder_files, sha256_file
from npu_engine.recipes import DeviceClass, Recipe

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
# A manifest lists a handful of files; anything near this size is not one of ours.
MAX_MANIFEST_BYTES = 1 << 20
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class ManifestError(ValueError):
    """A manifest.json that is absent, unreadable or not a manifest; the message says why."""


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
    """Everything known about one converted model; `model` names the weights (a catalog name when
    known). `embedding` is set for an embedding model: how its vectors are made."""

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
    embedding: EmbeddingInfo | None = None

    @property
    def size(self) -> int:
        return sum(entry.size for entry in self.files)

    def to_json(self) -> str:
        raw = asdict(self)
        if self.embedding is None:  # a generative model's manifest is as it always was
            del raw["embedding"]
        return json.dumps(raw, indent=2, sort_keys=True) + "\n"

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
            embedding=EmbeddingInfo.from_dict(raw["embedding"]) if raw.get("embedding") else None,
        )


def read_manifest(folder: Path) -> Manifest:
    """Parse `folder/manifest.json`; ManifestError (a ValueError) when absent or malformed, or when
    it names another model than its folder's."""
    path = folder / MANIFEST_NAME
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_MANIFEST_BYTES + 1)
    except OSError as error:
        raise ManifestError(f"{MANIFEST_NAME} cannot be read ({error.strerror or error})") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{MANIFEST_NAME} is larger than {MAX_MANIFEST_BYTES:,} bytes")
    try:
        raw = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ManifestError(f"{MANIFEST_NAME} is nested too deeply to be a manifest") from None
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise ManifestError(f"{MANIFEST_NAME} is not valid JSON ({error})") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{MANIFEST_NAME} holds a JSON {type(raw).__name__}, not an object")
    if raw.get("format_version") != FORMAT_VERSION:
        raise ManifestError(f"manifest format {raw.get('format_version')!r} is not {FORMAT_VERSION}")
    try:
        manifest = Manifest.from_dict(raw)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ManifestError(f"{MANIFEST_NAME} is malformed ({type(error).__name__}: {error})") from None
    problem = _entry_problem(manifest)
    if problem:
        raise ManifestError(f"{MANIFEST_NAME} is malformed ({problem})")
    if manifest.name != folder.name:
        # Paths are built from the name: a copied or renamed folder must not stand for another model.
        raise ManifestError(f"{MANIFEST_NAME} names the model {manifest.name!r}, not {folder.name!r}")
    return manifest


def _entry_problem(manifest: Manifest) -> str | None:
    """What is wrong with the values a store and an engine act on: names, file paths, sizes, hashes."""
    for field in (manifest.name, manifest.model, manifest.architecture, manifest.created):
        if not isinstance(field, str):
            return f"{field!r} is not text"
    if not manifest.files:
        return "it lists no files"
    for entry in manifest.files:
        if not isinstance(entry.path, str):
            return f"file path {entry.path!r} is not text"
        parts = PurePosixPath(entry.path).parts
        if not parts or entry.path.startswith("/") or ".." in parts or "\\" in entry.path:
            return f"file path {entry.path!r} is not inside the model folder"
        if not isinstance(entry.sha256, str) or not SHA256_HEX.fullmatch(entry.sha256):
            return f"{entry.path}: sha256 {entry.sha256!r} is not 64 hex digits"
        if isinstance(entry.size, bool) or not isinstance(entry.size, int) or entry.size < 0:
            return f"{entry.path}: size {entry.size!r} is not a byte count"
    return None


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
