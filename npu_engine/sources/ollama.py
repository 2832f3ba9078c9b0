"""The local Ollama store as a source: `ollama:NAME[:TAG]` to the GGUF blob of its model layer.

Layout (as Ollama writes it): `<models>/manifests/<host>/<namespace>/<model>/<tag>` is an OCI-style
JSON manifest; its layer of media type `application/vnd.ollama.image.model` names a blob
`<models>/blobs/sha256-<hex>`. Names and digests are checked strictly, every resolved path must stay
inside the store, and the blob's bytes must hash to its digest.
"""

import json
import re
from dataclasses import replace
from pathlib import Path

from npu_engine.errors import ChecksumError, SourceError, UserInputError
from npu_engine.files import sha256_file
from npu_engine.progress import Reporter
from npu_engine.sources import ResolvedSource, slug
from npu_engine.sources.gguf import resolve_gguf

MODEL_LAYER = "application/vnd.ollama.image.model"
DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG = "registry.ollama.ai", "library", "latest"


def parse_name(name: str) -> tuple[str, str, str, str]:
    """`[host/][namespace/]model[:tag]` to (host, namespace, model, tag), each part checked."""
    path, _, tag = name.partition(":")
    tag = tag or DEFAULT_TAG
    parts = path.split("/")
    if len(parts) > 3:
        raise UserInputError(f"invalid Ollama model name {name!r}: expected [host/][namespace/]model[:tag]")
    parts = [DEFAULT_HOST, DEFAULT_NAMESPACE][: 3 - len(parts)] + parts
    host, namespace, model = parts
    for part in (host, namespace, model, tag):
        if not PART.fullmatch(part) or ".." in part:
            raise UserInputError(f"invalid Ollama model name {name!r}: bad part {part!r}")
    return host, namespace, model, tag


def _inside(root: Path, path: Path) -> Path:
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise SourceError(f"Ollama store entry {path} resolves outside the store ({resolved})")
    return resolved


def resolve_ollama(name: str, store: Path, reporter: Reporter) -> ResolvedSource:
    """Find and check the GGUF blob of Ollama model `name` in the store at `store`."""
    host, namespace, model, tag = parse_name(name)
    if not store.is_dir():
        raise SourceError(f"no Ollama store at {store} (set OLLAMA_MODELS to where Ollama keeps its models)")
    model_dir = store / "manifests" / host / namespace / model
    manifest_path = model_dir / tag
    if not manifest_path.is_file():
        tags = sorted(p.name for p in model_dir.iterdir()) if model_dir.is_dir() else []
        hint = f"tags of {model}: {', '.join(tags)}" if tags else f"no model {model!r} in {store}"
        raise SourceError(f"unknown Ollama model {model}:{tag} ({hint})")
    manifest_path = _inside(store, manifest_path)
    try:
        manifest = json.loads(manifest_path.read_text("utf-8"))
        layers = [layer for layer in manifest["layers"] if layer.get("mediaType") == MODEL_LAYER]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise SourceError(f"unreadable Ollama manifest {manifest_path}: {error}") from None
    if len(layers) != 1:
        raise SourceError(f"Ollama manifest {manifest_path} has {len(layers)} model layers, expected 1")
    digest = str(layers[0].get("digest", ""))
    match = DIGEST.fullmatch(digest)
    if match is None:
        raise SourceError(f"Ollama manifest {manifest_path}: invalid layer digest {digest!r}")
    blob = store / "blobs" / f"sha256-{match.group(1)}"
    if not blob.is_file():
        raise SourceError(f"Ollama blob {blob} is missing (the store is incomplete; `ollama pull {name}`)")
    blob = _inside(store, blob)
    with reporter.step(f"checking Ollama blob {digest[:19]}", total=blob.stat().st_size) as advance:
        actual = sha256_file(blob, advance)
    if actual != match.group(1):
        raise ChecksumError(f"Ollama blob {blob} is corrupt: its sha256 is {actual}, not {match.group(1)}")
    resolved = resolve_gguf(blob, reporter, kind="ollama", spec=f"ollama:{name}", digest=actual)
    return replace(resolved, default_name=slug(f"{model}-{tag}"))


def installed_models(store: Path) -> list[str]:
    """The `[host/][namespace/]model:tag` names of every model manifest in the Ollama store at
    `store`, as `ollama list` names them (the default host and namespace left out)."""
    manifests = store / "manifests"
    names = []
    for tag in sorted(manifests.glob("*/*/*/*")):
        if not tag.is_file():
            continue
        host, namespace, model = tag.relative_to(manifests).parts[:3]
        prefix = "" if host == DEFAULT_HOST else f"{host}/"
        if prefix or namespace != DEFAULT_NAMESPACE:
            prefix += f"{namespace}/"
        names.append(f"{prefix}{model}:{tag.name}")
    return names
