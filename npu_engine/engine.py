"""The engine's Python API: `Engine.from_settings().generate(...)` answers a tier from the device the
planner chose, walks the tier's fallback chain (NPU -> GPU -> CPU -> Ollama -> an OpenAI-compatible
server) when a step fails, and reports every step it took.

The engine executes; the Planner decides (where a tier runs, which conversion, which decoding);
the targets run. Everything the server and the bench may ask of it is a method below: nothing
outside reaches its pool or store."""

import logging
import queue
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from npu_engine.attest import Attestor, manifest_sha256
from npu_engine.attest_verify import Verified, verify_receipt
from npu_engine.backends.factory import OpenVinoPipelineFactory
from npu_engine.bridge import Run
from npu_engine.catalog import EMBED_TIER, Catalog, CatalogModel, TierSpec, load_catalog
from npu_engine.device_profile import TunedSettings
from npu_engine.devices import Device, DeviceKind, Inventory, discover
from npu_engine.embedding import EmbeddingResult, EmbedRequest
from npu_engine.errors import (
    EngineBusyError,
    GenerationError,
    NetworkError,
    NpuEngineError,
    ReceiptError,
    StoreError,
    UserInputError,
    presentable,
)
from npu_engine.families import ModelFamily
from npu_engine.generation import GenerationMetrics, Message, RawPrompt, TextSink
from npu_engine.infill import InfillEnd, InfillStream, completion_prompt
from npu_engine.manifest import Manifest
from npu_engine.pipelines import Pipeline, PipelineKey, PipelinePool
from npu_engine.planner import Planner
from npu_engine.readiness import TierCommand, in_ollama_store, tier_command, ways_out
from npu_engine.receipt import Receipt
from npu_engine.receipt_keys import ReceiptKeys
from npu_engine.recipes import load_recipe_book
from npu_engine.request import (
    AUTO,
    Decoding,
    FallbackStep,
    GenerateRequest,
    GenerationResult,
    StreamChunk,
)
from npu_engine.router import Route, Router, load_rules
from npu_engine.scheduler import Measurement, Plan, default_budget
from npu_engine.settings import engine_home, ollama_models_dir, router_rules_path
from npu_engine.sources.ollama import installed_models
from npu_engine.store import ModelStore
from npu_engine.targets import (
    DeviceTarget,
    Job,
    PipelineLoader,
    RemoteTarget,
    Target,
    Unavailable,
    result_of,
)
from npu_engine.wiring import (
    configured_remote_tiers,
    measured_speeds,
    placed_targets,
    remotes_from_settings,
    tuned_settings,
    with_emulated_npu,
)

log = logging.getLogger("npu_engine")
_T = TypeVar("_T", bound=Target)
_R = TypeVar("_R")


@dataclass(frozen=True)
class Prepared:
    """A request ready to run: routed (for tier `auto`), checked, and its chain of targets planned
    from one reading of the store."""

    job: Job
    chain: tuple[Target, ...]
    route: Route | None = None


