"""Where the GGUF a conversion was made from lies on this machine: the file llama.cpp runs, as the
engine's CPU runtime and as npu-bench's baseline on the same weights."""

from pathlib import Path

from npu_engine.catalog import Catalog, PackagedFile
from npu_engine.manifest import Manifest
from npu_engine.settings import ollama_models_dir


def source_gguf_path(manifest: Manifest, catalog: Catalog, store_root: Path) -> Path | None:
    """Where `manifest`'s source GGUF belongs, whether or not it is there: the store's `sources/`
    for a packaged model, the file converted for a GGUF, the blob (by its verified digest) for an
    Ollama model; None for Hugging Face weights (llama.cpp would need its own conversion)."""
    kind, ident = manifest.source.kind, manifest.source.id
    if kind == "packaged":
        name = ident.removeprefix("pkg:")
        packaged = catalog.models[name].packaged if name in catalog.models else None
        return store_root / "sources" / packaged.file if isinstance(packaged, PackagedFile) else None
    if kind == "gguf":
        return Path(ident)
    if kind == "ollama":
        return ollama_models_dir() / "blobs" / manifest.source.digest.replace(":", "-")
    return None
