"""Hugging Face sources: a local folder of safetensors, or a hub id downloaded with huggingface_hub."""

import json
import struct
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from npu_engine.embedding import sentence_transformers_info
from npu_engine.errors import NetworkError, SourceError
from npu_engine.progress import Reporter
from npu_engine.sources import ResolvedSource, folder_digest, slug
from npu_engine.sources.ir import is_ir_folder, resolve_ir_folder

# What conversion reads from a model repository; everything else (pickles, other formats) is skipped.
# A repo of pre-converted IR (OpenVINO's `*-ov`) brings its openvino_*.xml/bin.
HUB_PATTERNS = [
    "*.json",
    "*.safetensors",
    "*.model",
    "*.txt",
    "*.jinja",
    "*.tiktoken",
    "*.py",
    "openvino_*.xml",
    "openvino_*.bin",
]


def _safetensors_parameters(path: Path) -> int:
    """Count the weights of a safetensors file from its JSON header, without loading it."""
    try:
        with path.open("rb") as stream:
            (length,) = struct.unpack("<Q", stream.read(8))
            if length > 100_000_000:
                raise ValueError("header too large")
            header: dict[str, Any] = json.loads(stream.read(length))
    except (OSError, ValueError, struct.error) as error:
        raise SourceError(f"{path} is not a readable safetensors file: {error}") from None
    total = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for dim in entry["shape"]:
            count *= int(dim)
        total += count
    return total


def _check_architecture(folder: Path, config: dict[str, Any], trust_remote_code: bool) -> str:
    from transformers import CONFIG_MAPPING

    model_type = str(config.get("model_type", ""))
    if model_type in CONFIG_MAPPING:
        return model_type
    if "auto_map" in config:
        if not trust_remote_code:
            raise SourceError(
                f"{folder}: model type {model_type!r} needs code shipped with the model; "
                "read it, then pass --trust-remote-code if you trust it"
            )
        return model_type
    raise SourceError(f"{folder}: unsupported architecture {model_type!r} (transformers does not know it)")


def resolve_hf_folder(
    folder: Path,
    reporter: Reporter,
    trust_remote_code: bool,
    kind: str = "hf-folder",
    spec: str | None = None,
) -> ResolvedSource:
    """Check a Hugging Face model folder and describe it (a sentence-transformers folder as an
    embedding model)."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise SourceError(f"{folder} is not a Hugging Face model folder: it has no config.json")
    try:
        config = json.loads(config_path.read_text("utf-8"))
    except ValueError as error:
        raise SourceError(f"{config_path} is not valid JSON: {error}") from None
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise SourceError(f"{folder} has no *.safetensors weights (pickled .bin weights are not loaded)")
    architecture = _check_architecture(folder, config, trust_remote_code)
    parameters = sum(_safetensors_parameters(path) for path in weights)
    digest = folder_digest(folder, sorted(path for path in folder.iterdir() if path.is_file()), reporter)
    text_config = config.get("text_config", config)
    return ResolvedSource(
        kind=kind,
        id=spec if spec is not None else str(folder),
        path=folder,
        format="hf",
        digest=digest,
        default_name=slug(folder.name),
        architecture=architecture,
        parameters=parameters,
        context_length=int(text_config.get("max_position_embeddings", 0)),
        embedding=sentence_transformers_info(folder),
    )


def resolve_hub(
    repo: str, reporter: Reporter, trust_remote_code: bool, name_of: Callable[[str], str] = slug
) -> ResolvedSource:
    """Download `ORG/NAME[@REVISION]` from the Hugging Face hub into its cache, then check it as a folder."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    repo_id, _, revision = repo.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise SourceError(f"invalid hub id {repo!r}: expected hf:ORG/NAME[@REVISION]")
    try:
        with reporter.step(f"downloading {repo_id} from the Hugging Face hub"):
            folder = snapshot_download(repo_id, revision=revision or None, allow_patterns=HUB_PATTERNS)
    except RepositoryNotFoundError:
        raise SourceError(f"no model {repo_id!r} on the Hugging Face hub (or it needs a token)") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise NetworkError(f"could not download {repo_id} from the Hugging Face hub: {reason}") from None
    if is_ir_folder(Path(folder)):
        resolved = resolve_ir_folder(
            Path(folder), reporter, kind="hf-hub", spec=f"hf:{repo}", name=name_of(repo_id)
        )
    else:
        resolved = resolve_hf_folder(
            Path(folder), reporter, trust_remote_code, kind="hf-hub", spec=f"hf:{repo}"
        )
        resolved = replace(resolved, default_name=slug(repo_id.split("/")[1]))
    # The snapshot folder is named by the commit it holds: the most exact digest of a hub model.
    return replace(resolved, digest=f"git:{Path(folder).name}")
