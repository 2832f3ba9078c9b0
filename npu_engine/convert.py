"""`npu-convert` as a library: a model source in, a verified OpenVINO IR model in the store out."""

import errno
import logging
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from npu_engine.catalog import Catalog
from npu_engine.errors import ModelExistsError, ModelNotFoundError, UserInputError
from npu_engine.files import folder_size, human_bytes
from npu_engine.manifest import MANIFEST_NAME, Manifest, SourceInfo, hash_folder
from npu_engine.progress import Reporter
from npu_engine.recipes import DeviceClass, Recipe, RecipeBook
from npu_engine.sources import ResolvedSource
from npu_engine.sources.resolve import resolve_source
from npu_engine.store import ModelStore, check_name

log = logging.getLogger("npu_engine")

# Bytes per weight written on the way: the float32 folder de-quantized from a GGUF, the float
# export optimum writes before compressing, and the compressed result; plus room for the tokenizer.
GGUF_DEQUANT_BYTES = 4.0
FLOAT_EXPORT_BYTES = 4.0
SLACK_BYTES = 512 << 20
# How the libraries word a full disk when they do not raise OSError(ENOSPC): safetensors
# ("I/O error: No space left on device (os error 28)"), C++ runtimes, Python.
DISK_FULL_WORDS = ("no space left on device", "storagefull", "os error 28", "disk quota exceeded")
# OpenVINO reports a failed write as a bare "basic_ios::clear: iostream error", and deletes the
# partial file first (84 MB were free again when a 600 MB disk filled up while exporting
# SmolLM2): a write failure with less than WRITE_FAILED_BYTES free is taken for a full disk, and
# any failure with less than NEARLY_FULL_BYTES free.
WRITE_FAILURE_WORDS = ("iostream error", "i/o error", "input/output error", "failed to write", "write error")
WRITE_FAILED_BYTES = 512 << 20
NEARLY_FULL_BYTES = 64 << 20


@dataclass(frozen=True)
class ConvertRequest:
    """What the user asked for. `recipe` None means the device's default for the model's size."""

    source: str
    device: DeviceClass = "cpu"
    recipe: str | None = None
    name: str | None = None
    force: bool = False
    trust_remote_code: bool = False


@dataclass(frozen=True)
class ConvertResult:
    manifest: Manifest
    path: Path
    already_done: bool
    seconds: float


def space_needed(source: ResolvedSource, recipe: Recipe) -> int:
    """A generous estimate of the disk a conversion uses at its peak."""
    per_weight = FLOAT_EXPORT_BYTES + recipe.bytes_per_weight
    if source.format == "gguf":
        per_weight += GGUF_DEQUANT_BYTES
    return int(source.parameters * per_weight) + SLACK_BYTES


