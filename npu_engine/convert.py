"""`npu-convert` as a library: a model source in, a verified OpenVINO IR model in the store out."""

import dataclasses
import errno
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from npu_engine.catalog import Catalog, PackagedFile
from npu_engine.conversion_needs import (
    ConversionNeeds,
    MemoryProbe,
    SystemMemory,
    conversion_needs,
    memory_shortfall,
    require_memory,
    system_memory,
)
from npu_engine.errors import ConversionError, ModelExistsError, ModelNotFoundError, UserInputError
from npu_engine.files import folder_size, human_bytes
from npu_engine.gguf_export import recipe_refusal
from npu_engine.gguf_export import refusal as gguf_refusal
from npu_engine.gguf_file import GgufInfo
from npu_engine.manifest import MANIFEST_NAME, Manifest, SourceInfo, hash_folder
from npu_engine.progress import Reporter
from npu_engine.recipes import DeviceClass, Recipe, RecipeBook
from npu_engine.sources import ResolvedSource, SourceFormat, classify
from npu_engine.sources.resolve import resolve_source
from npu_engine.store import ModelStore, check_name
from npu_engine.torch_stack import hide_mismatched_torchvision

log = logging.getLogger("npu_engine")

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
    dequantize: bool = False  # a GGUF through a float model even where the bounded path applies


@dataclass(frozen=True)
class ConvertResult:
    manifest: Manifest
    path: Path
    already_done: bool
    seconds: float


@dataclass(frozen=True)
class ConversionPlan:
    """What a conversion would do and need, and what this machine has: `npu-convert --dry-run`."""

    name: str
    source: str
    weights: int
    source_format: SourceFormat
    device: DeviceClass
    recipe: Recipe
    needs: ConversionNeeds
    memory: SystemMemory
    disk_free: int
    done: bool = False
    preconverted: tuple[str, ...] = ()  # hub repos of the same model as OpenVINO IR, from the catalog
    not_bounded: str = ""  # why a GGUF cannot take the bounded path

    def alternative(self) -> str:
        """Where the catalog knows pre-converted IR of the model: the command that stores it."""
        if not self.preconverted:
            return ""
        repos = " or ".join(f"npu-convert hf:{repo}" for repo in self.preconverted)
        return f"; pre-converted IR needs no conversion (downloads from the hub): {repos}"

    def problems(self) -> list[str]:
        """Why it cannot run here now; empty when it fits (or is already done)."""
        if self.done:
            return []
        problems = [shortfall] if (shortfall := memory_shortfall(self.needs, self.memory)) else []
        if self.needs.disk > self.disk_free:
            problems.append(
                f"it needs about {human_bytes(self.needs.disk)} of disk at its peak, "
                f"{human_bytes(self.disk_free)} free"
            )
        return problems


