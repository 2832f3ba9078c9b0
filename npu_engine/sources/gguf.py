"""A GGUF file as a source: checked whole, architecture supported, metadata consistent, hashed."""

from pathlib import Path

from npu_engine.errors import SourceError
from npu_engine.files import sha256_file
from npu_engine.gguf_checks import check_convertible
from npu_engine.gguf_file import read_gguf
from npu_engine.progress import Reporter
from npu_engine.sources import ResolvedSource, slug

# Architectures whose GGUF weights transformers de-quantizes and optimum-intel exports, and that
# the tests cover: CodeLlama, DeepSeek-Coder and the R1 Llama distills are `llama`; Qwen2.5-Coder
# and the R1 Qwen distills are `qwen2`.
SUPPORTED_ARCHITECTURES = ("llama", "qwen2")


def resolve_gguf(
    path: Path, reporter: Reporter, kind: str = "gguf", spec: str | None = None, digest: str | None = None
) -> ResolvedSource:
    """Check and describe a GGUF file; `digest` skips re-hashing when the caller already verified it."""
    info = read_gguf(path)
    if info.architecture not in SUPPORTED_ARCHITECTURES:
        supported = ", ".join(SUPPORTED_ARCHITECTURES)
        raise SourceError(
            f"{path}: GGUF architecture {info.architecture!r} is not supported (supported: {supported})"
        )
    check_convertible(info)
    if digest is None:
        with reporter.step(f"hashing {path.name}", total=path.stat().st_size) as advance:
            digest = sha256_file(path, advance)
    name = path.stem
    for suffix in (".gguf",):
        name = name.removesuffix(suffix)
    return ResolvedSource(
        kind=kind,
        id=spec if spec is not None else str(path),
        path=path,
        format="gguf",
        digest=f"sha256:{digest}",
        default_name=slug(name),
        architecture=info.architecture,
        parameters=info.parameters,
        context_length=info.context_length,
        gguf=info,
    )