class Engine:
    """Serves generate calls for the tiers of a catalog profile from the models in the store.

    The constructor takes collaborators: the planner (the policy), the store, the pipeline pool,
    the router and the remote fallbacks, tried in order after this machine's devices.
    `Engine.from_settings()` builds them from the environment and this machine's hardware.

    `emulate_npu` says the planner's NPU is the NPU plugin running through NPUW on the CPU: a
    correctness path, never a speed figure. Model files are checked against their manifests
    whenever they are loaded; `allow_modified_models` serves a mismatch with a warning instead.
    `continuous_batching` decodes concurrent plain requests on the CPU and GPU together in one
    ContinuousBatchingPipeline instead of queueing them on an LLMPipeline (off by default: see
    backends/batching.py for what OpenVINO GenAI 2026.4 keeps from every request there).
    `prefix_reuse` keeps a pipeline's KV cache from one request to the next where that leaves
    answers unchanged (see backends/llama_cpp.py); off, every prompt is evaluated whole.
    `tuned` are the runtime settings `npu-bench tune` measured per converted model and device.
    `placed` are the servers remote-tiers.json places tiers on, by tier (the planner's
    `remote_tiers` say where in a tier's chain each goes).
    `attestor` signs the receipts of answers (None: with the key in the store's root, made on first
    use); `receipts` signs every answer, not only those whose request asks.
    """

    def __init__(
        self,
        planner: Planner,
        store: ModelStore,
        pool: PipelinePool,
        router: Router,
        remotes: Sequence[RemoteTarget] = (),
        *,
        placed: Mapping[str, RemoteTarget] | None = None,
        emulate_npu: bool = False,
        continuous_batching: bool = False,
        allow_modified_models: bool = False,
        prefix_reuse: bool = True,
        tuned: Sequence[TunedSettings] = (),
        failure_ttl_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        attestor: Attestor | None = None,
        receipts: bool = False,
        ollama_names: Callable[[], Collection[str]] = frozenset,
    ) -> None:
        self._planner = planner
        self._store = store
        self._pool = pool
        self._router = router
        self._remotes = tuple(remotes)
        self._placed = dict(placed or {})
        self._emulate_npu = emulate_npu
        self._loader = PipelineLoader(
            store, pool, continuous_batching, allow_modified_models, prefix_reuse, tuned
        )
        self._devices = {
            device.name: DeviceTarget(device, planner, self._loader, emulate_npu and device.kind == "npu")
            for device in planner.inventory.devices
        }
        self._failure_ttl = failure_ttl_seconds
        self._failures: dict[tuple[str, str], tuple[float, str]] = {}
        self._clock = clock
        self._guard = threading.Lock()
        self._attestor = attestor or Attestor(ReceiptKeys(store.root))
        self._receipts = receipts
        self._ollama_names = ollama_names

    @classmethod
    def from_settings(
        cls,
        profile: str = "embedded",
        *,
        store: ModelStore | None = None,
        catalog: Catalog | None = None,
        inventory: Inventory | None = None,
        pipeline_factory: Callable[[Any], Pipeline] | None = None,
        emulate_npu: bool = False,
        memory_budget: int | None = None,
        measurements: Sequence[Measurement] | None = None,
        remotes: Sequence[RemoteTarget] | None = None,
        keep_alive_seconds: float = 300.0,
        max_waiting: int = 8,
        failure_ttl_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        router: Router | None = None,
        continuous_batching: bool = False,
        allow_modified_models: bool = False,
        prefix_reuse: bool = True,
        tuned: Sequence[TunedSettings] | None = None,
        receipts: bool = False,
        attestor: Attestor | None = None,
    ) -> "Engine":
        """The engine as this machine and its settings make it: the store at `$NPU_ENGINE_HOME`,
        the shipped catalog and recipes, the devices OpenVINO sees, the device profile `npu-bench`
        wrote, the router's rules, Ollama at `$OLLAMA_HOST` and the configured OpenAI-compatible
        fallback, and the runtime settings `npu-bench tune` kept. Each argument given replaces what
        would be read (`remotes=()`: no fallbacks, `tuned=()`: the runtimes' defaults).
        `receipts`: every answer carries a signed receipt (see attest.py), signed by `attestor`
        (default: with the key `$NPU_ENGINE_HOME/receipt-key.pem`, made on first use)."""
        store = store or ModelStore(engine_home())
        catalog = catalog or load_catalog()
        inventory = inventory or discover()
        emulate_npu = emulate_npu and not inventory.of_kind("npu")
        if emulate_npu:
            inventory = with_emulated_npu(inventory)
        remote_tiers = configured_remote_tiers(store)
        planner = Planner(
            catalog.profile(profile),
            catalog,
            load_recipe_book(),
            inventory,
            memory_budget or default_budget(inventory),
            measured_speeds(store) if measurements is None else measurements,
            remote_tiers,
        )
        pool = PipelinePool(
            pipeline_factory or OpenVinoPipelineFactory(),
            planner.memory_budget,
            keep_alive_seconds,
            max_waiting,
            clock,
        )
        router = router or Router(load_rules(router_rules_path(store.root)), planner.profile)
        return cls(
            planner,
            store,
            pool,
            router,
            remotes_from_settings(catalog) if remotes is None else remotes,
            placed=placed_targets(remote_tiers),
            emulate_npu=emulate_npu,
            continuous_batching=continuous_batching,
            allow_modified_models=allow_modified_models,
            prefix_reuse=prefix_reuse,
            tuned=tuned_settings(store) if tuned is None else tuned,
            failure_ttl_seconds=failure_ttl_seconds,
            clock=clock,
            attestor=attestor,
            receipts=receipts,
            ollama_names=lambda: frozenset(installed_models(ollama_models_dir())),
        )

    # -- answering ------------------------------------------------------------------------------

    def generate(
        self,
        prompt: str | Sequence[Message] | GenerateRequest,
        *,
        on_text: TextSink | None = None,
        **keywords: Any,
    ) -> GenerationResult:
        """Answer a request, or a prompt or chat messages with GenerateRequest.of's keywords (tier,
        max_new_tokens, temperature, top_p, stop, seed, decoding, tools, tool_choice,
        response_format, parallel_tool_calls); greedy unless temperature > 0. The result's
        `tool_calls` are the calls the answer makes.

        `tier="auto"` lets the router choose the tier (and prompt lookup for edits, when `decoding`
        is auto). `on_text` hears each piece of text as it is produced and may return True to stop.
        `receipt=True`: the result carries a signed receipt of the answer (`result.receipt`; None
        when a remote server answered: no local model wrote it).
        """
        return self.run(self.prepare(_request(prompt, keywords)), on_text)

    def stream(
        self, prompt: str | Sequence[Message] | GenerateRequest, **keywords: Any
    ) -> Iterator[StreamChunk]:
        """StreamChunks of text as they are produced, then one holding the GenerationResult.
        Closing the iterator early stops the generation within a token or two."""
        prepared = self.prepare(_request(prompt, keywords))
        chunks: queue.Queue[StreamChunk | BaseException] = queue.Queue()
        run = Run(lambda sink: self.run(prepared, sink), chunks.put)
        try:
            while True:
                chunk = chunks.get()
                if isinstance(chunk, BaseException):
                    raise chunk
                yield chunk
                if chunk.result is not None:
                    return
        finally:
            run.stop.set()
            run.join()

    def prepare(self, request: GenerateRequest) -> Prepared:
        """Route the request (tier `auto`), check it, and plan its chain, reading the store once.
        Raises UserInputError for a request no target could take."""
        route: Route | None = None
        lenient = False
        if self._receipts:
            request = replace(request, receipt=True)
        if request.tier == AUTO:
            route = self._router.route_completion() if request.raw else self._router.route(request.messages)
            # The router's prompt lookup is a preference: where it cannot run (the NPU), decode plainly.
            lenient = (
                request.decoding == "auto"
                and route.strategy == "prompt_lookup"
                and request.constraint() is None  # structured output decodes plainly
            )
            request = replace(
                request, tier=route.tier, decoding="prompt_lookup" if lenient else request.decoding
            )
        request.validate()
        tier = self._planner.tier(request.tier)
        if request.backend == "remote" and request.tier not in self._placed:
            raise UserInputError(
                f"tier {request.tier!r} has no remote server (remote-tiers.json in {self._store.root})"
            )
        if self._embeds(tier):
            raise UserInputError(
                f"tier {request.tier!r} serves {tier.model}, an embedding model: it does not chat or "
                "complete text (ask it for embeddings)"
            )
        every = self._store.manifests()
        mine = tuple(m for m in every if m.model in (tier.model, tier.draft))
        chain = self._chain(request.tier, every)
        raw, infill = (None, None) if request.prompt is None else self._completion(request, tier)
        return Prepared(Job(request, tier, mine, lenient, raw, infill), chain, route)

    def run(self, prepared: Prepared, on_text: TextSink | None = None) -> GenerationResult:
        """Walk the prepared chain until a target answers; each step that does not is reported.
        A failure after text was streamed ends the request: another target would start over."""
        tier, model = prepared.job.tier.tier, prepared.job.tier.model
        streamed = False

        def heard(text: str) -> bool | None:
            nonlocal streamed
            streamed = True
            return on_text(text) if on_text is not None else None

        def attempt(target: Target) -> GenerationResult:
            if prepared.job.infill is None:
                return target.answer(prepared.job, heard)
            # Each target starts the infill over, so each gets its own stream.
            stream = InfillStream(prepared.job.infill, heard)
            return stream.relay(partial(target.answer, prepared.job))

        try:
            result, steps = self._first_to_answer(
                prepared.chain,
                tier,
                model,
                attempt,
                failed="failed",
                nobody=f"no device or fallback could answer tier {tier!r}",
                streamed=lambda: streamed,
            )
        except GenerationError as error:
            raise GenerationError(self._with_ways_out(str(error), tier)) from error
        result = replace(result, fallback=steps, route=prepared.route)
        if not prepared.job.request.receipt:
            return result
        return replace(result, receipt=self._receipt(prepared.job, result))

    def complete(
        self,
        prompt: str,
        *,
        suffix: str | None = None,
        on_text: TextSink | None = None,
        **keywords: Any,
    ) -> GenerationResult:
        """Continue `prompt` as given, without the chat template; with `suffix`, fill in the code
        between `prompt` and `suffix` with the FIM tokens of the tier's model family (a
        UserInputError when it has none). Keywords as GenerateRequest.completion's (tier,
        max_new_tokens (64), temperature, top_p, stop, seed, decoding); `tier="auto"` is the tier
        the router sends code to. An infill stops at the family's FIM end tokens and at the
        blank-line and indentation rules of `infill.py`."""
        request = GenerateRequest.completion(prompt, suffix=suffix, **keywords)
        return self.run(self.prepare(request), on_text)

    def family(self, tier: str) -> ModelFamily:
        """The model family of the tier's model (`auto`: of the code tier's, where raw completions go)."""
        if tier == AUTO:
            tier = self._router.route_completion().tier
        return self._family_of(self._planner.tier(tier))

    def embed(
        self, texts: str | Sequence[str], tier: str = EMBED_TIER, *, truncate: bool = True
    ) -> EmbeddingResult:
        """One vector per text, in order, from the tier's embedding model on the first device of
        its chain that can run it (a device that fails is skipped for a while, as for generation).

        A text longer than the model reads is cut to its beginning, or refused (UserInputError)
        when `truncate` is False. UserInputError also for no texts, or a tier with a chat model."""
        request = EmbedRequest.of(texts, tier, truncate).validate()
        spec = self._planner.tier(tier)
        if not self._embeds(spec):
            raise UserInputError(
                f"tier {tier!r} serves {spec.model}, a chat model: it makes no embeddings "
                f"(the embedding tier is {EMBED_TIER!r})"
            )
        every = self._store.manifests()
        mine = tuple(m for m in every if m.model == spec.model)
        devices = [self._devices[device.name] for device in self._planner.devices(tier, every)]
        embedding, _ = self._first_to_answer(
            devices,
            tier,
            spec.model,
            lambda target: target.embed(request, spec, mine),
            failed="failed to embed",
            nobody=f"no device could embed for tier {tier!r}",
        )
        return embedding

    def generate_on(
        self,
        model: str,
        device: str,
        prompt: str | Sequence[Message],
        *,
        max_new_tokens: int = 512,
        on_text: TextSink | None = None,
    ) -> GenerationResult:
        """Greedy plain decoding by one converted model (a store name) on one device (by name): no
        tier, chain or fallback. Loaded through the pool, so `unload` drops it; the tier is "-"."""
        request = GenerateRequest.of(prompt, tier="-", max_new_tokens=max_new_tokens, decoding="plain")
        request.validate()
        manifest = self._store.get(model)
        target = self._devices_by_name(device)
        spec = self._loader.spec(manifest, target.name, emulated=target.emulated)
        # Weights only: no tier plans a context for this model.
        with self._loader.use((manifest.name, target.name, "plain"), spec, manifest.size) as (pipeline, load):
            raw = pipeline.generate(request.messages, request.options, on_text)
        return result_of(raw, "-", manifest.name, target.label, "plain", load)

    def load_seconds(self, model: str, device: str, cache_dir: Path) -> float:
        """Seconds to open one converted model (a store name) on one device (by name) with its
        compiled-model cache in `cache_dir`; opened outside the pool and dropped after."""
        target = self._devices_by_name(device)
        spec = self._loader.spec(self._store.get(model), target.name, emulated=target.emulated)
        return self._pool.open(replace(spec, cache_dir=cache_dir)).load_seconds

    # -- declared operations: what the server, the CLI and the bench may ask ---------------------

    @property
    def profile_name(self) -> str:
        return self._planner.profile.name

    @property
    def measurements(self) -> list[Measurement]:
        """The measured speeds the planner decides with."""
        return list(self._planner.measurements)

    @property
    def emulates_npu(self) -> bool:
        return self._emulate_npu

    def tiers(self) -> dict[str, TierSpec]:
        """The profile's chat tiers by name: those that generate (the embedding tiers apart)."""
        return {name: spec for name, spec in self._planner.profile.tiers.items() if not self._embeds(spec)}

    def embedding_tiers(self) -> dict[str, TierSpec]:
        """The profile's embedding tiers by name: those that `embed`, and never generate."""
        return {name: spec for name, spec in self._planner.profile.tiers.items() if self._embeds(spec)}

    def tier(self, tier: str) -> TierSpec:
        """The profile's tier; UserInputError when it has none of that name."""
        return self._planner.tier(tier)

    def catalog_model(self, name: str) -> CatalogModel:
        """The catalog's entry for a model name (its family, trained context, sizes);
        UserInputError when the catalog has none of that name."""
        return self._planner.catalog.model(name)

    def device_names(self) -> list[str]:
        return [device.name for device in self._planner.inventory.devices]

    def device_of_kind(self, kind: DeviceKind) -> str:
        """The first device of this kind, by name; UserInputError when there is none."""
        found = self._planner.inventory.of_kind(kind)
        if not found:
            raise UserInputError(f"no {kind.upper()} here (devices: {', '.join(self.device_names())})")
        return found[0].name

    def decoding_for(self, tier: str, kind: DeviceKind, has_draft: bool) -> Decoding:
        """The mode `decoding="auto"` picks for the tier on a device of this kind."""
        return self._planner.fastest_mode(tier, kind, has_draft)

    @property
    def inventory(self) -> Inventory:
        """The devices the engine plans over."""
        return self._planner.inventory

    def plan(self) -> Plan:
        """Where each tier runs now, given the converted models in the store."""
        return self._planner.plan(self._store.manifests())

    def placed_server(self, tier: str) -> str | None:
        """The server remote-tiers.json places `tier` on; None when it has none."""
        return self._placed[tier].name if tier in self._placed else None

    def chain(self, tier: str) -> list[Target]:
        """The targets a request for `tier` tries, in order."""
        return list(self._chain(tier, self._store.manifests()))

    def converted(self) -> list[Manifest]:
        """The converted models in the store."""
        return self._store.manifests()

    def ready_tiers(self) -> set[str]:
        """The tiers that can answer now: their model is converted for a device here, or Ollama's
        store holds it (Ollama answers it as the fallback), or remote-tiers.json places them on a
        server."""
        ollama = self._ollama_names()
        catalog = self._planner.catalog
        return {
            r.tier
            for r in self._planner.readiness(self.converted())
            if r.ready or in_ollama_store(catalog.model(r.model).ollama or "", ollama)
        } | set(self._placed)

    def tier_command(self, tier: str) -> TierCommand:
        """The command that converts the tier's models, and what network it needs."""
        return tier_command(tier, self._planner.profile, self._planner.catalog)

    def loaded(self) -> list[PipelineKey]:
        """The loaded pipelines: (converted model, device, decoding mode)."""
        return self._pool.loaded()

    def keep_alive_of(self, model: str) -> float:
        """Seconds a converted model stays loaded after its last use (math.inf: until unloaded)."""
        return self._pool.keep_alive_of(model)

    def keep_alive(self, tier: str, seconds: float | None) -> list[PipelineKey]:
        """Keep every conversion of the tier's model loaded this long after its last use
        (None: the default; 0 unloads them now, once idle). Returns what was unloaded."""
        model = self._planner.tier(tier).model
        dropped: list[PipelineKey] = []
        for manifest in self._store.manifests():
            if manifest.model == model:
                dropped += self._pool.keep_alive(manifest.name, seconds)
        return dropped

    def unload(self, model: str | None = None) -> list[PipelineKey]:
        """Drop the idle pipelines of a converted model (of all when None)."""
        return self._pool.unload(model)

    def unload_idle(self) -> list[PipelineKey]:
        """Drop pipelines unused for longer than their keep-alive."""
        return self._pool.unload_idle()

    def queue_depth(self) -> int:
        """Requests queued or generating, on all loaded models."""
        return self._pool.queued()

    def verify_receipt(self, document: bytes | str, text: bytes | None = None) -> Verified:
        """Check a receipt this engine's key signed (see attest_verify.verify_receipt): its
        signature, its subject against `text` when given, and the model it names against the
        store, as the engine checks a model it loads (a file is hashed again only when it changed
        since; `npu-engine verify` re-hashes every file). ReceiptError names the first check that
        failed."""
        key = self._attestor.keys.public_key()
        return verify_receipt(document, key, self._store, self._planner.catalog, text, rehash=False)

    # -- internals ------------------------------------------------------------------------------

    def _completion(self, request: GenerateRequest, tier: TierSpec) -> tuple[RawPrompt, InfillEnd | None]:
        """A raw completion's text for the tier's model, and an infill's end rules (infill.py)."""
        family = self._family_of(tier)
        return completion_prompt(
            family, f"{tier.model} (tier {tier.tier})", request.prompt or "", request.suffix
        )

    def _receipt(self, job: Job, result: GenerationResult) -> Receipt | None:
        """The signed receipt of an answer a converted model of the store wrote; None for one
        from a remote server."""
        manifest = next((m for m in job.manifests if m.name == result.model), None)
        if manifest is None or result.prompt_sha256 is None:
            return None
        try:
            # A receipt names the manifest's files: never signed for files that differ from it
            # (served under allow_modified_models). Sizes each time, hashes only what changed.
            self._store.checked_path(manifest)
        except StoreError as error:
            raise ReceiptError(f"no receipt: {presentable(error)}", "files") from None
        digest = manifest_sha256(self._store.path(manifest.name))
        return self._attestor.attest(result, manifest, digest, job.request.options, result.prompt_sha256)

    def _embeds(self, spec: TierSpec) -> bool:
        return self._family_of(spec).embedding

    def _family_of(self, spec: TierSpec) -> ModelFamily:
        return self._planner.catalog.model(spec.model).family

    def _chain(self, tier: str, manifests: Sequence[Manifest]) -> tuple[Target, ...]:
        targets: list[Target] = [
            self._devices[target.name] if isinstance(target, Device) else self._placed[target.tier]
            for target in self._planner.targets(tier, manifests)
            if isinstance(target, Device) or target.tier in self._placed
        ]
        return (*targets, *self._remotes)

    def _devices_by_name(self, device: str) -> DeviceTarget:
        return self._devices[self._planner.inventory.device(device).name]

    def _first_to_answer(
        self,
        targets: Iterable[_T],
        tier: str,
        model: str,
        attempt: Callable[[_T], _R],
        *,
        failed: str,
        nobody: str,
        streamed: Callable[[], bool] = lambda: False,
    ) -> tuple[_R, tuple[FallbackStep, ...]]:
        """The first of `targets` that `attempt` succeeds on, and the steps that did not: a target
        that failed recently is skipped, one that is Unavailable or fails is a step. A failure
        after text was `streamed` ends the request: another target would start over. None
        answering is a GenerationError that starts with `nobody` and lists the steps."""
        steps: list[FallbackStep] = []
        for target in targets:
            skip = self._recent_failure(target.name, model)
            if skip:
                steps.append(FallbackStep(target.name, f"skipped: failed {skip}"))
                continue
            try:
                return attempt(target), tuple(steps)
            except Unavailable as unavailable:
                steps.append(FallbackStep(target.name, str(unavailable)))
            except (NpuEngineError, RuntimeError, OSError) as error:
                if isinstance(error, (UserInputError, EngineBusyError)):
                    raise
                # Users see the sentence, never a library's file paths; the log keeps the detail.
                log.warning("tier %s: %s %s: %s", tier, target.name, failed, error)
                reason = presentable(error)[:300]
                self._remember_failure(target.name, model, reason)
                if streamed():
                    raise GenerationError(
                        f"{target.name} failed mid-answer for tier {tier!r}: {reason}"
                    ) from error
                steps.append(FallbackStep(target.name, f"failed: {reason}"))
        detail = "; ".join(f"{s.target}: {s.reason}" for s in steps) or "the chain is empty"
        raise GenerationError(f"{nobody} ({detail})")

    def _with_ways_out(self, message: str, tier: str) -> str:
        """`message`, followed by the ways to get `tier` answered here when no device of this
        machine has its model converted (see readiness.ways_out)."""
        planner, manifests = self._planner, self._store.manifests()
        if any(r.tier == tier and r.ready for r in planner.readiness(manifests)):
            return message
        kinds = {device.kind for device in planner.inventory.devices}
        found = ways_out(
            tier, planner.profile, planner.catalog, planner.recipes, manifests, kinds, self._ollama_names()
        )
        numbered = "; ".join(f"({n}) {way}" for n, way in enumerate(found, 1))
        return f"{message}. Ways out here: {numbered}" if found else message

    def _recent_failure(self, target: str, model: str) -> str | None:
        with self._guard:
            seen = self._failures.get((target, model))
        if seen is None or self._clock() - seen[0] > self._failure_ttl:
            return None
        return f"{self._clock() - seen[0]:.0f}s ago ({seen[1]})"

    def _remember_failure(self, target: str, model: str, reason: str) -> None:
        with self._guard:
            self._failures[(target, model)] = (self._clock(), reason)


def _request(prompt: str | Sequence[Message] | GenerateRequest, keywords: dict[str, Any]) -> GenerateRequest:
    if isinstance(prompt, GenerateRequest):
        if keywords:
            raise TypeError("pass a GenerateRequest alone, or a prompt with keywords")
        return prompt
    return GenerateRequest.of(prompt, **keywords)


def fast_tier_generate(engine: Engine) -> Callable[[str], str]:
    """A few greedy tokens from the fast tier: what the router's optional second stage asks."""

    def generate(prompt: str) -> str:
        return engine.generate(prompt, tier="fast", max_new_tokens=4, decoding="plain").text

    return generate


__all__ = [
    "EmbeddingResult",
    "Engine",
    "FallbackStep",
    "GenerateRequest",
    "GenerationError",
    "GenerationMetrics",
    "GenerationResult",
    "NetworkError",
    "Prepared",
    "StreamChunk",
]