class Converter:
    """Converts sources into `store`. Collaborators are passed in; nothing is global."""

    def __init__(
        self,
        store: ModelStore,
        catalog: Catalog,
        recipes: RecipeBook,
        reporter: Reporter,
        ollama_store: Path,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.recipes = recipes
        self.reporter = reporter
        self.ollama_store = ollama_store

    def convert(self, request: ConvertRequest) -> ConvertResult:
        """Convert one source; a no-op when the same conversion is already in the store."""
        started = time.monotonic()
        if request.name is not None:
            check_name(request.name)
        self.store.recover()
        source = resolve_source(
            request.source,
            reporter=self.reporter,
            catalog=self.catalog,
            packaged_cache=self.store.root / "sources",
            ollama_store=self.ollama_store,
            trust_remote_code=request.trust_remote_code,
        )
        if source.embedding is not None and request.device == "npu":
            raise UserInputError(
                f"{source.default_name} is an embedding model: it converts for CPU or GPU (--device cpu|gpu)"
            )
        recipe = self.recipes.choose(
            request.device, source.parameters, request.recipe, embedding=source.embedding is not None
        )
        name = check_name(request.name or f"{source.default_name}-{recipe.name}")
        waiting = f"waiting for another conversion of {name} to finish"
        with self.store.converting(name, on_wait=lambda: self.reporter.info(waiting)):
            existing = self._existing(name)
            if existing is not None and not request.force:
                if (existing.source.digest, existing.recipe, existing.device) == (
                    source.digest,
                    recipe,
                    request.device,
                ):
                    return ConvertResult(existing, self.store.path(name), True, time.monotonic() - started)
                raise ModelExistsError(
                    f"model {name!r} already exists (from {existing.source.id}, "
                    f"recipe {existing.recipe.name}); use --force to replace it or --name to keep both"
                )
            needed = space_needed(source, recipe)
            self.store.require_free_space(needed)
            path, manifest = self._build(source, recipe, request, name, existing is not None, needed)
        return ConvertResult(manifest, path, False, time.monotonic() - started)

    def _existing(self, name: str) -> Manifest | None:
        try:
            return self.store.get(name)
        except ModelNotFoundError:
            return None

    def _build(
        self,
        source: ResolvedSource,
        recipe: Recipe,
        request: ConvertRequest,
        name: str,
        replace: bool,
        needed: int,
    ) -> tuple[Path, Manifest]:
        from npu_engine import export

        export.quiet_libraries()
        with self.store.staging() as stage:
            try:
                return self._build_in(stage, source, recipe, request, name, replace)
            except Exception as error:
                # Judged before the staging folder goes, while the disk is as full as it was;
                # reported after, with the space the user really has.
                if not disk_filled(error, self.store.disk_free()):
                    raise
                log.info("converting %s: a full disk (%s: %s)", name, type(error).__name__, error)
        raise self.store.disk_full(f"converting {name}", needed)

    def _build_in(
        self,
        stage: Path,
        source: ResolvedSource,
        recipe: Recipe,
        request: ConvertRequest,
        name: str,
        replace: bool,
    ) -> tuple[Path, Manifest]:
        from npu_engine import export

        hf_folder = source.path
        if source.gguf is not None:
            hf_folder = stage / "hf"
            with self.reporter.step(
                f"de-quantizing {source.path.name} ({source.parameters / 1e6:.0f}M weights)"
            ):
                export.dequantize_gguf(source.gguf, hf_folder)
        model_folder = stage / "model"
        with self.reporter.step(f"exporting to OpenVINO IR with recipe {recipe.name}"):
            task = export.TASK if source.embedding is None else export.EMBEDDING_TASK
            export.export_ir(hf_folder, model_folder, recipe, request.trust_remote_code, task)
        if hf_folder != source.path:
            shutil.rmtree(hf_folder)
        with self.reporter.step("hashing the converted files", total=folder_size(model_folder)) as advance:
            files = hash_folder(model_folder, advance)
        manifest = Manifest(
            name=name,
            model=source.default_name,
            source=SourceInfo(kind=source.kind, id=source.id, digest=source.digest),
            recipe=recipe,
            device=request.device,
            parameters=source.parameters,
            architecture=source.architecture,
            context_length=source.context_length,
            files=files,
            tool_versions=export.tool_versions(),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            embedding=source.embedding,
        )
        (model_folder / MANIFEST_NAME).write_text(manifest.to_json(), "utf-8")
        path = self.store.commit(model_folder, name, replace=replace)
        return path, manifest

    def convert_tier(
        self, profile: str, tier: str, device: DeviceClass, recipe: str | None, force: bool
    ) -> list[ConvertResult]:
        """Convert what a catalog tier needs: its model and, where it has one, its draft model."""
        spec = self.catalog.profile(profile).tier(tier)
        models = [spec.model] + ([spec.draft] if spec.draft else [])
        return [
            self.convert(
                ConvertRequest(
                    source=self.catalog.model(model).preferred_source,
                    device=device,
                    recipe=recipe,
                    force=force,
                )
            )
            for model in models
        ]


def disk_filled(error: BaseException, free: int) -> bool:
    """Whether `error`, raised while converting with `free` bytes left on the store's disk, is a full disk.

    The libraries wrap ENOSPC in their own exceptions (SafetensorError, RuntimeError, our own
    ConversionError), so the whole chain of causes is searched."""
    seen: set[int] = set()
    current: BaseException | None = error
    write_failed = False
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(current).lower()
        if any(words in text for words in DISK_FULL_WORDS):
            return True
        write_failed = write_failed or any(words in text for words in WRITE_FAILURE_WORDS)
        current = current.__cause__ or current.__context__
    return free < (WRITE_FAILED_BYTES if write_failed else NEARLY_FULL_BYTES)


def describe(result: ConvertResult) -> str:
    """One line for the user about a finished (or skipped) conversion."""
    manifest = result.manifest
    if result.already_done:
        return (
            f"{manifest.name}: already converted from the same source with recipe "
            f"{manifest.recipe.name} (--force redoes it)"
        )
    return (
        f"{manifest.name}: converted with recipe {manifest.recipe.name} for {manifest.device.upper()} in "
        f"{result.seconds:.0f}s, {human_bytes(manifest.size)} at {result.path}"
    )