class Converter:
    """Converts sources into `store`. Collaborators are passed in; nothing is global."""

    def __init__(
        self,
        store: ModelStore,
        catalog: Catalog,
        recipes: RecipeBook,
        reporter: Reporter,
        ollama_store: Path,
        memory: MemoryProbe = system_memory,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.recipes = recipes
        self.reporter = reporter
        self.ollama_store = ollama_store
        self.memory = memory

    def convert(self, request: ConvertRequest) -> ConvertResult:
        """Convert one source; a no-op when the same conversion is already in the store."""
        started = time.monotonic()
        hide_mismatched_torchvision()  # before anything imports transformers
        if request.name is not None:
            check_name(request.name)
        self.store.recover()
        early = self._plan_from_catalog(request)
        if early is not None and not early.done:
            # Before anything is downloaded or unpacked.
            require_memory(early.needs, early.memory, f"cannot convert {early.name}", early.alternative())
        source = self._resolve(request)
        recipe = self._source_recipe(request, source)
        name = check_name(request.name or f"{source.default_name}-{recipe.name}")
        needs = source_needs(source, recipe)
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
            require_memory(needs, self.memory(), f"cannot convert {name}")
            self.store.require_free_space(needs.disk)
            path, manifest = self._build(source, recipe, request, name, existing is not None, needs.disk)
        return ConvertResult(manifest, path, False, time.monotonic() - started)

    def plan(self, request: ConvertRequest) -> ConversionPlan:
        """What converting `request` would need, checked against this machine, converting nothing.

        A catalog model (pkg:NAME, or a hub id the catalog knows) is planned from the catalog;
        any other source is resolved first (a hub id is downloaded)."""
        if request.name is not None:
            check_name(request.name)
        early = self._plan_from_catalog(request)
        if early is not None:
            return early
        source = self._resolve(request)
        recipe = self._source_recipe(request, source)
        name = check_name(request.name or f"{source.default_name}-{recipe.name}")
        done = self._done(name, request, recipe, lambda m: m.source.digest == source.digest)
        plan = self._plan(
            name,
            source.id,
            source.parameters,
            source.format,
            request.device,
            recipe,
            done,
            source_bytes(source),
            source.gguf.tensor_types if source.gguf is not None else frozenset(),
        )
        why = None
        if source.gguf is not None and not request.dequantize:
            why = bounded_refusal(recipe, source.gguf)
        return replace(plan, not_bounded=why or "")

    def plan_tier(
        self, profile: str, tier: str, device: DeviceClass, recipe: str | None
    ) -> list[ConversionPlan]:
        """`plan` for what a catalog tier needs, from the catalog alone."""
        return [
            self.plan(ConvertRequest(source=source, device=device, recipe=recipe))
            for source in self._tier_sources(profile, tier)
        ]

    def _plan_from_catalog(self, request: ConvertRequest) -> ConversionPlan | None:
        """The plan of a source the catalog describes (its weight count and format), or None."""
        kind, rest = classify(request.source)
        model = None
        if kind == "packaged":
            model = self.catalog.model(rest)
        elif kind == "hf-hub":
            repo = rest.partition("@")[0]
            model = next((m for m in self.catalog.models.values() if m.hf == repo), None)
        if model is None or (kind == "packaged" and model.packaged is None):
            return None
        source_format: SourceFormat = (
            "gguf" if kind == "packaged" and isinstance(model.packaged, PackagedFile) else "hf"
        )
        recipe = self._recipe(request, model.parameters, model.family.embedding, model.name)
        path = gguf_path(request, recipe, None) if source_format == "gguf" else "exported"
        recipe = replace(recipe, path=path)
        name = check_name(request.name or f"{model.name}-{recipe.name}")
        done = self._done(name, request, recipe, lambda m: m.source.id == request.source)
        size = model.packaged.size if isinstance(model.packaged, PackagedFile) else 0
        plan = self._plan(
            name, request.source, model.parameters, source_format, request.device, recipe, done, size
        )
        return replace(plan, preconverted=model.openvino_ir)

    def _done(
        self, name: str, request: ConvertRequest, recipe: Recipe, same_source: Callable[[Manifest], bool]
    ) -> bool:
        """Whether converting `request` as `name` would be a no-op: the same source, recipe and device."""
        existing = self._existing(name)
        if request.force or existing is None:
            return False
        return (existing.recipe, existing.device) == (recipe, request.device) and same_source(existing)

    def _plan(
        self,
        name: str,
        source: str,
        weights: int,
        source_format: SourceFormat,
        device: DeviceClass,
        recipe: Recipe,
        done: bool,
        source_bytes: int = 0,
        tensor_types: frozenset[str] = frozenset(),
    ) -> ConversionPlan:
        return ConversionPlan(
            name=name,
            source=source,
            weights=weights,
            source_format=source_format,
            device=device,
            recipe=recipe,
            needs=conversion_needs(weights, source_format, recipe, source_bytes, tensor_types),
            memory=self.memory(),
            disk_free=self.store.disk_free(),
            done=done,
        )

    def _resolve(self, request: ConvertRequest) -> ResolvedSource:
        return resolve_source(
            request.source,
            reporter=self.reporter,
            catalog=self.catalog,
            packaged_cache=self.store.root / "sources",
            ollama_store=self.ollama_store,
            trust_remote_code=request.trust_remote_code,
        )

    def _source_recipe(self, request: ConvertRequest, source: ResolvedSource) -> Recipe:
        """The recipe `source` converts with (a pre-converted IR's own, checked against the
        device), with the path its conversion takes."""
        if source.recipe is None:
            recipe = self._recipe(
                request, source.parameters, source.embedding is not None, source.default_name
            )
            return replace(recipe, path=conversion_path(source, recipe, request))
        recipe = replace(source.recipe, path="stored")
        if request.recipe is not None:
            raise UserInputError(
                f"{source.id} is pre-converted OpenVINO IR ({recipe.description}): it is stored as it is, "
                "so --recipe does not apply"
            )
        if request.device not in recipe.devices:
            devices = " or ".join(device.upper() for device in recipe.devices)
            raise UserInputError(
                f"{source.id} is pre-converted for {devices} ({recipe.description}); the NPU needs "
                "symmetric INT4: use an NPU variant of it, or convert the original model with --device npu"
            )
        return recipe

    def _recipe(self, request: ConvertRequest, weights: int, embedding: bool, model: str) -> Recipe:
        if embedding and request.device == "npu":
            raise UserInputError(
                f"{model} is an embedding model: it converts for CPU or GPU (--device cpu|gpu)"
            )
        return self.recipes.choose(request.device, weights, request.recipe, embedding=embedding)

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

        # Storing a pre-converted IR needs no conversion library; the bounded path loads its own
        # where it needs them (gguf_export), and quiets them for its fallback (_build_in).
        if source.format != "ir" and recipe.path != "gguf-direct":
            with missing_libraries_named():
                export.quiet_libraries()
        with self.store.staging() as stage:
            try:
                with missing_libraries_named():
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
        from npu_engine import export, gguf_export

        model_folder = stage / "model"
        if recipe.path == "gguf-direct" and source.gguf is not None:
            try:
                with self.reporter.step(f"building the IR one weight at a time with recipe {recipe.name}"):
                    gguf_export.export_ir_from_gguf(source.gguf, model_folder, recipe, stage)
                return self._commit(model_folder, source, recipe, request, name, replace)
            except gguf_export.GraphNotBuilt as error:
                self.reporter.info(f"{error}; converting through a float model instead")
                export.quiet_libraries()
                for leftover in stage.iterdir():
                    shutil.rmtree(leftover)
                recipe = dataclasses.replace(recipe, path="dequantized")  # `replace` is an argument here
                needs = source_needs(source, recipe)
                require_memory(needs, self.memory(), f"cannot convert {name}")
                self.store.require_free_space(needs.disk)
        if source.format == "ir":
            with self.reporter.step(f"copying the pre-converted IR of {source.path.name}", total=source.size):
                shutil.copytree(source.path, model_folder, ignore=shutil.ignore_patterns(MANIFEST_NAME, ".*"))
            return self._commit(model_folder, source, recipe, request, name, replace)
        hf_folder = source.path
        if source.gguf is not None:
            hf_folder = stage / "hf"
            with self.reporter.step(
                f"de-quantizing {source.path.name} ({source.parameters / 1e6:.0f}M weights)"
            ):
                export.dequantize_gguf(source.gguf, hf_folder)
        with self.reporter.step(f"exporting to OpenVINO IR with recipe {recipe.name}"):
            task = export.TASK if source.embedding is None else export.EMBEDDING_TASK
            export.export_ir(hf_folder, model_folder, recipe, request.trust_remote_code, task)
        if hf_folder != source.path:
            shutil.rmtree(hf_folder)
        return self._commit(model_folder, source, recipe, request, name, replace)

    def _commit(
        self,
        model_folder: Path,
        source: ResolvedSource,
        recipe: Recipe,
        request: ConvertRequest,
        name: str,
        replace: bool,
    ) -> tuple[Path, Manifest]:
        """Hash the model's files, write its manifest and move it into the store."""
        from npu_engine import export

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
        return [
            self.convert(ConvertRequest(source=source, device=device, recipe=recipe, force=force))
            for source in self._tier_sources(profile, tier)
        ]

    def _tier_sources(self, profile: str, tier: str) -> list[str]:
        """The sources of a tier's model and, where it has one, its draft model."""
        spec = self.catalog.profile(profile).tier(tier)
        models = [spec.model] + ([spec.draft] if spec.draft else [])
        return [self.catalog.model(model).preferred_source for model in models]


def conversion_path(source: ResolvedSource, recipe: Recipe, request: ConvertRequest) -> str:
    """How `source` converts with `recipe` (see Recipe.path): a GGUF takes the bounded path unless
    `bounded_refusal` or the request says otherwise; it gives the same compressed weights as
    de-quantizing first (tests/test_gguf_export.py)."""
    if source.format == "ir":
        return "stored"
    if source.gguf is None:
        return "exported"
    return gguf_path(request, recipe, source.gguf)


def gguf_path(request: ConvertRequest, recipe: Recipe, info: GgufInfo | None) -> str:
    """The path of a GGUF conversion; `info` None is a catalog model planned before its file is
    read (its tensor types decide once it is, and the memory check is made again then)."""
    if request.dequantize or bounded_refusal(recipe, info):
        return "dequantized"
    return "gguf-direct"


def bounded_refusal(recipe: Recipe, info: GgufInfo | None) -> str | None:
    """Why a GGUF conversion with `recipe` cannot take the bounded path (of `info`, when its file
    is read); None when it can. Every device takes it: GenAI's graph is mended for the NPU
    (genai_graph)."""
    return gguf_refusal(info, recipe) if info is not None else recipe_refusal(recipe)


def source_needs(source: ResolvedSource, recipe: Recipe) -> ConversionNeeds:
    types = source.gguf.tensor_types if source.gguf is not None else frozenset()
    return conversion_needs(source.parameters, source.format, recipe, source_bytes(source), types)


def source_bytes(source: ResolvedSource) -> int:
    """The size the estimates go by: a GGUF file's, or a pre-converted IR folder's."""
    return source.gguf.size if source.gguf is not None else source.size


@contextmanager
def missing_libraries_named() -> Iterator[None]:
    """An ImportError from the conversion's libraries becomes one line naming the fix."""
    try:
        yield
    except ImportError as error:
        missing = error.name or str(error)
        raise ConversionError(
            f"converting needs the libraries of npu-engine's [convert] extra, and {missing} could not be "
            "imported: pip install 'npu-engine[convert]' (in a clone: pip install -e '.[convert]')"
        ) from None


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


PATH_WORDS = {
    "gguf-direct": "built from the GGUF's quantized tensors, one weight at a time (bounded memory)",
    "dequantized": "de-quantized to a float32 model, then exported and compressed by optimum-intel",
    "exported": "the float model exported and compressed by optimum-intel",
    "stored": "stored as it is",
}


def describe_plan(plan: ConversionPlan) -> list[str]:
    """What `npu-convert --dry-run` prints for one planned conversion."""
    needs = plan.needs
    head = (
        f"{plan.name}: {plan.source} ({plan.weights / 1e6:,.0f}M weights, {plan.source_format.upper()}), "
        f"recipe {plan.recipe.name} for {plan.device.upper()}"
    )
    if plan.done:
        return [f"{head}: already converted (--force redoes it)"]
    problems = plan.problems()
    return [
        head,
        f"  memory at the peak: about {human_bytes(needs.peak_memory)} "
        f"(this machine: {human_bytes(plan.memory.total)}, {human_bytes(plan.memory.available)} available)",
        f"  disk at the peak: about {human_bytes(needs.disk)} ({human_bytes(plan.disk_free)} free); "
        f"the model keeps about {human_bytes(needs.output)}",
        f"  path: {PATH_WORDS.get(plan.recipe.path, plan.recipe.path)}"
        + (f" ({plan.not_bounded})" if plan.not_bounded else ""),
        *(f"  does not fit: {problem}" for problem in problems),
        *([] if problems else ["  fits"]),
        *(
            f"  pre-converted IR on the hub, stored as it is: npu-convert hf:{repo}"
            for repo in plan.preconverted
        ),
    ]


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
