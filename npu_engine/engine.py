"""The engine's Python API: `Engine().generate(...)` answers a tier from the device the scheduler
chose, walks the tier's fallback chain (NPU -> GPU -> CPU -> Ollama -> an OpenAI-compatible server)
when a step fails, and reports every step it took."""

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from npu_engine.backends.openvino_genai import (
    BatchingLimits,
    DecodingMode,
    OpenVinoPipelineFactory,
    PipelineSpec,
)
from npu_engine.backends.remote import OllamaBackend, OpenAICompatibleBackend, ollama_base_url
from npu_engine.catalog import Catalog, TierSpec, load_catalog
from npu_engine.demands import manifest_for, tier_demands
from npu_engine.device_profile import profile_path, read_profile
from npu_engine.devices import Device, DeviceKind, Inventory, discover
from npu_engine.errors import (
    ContextLengthError,
    EngineBusyError,
    GenerationError,
    NetworkError,
    NpuEngineError,
    UserInputError,
    presentable,
)
from npu_engine.generation import (
    Message,
    RawGeneration,
    SamplingOptions,
    TextSink,
    as_messages,
    validate_messages,
)
from npu_engine.manifest import Manifest
from npu_engine.pipelines import Pipeline, PipelineKey, PipelinePool
from npu_engine.recipes import load_recipe_book
from npu_engine.router import Route, Router, load_rules
from npu_engine.scheduler import OLLAMA, Measurement, Plan, default_budget, plan
from npu_engine.settings import engine_home, ollama_host, openai_fallback, router_rules_path
from npu_engine.store import ModelStore

log = logging.getLogger("npu_engine")

Decoding = Literal["auto", "plain", "speculative", "prompt_lookup"]
OPENAI = "openai"
NPU_MAX_PROMPT = 1024
NPU_MIN_RESPONSE = 512


@dataclass(frozen=True)
class GenerationMetrics:
    """Measurements of one call; times in milliseconds, load in seconds (0 when already loaded)."""

    ttft_ms: float
    tpot_ms: float
    tokens_per_second: float
    input_tokens: int
    output_tokens: int
    load_seconds: float
    accepted_tokens: int | None = None  # speculative and prompt-lookup decoding only


@dataclass(frozen=True)
class FallbackStep:
    """A step of the chain that did not answer, and why."""

    target: str
    reason: str


@dataclass(frozen=True)
class GenerationResult:
    text: str
    finish_reason: str
    tier: str
    model: str
    device: str
    decoding: str
    metrics: GenerationMetrics
    fallback: tuple[FallbackStep, ...] = ()
    route: Route | None = None  # how the router chose the tier, for tier="auto"


@dataclass(frozen=True)
class RemoteTarget:
    """An HTTP fallback: the adapter and how it names each tier's model."""

    backend: OllamaBackend | OpenAICompatibleBackend
    models: Callable[[str], str | None]


class Engine:
    """Serves generate calls for the tiers of a catalog profile from the models in the store.

    Collaborators are arguments: the store, the catalog, the machine's inventory (discovered when
    None), the pipeline factory (OpenVINO GenAI when None) and the remote fallbacks (Ollama at
    `$OLLAMA_HOST` when None; pass {} for none). `emulate_npu` adds an NPU that runs through NPUW on
    the CPU, for machines without one: a correctness path, never a speed figure.

    Model files are checked against their manifests whenever they are loaded (see
    `ModelStore.checked_path`); `allow_modified_models` serves a mismatch with a warning instead.

    `continuous_batching` decodes concurrent plain requests on the CPU and GPU together in one
    ContinuousBatchingPipeline instead of queueing them on an LLMPipeline. Off by default: OpenVINO
    GenAI 2026.4's continuous batching keeps memory from every finished request (see
    backends/batching.py), which a long-running server cannot afford.
    """

    def __init__(
        self,
        store: ModelStore | None = None,
        catalog: Catalog | None = None,
        profile: str = "embedded",
        inventory: Inventory | None = None,
        pipeline_factory: Callable[[Any], Pipeline] | None = None,
        emulate_npu: bool = False,
        memory_budget: int | None = None,
        measurements: Sequence[Measurement] | None = None,
        remotes: dict[str, RemoteTarget] | None = None,
        keep_alive_seconds: float = 300.0,
        max_waiting: int = 8,
        failure_ttl_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        router: Router | None = None,
        continuous_batching: bool = False,
        allow_modified_models: bool = False,
    ) -> None:
        self.store = store or ModelStore(engine_home())
        self.catalog = catalog or load_catalog()
        self.profile = self.catalog.profile(profile)
        self.recipes = load_recipe_book()
        inventory = inventory or discover()
        self.emulate_npu = emulate_npu and not inventory.of_kind("npu")
        if self.emulate_npu:
            cpu = inventory.of_kind("cpu")[0]
            npu = Device("NPU", "npu", f"NPU emulated on {cpu.full_name}", cpu.memory_bytes, True)
            inventory = Inventory(
                inventory.description, inventory.memory_bytes, inventory.cpu_cores, (npu, *inventory.devices)
            )
        self.inventory = inventory
        self.memory_budget = memory_budget or default_budget(inventory)
        if measurements is None:
            measured = read_profile(profile_path(self.store.root))
            measurements = measured.measurements if measured else ()
        self.measurements = list(measurements)
        if remotes is None:
            ollama = OllamaBackend(ollama_base_url(ollama_host()))
            remotes = {OLLAMA: RemoteTarget(ollama, lambda model: self.catalog.model(model).ollama)}
            configured = openai_fallback()
            if configured is not None:
                url, name, key = configured
                remotes[OPENAI] = RemoteTarget(OpenAICompatibleBackend(url, key), lambda _model: name)
        self.remotes = remotes
        self.pool = PipelinePool(
            pipeline_factory or OpenVinoPipelineFactory(),
            self.memory_budget,
            keep_alive_seconds,
            max_waiting,
            clock,
        )
        self.continuous_batching = continuous_batching
        self.allow_modified_models = allow_modified_models
        self.router = router or Router(load_rules(router_rules_path(self.store.root)), self.profile)
        self._failure_ttl = failure_ttl_seconds
        self._failures: dict[tuple[str, str], tuple[float, str]] = {}
        self._clock = clock
        self._guard = threading.Lock()

    # -- planning -------------------------------------------------------------------------------

    def plan(self, manifests: list[Manifest] | None = None) -> Plan:
        """Where each tier runs now, given the converted models in the store (or `manifests`)."""
        found = self.store.manifests() if manifests is None else manifests
        demands = tier_demands(self.profile, self.catalog, found, self.recipes)
        return plan(self.inventory, demands, self.memory_budget, self.measurements)

    def chain(self, tier: str, manifests: list[Manifest] | None = None) -> list[str]:
        """The tier's device chain then its remote fallbacks, in order."""
        self.profile.tier(tier)
        placement = self.plan(manifests).placement(tier)
        steps = ([placement.device] if placement.device else []) + [
            s for s in placement.fallback if s != OLLAMA
        ]
        return steps + [name for name in (OLLAMA, OPENAI) if name in self.remotes]

    # -- generation -----------------------------------------------------------------------------

    def generate(
        self,
        prompt: str | Sequence[Message],
        *,
        tier: str = "code",
        max_new_tokens: int = 512,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
        decoding: Decoding = "auto",
        on_text: TextSink | None = None,
    ) -> GenerationResult:
        """Answer a prompt or chat messages with the tier's model; greedy unless temperature > 0.

        `tier="auto"` lets the router choose the tier (and prompt lookup for edits, when `decoding`
        is auto). `on_text` hears each piece of text as it is produced and may return True to stop.
        """
        chosen: Route | None = None
        if tier == "auto":
            chosen = self.router.route(prompt)
            tier = chosen.tier
        # The router's prompt lookup is a preference: where it cannot run (the NPU), decode plainly.
        lenient = chosen is not None and decoding == "auto" and chosen.strategy == "prompt_lookup"
        result = self._generate(
            prompt,
            tier,
            max_new_tokens,
            temperature,
            top_p,
            stop,
            seed,
            "prompt_lookup" if lenient else decoding,
            on_text,
            lenient,
        )
        return replace(result, route=chosen) if chosen else result

    def _generate(
        self,
        prompt: str | Sequence[Message],
        tier: str,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stop: Sequence[str],
        seed: int | None,
        decoding: Decoding,
        on_text: TextSink | None,
        lenient: bool = False,
    ) -> GenerationResult:
        # Checked here, before any device: a request the runtime would reject is the caller's
        # mistake (400), never a device failure that takes the model out of service.
        options = SamplingOptions(max_new_tokens, temperature, top_p, tuple(stop), seed).validate()
        messages = as_messages(prompt)
        validate_messages(messages)
        spec = self.profile.tier(tier)
        every = self.store.manifests()
        manifests = [m for m in every if m.model in (spec.model, spec.draft)]
        steps: list[FallbackStep] = []
        streamed = False

        def heard(text: str) -> bool | None:
            nonlocal streamed
            streamed = True
            return on_text(text) if on_text is not None else None

        for target in self.chain(tier, every):
            skip = self._recent_failure(target, spec.model)
            if skip:
                steps.append(FallbackStep(target, f"skipped: failed {skip}"))
                continue
            try:
                if target in self.remotes:
                    remote = self.remotes[target]
                    name = remote.models(spec.model)
                    if not name:
                        steps.append(FallbackStep(target, f"no {target} model for {spec.model}"))
                        continue
                    raw = remote.backend.generate(name, messages, options, heard)
                    return self._result(raw, tier, f"{target}:{name}", target, "plain", 0.0, steps)
                return self._local(
                    target,
                    spec.model,
                    spec.draft,
                    manifests,
                    messages,
                    options,
                    decoding,
                    heard,
                    tier,
                    steps,
                    lenient,
                )
            except _Skip as skip_step:
                steps.append(FallbackStep(target, str(skip_step)))
            except (NpuEngineError, RuntimeError, OSError) as error:
                if isinstance(error, (UserInputError, EngineBusyError)):
                    raise
                # Users see the sentence, never a library's file paths; the log keeps the detail.
                log.warning("tier %s: %s failed: %s", tier, target, error)
                reason = presentable(error)[:300]
                if streamed:
                    # The caller already holds part of this answer: another device would start over.
                    self._remember_failure(target, spec.model, reason)
                    raise GenerationError(
                        f"{target} failed mid-answer for tier {tier!r}: {reason}"
                    ) from error
                self._remember_failure(target, spec.model, reason)
                steps.append(FallbackStep(target, f"failed: {reason}"))
        detail = "; ".join(f"{s.target}: {s.reason}" for s in steps) or "the chain is empty"
        raise GenerationError(f"no device or fallback could answer tier {tier!r} ({detail})")

    def stream(self, prompt: str | Sequence[Message], **kwargs: Any) -> Iterator[str | GenerationResult]:
        """Yield text pieces as they are produced, then the GenerationResult. Stopping the iteration
        early (closing the generator) stops the generation within a token or two."""
        pieces: queue.Queue[tuple[str, Any]] = queue.Queue()
        stop = threading.Event()

        def sink(text: str) -> bool:
            pieces.put(("text", text))
            return stop.is_set()

        def work() -> None:
            try:
                pieces.put(("done", self.generate(prompt, on_text=sink, **kwargs)))
            except BaseException as error:  # handed to the consumer's thread
                pieces.put(("error", error))

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        try:
            while True:
                kind, value = pieces.get()
                if kind == "text":
                    yield value
                elif kind == "done":
                    yield value
                    return
                else:
                    raise value
        finally:
            stop.set()
            worker.join()

    # -- internals ------------------------------------------------------------------------------

    def _local(
        self,
        device_name: str,
        model: str,
        draft: str | None,
        manifests: list[Manifest],
        messages: list[Message],
        options: SamplingOptions,
        decoding: Decoding,
        on_text: TextSink | None,
        tier: str,
        steps: list[FallbackStep],
        lenient: bool = False,
    ) -> GenerationResult:
        device = self.inventory.device(device_name)
        manifest = manifest_for(manifests, model, device.kind, self.recipes)
        if manifest is None:
            raise _Skip(
                f"{model} is not converted for {device.kind.upper()} "
                f"(npu-convert tier {tier} --profile {self.profile.name} --device {device.kind})"
            )
        mode, draft_manifest = self._decoding(decoding, tier, device, draft, manifests, lenient)
        # Memory as the scheduler counts it: weights (with the draft's) plus the KV cache at the
        # tier's planned context, which also sizes the batching pipeline's shared cache.
        kv = self.catalog.model(model).kv_bytes_per_token * self.profile.tier(tier).context
        size = manifest.size + (draft_manifest.size if draft_manifest else 0) + kv
        allowed = self.allow_modified_models
        spec = PipelineSpec(
            model_path=self.store.checked_path(manifest, allowed),
            device=device.name,
            cache_dir=self.store.cache_dir,
            max_prompt_len=NPU_MAX_PROMPT,
            min_response_len=NPU_MIN_RESPONSE,
            emulate_npu=self.emulate_npu and device.kind == "npu",
            mode=mode,
            draft_path=self.store.checked_path(draft_manifest, allowed) if draft_manifest else None,
            batching=(
                BatchingLimits(max_sequences=self.pool.max_waiting, cache_bytes=kv * 2)
                if self.continuous_batching
                else None
            ),
        )
        context = min(self.profile.tier(tier).context, manifest.context_length)
        with self.pool.use((manifest.name, device.name, mode), spec, size) as (pipeline, load_seconds):
            prompt_tokens = pipeline.count_prompt_tokens(messages)
            if prompt_tokens >= context:
                raise ContextLengthError(prompt_tokens, context, f"tier {tier} ({model})")
            if device.kind == "npu" and (
                prompt_tokens > NPU_MAX_PROMPT
                or prompt_tokens + options.max_new_tokens > NPU_MAX_PROMPT + NPU_MIN_RESPONSE
            ):
                raise _Skip(
                    f"prompt of {prompt_tokens} tokens plus {options.max_new_tokens} new "
                    "exceeds the NPU's "
                    f"static shape ({NPU_MAX_PROMPT} prompt, {NPU_MAX_PROMPT + NPU_MIN_RESPONSE} in all)"
                )
            raw = pipeline.generate(messages, options, on_text)
        label = device.name + (" (emulated on CPU)" if spec.emulate_npu else "")
        return self._result(raw, tier, manifest.name, label, mode, load_seconds, steps)

    def _decoding(
        self,
        decoding: Decoding,
        tier: str,
        device: Device,
        draft: str | None,
        manifests: list[Manifest],
        lenient: bool = False,
    ) -> tuple[DecodingMode, Manifest | None]:
        draft_manifest = manifest_for(manifests, draft, device.kind, self.recipes) if draft else None
        if decoding == "auto":
            decoding = self._fastest_mode(tier, device, draft_manifest is not None)
        if decoding == "speculative":
            if draft_manifest is None or device.kind == "npu":
                raise UserInputError(
                    f"speculative decoding needs a converted draft model on {device.kind.upper()}"
                )
            return "speculative", draft_manifest
        if decoding == "prompt_lookup":
            if device.kind == "npu" and lenient:
                return "plain", None
            if device.kind == "npu":
                raise UserInputError("prompt-lookup decoding is not available on the NPU")
            return "prompt_lookup", None
        return "plain", None

    def _fastest_mode(self, tier: str, device: Device, has_draft: bool) -> Decoding:
        """`auto`: the mode measured fastest for this tier and device kind; plain when unmeasured.

        Prompt lookup pays only when the answer repeats the prompt, so only a request (or the
        router) asks for it; `auto` chooses between plain and speculative."""
        usable = {"plain", "speculative"} if has_draft and device.kind != "npu" else {"plain"}
        speeds = {
            m.mode: m.tokens_per_second
            for m in self.measurements
            if m.tier == tier and m.device == device.kind and m.mode in usable
        }
        best = max(speeds, key=lambda mode: speeds[mode], default="plain")
        return "speculative" if best == "speculative" else "plain"

    def _result(
        self,
        raw: RawGeneration,
        tier: str,
        model: str,
        device: str,
        decoding: str,
        load_seconds: float,
        steps: list[FallbackStep],
    ) -> GenerationResult:
        return GenerationResult(
            text=raw.text,
            finish_reason=raw.finish_reason,
            tier=tier,
            model=model,
            device=device,
            decoding=decoding,
            metrics=GenerationMetrics(
                raw.ttft_ms,
                raw.tpot_ms,
                raw.tokens_per_second,
                raw.input_tokens,
                raw.output_tokens,
                load_seconds,
                raw.accepted_tokens,
            ),
            fallback=tuple(steps),
        )

    def _recent_failure(self, target: str, model: str) -> str | None:
        with self._guard:
            seen = self._failures.get((target, model))
        if seen is None or self._clock() - seen[0] > self._failure_ttl:
            return None
        return f"{self._clock() - seen[0]:.0f}s ago ({seen[1]})"

    def _remember_failure(self, target: str, model: str, reason: str) -> None:
        with self._guard:
            self._failures[(target, model)] = (self._clock(), reason)

    # -- declared operations used by the bench --------------------------------------------------

    @property
    def emulates_npu(self) -> bool:
        """Whether this engine's NPU is the emulated one (NPUW on the CPU): never a speed figure."""
        return self.emulate_npu

    def tier(self, tier: str) -> TierSpec:
        """The profile's spec of `tier`: its model, draft and planned context."""
        return self.profile.tier(tier)

    def device_of_kind(self, kind: DeviceKind) -> str:
        """The name of the first device of `kind` this engine runs on (its emulated NPU included)."""
        devices = self.inventory.of_kind(kind)
        if not devices:
            names = ", ".join(device.name for device in self.inventory.devices)
            raise UserInputError(f"no {kind.upper()} here (devices: {names})")
        return devices[0].name

    def unload(self, model: str | None = None) -> list[PipelineKey]:
        """Drop the idle pipelines of `model` (of every model when None); returns what was dropped."""
        return self.pool.unload(model)

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
        options = SamplingOptions(max_new_tokens).validate()
        messages = as_messages(prompt)
        validate_messages(messages)
        manifest = self.store.get(model)
        spec = self._spec_of(manifest, self.inventory.device(device), self.store.cache_dir)
        # Weights only: no tier plans a context for this model.
        with self.pool.use((manifest.name, spec.device, "plain"), spec, manifest.size) as (pipeline, load):
            raw = pipeline.generate(messages, options, on_text)
        label = spec.device + (" (emulated on CPU)" if spec.emulate_npu else "")
        return self._result(raw, "-", manifest.name, label, "plain", load, [])

    def load_seconds(self, model: str, device: str, cache_dir: Path) -> float:
        """Seconds to open one converted model (a store name) on one device (by name) with its
        compiled-model cache in `cache_dir`; opened outside the pool and dropped after."""
        spec = self._spec_of(self.store.get(model), self.inventory.device(device), cache_dir)
        return self.pool.factory(spec).load_seconds

    def _spec_of(self, manifest: Manifest, device: Device, cache_dir: Path | None) -> PipelineSpec:
        """Plain decoding of `manifest`'s files, checked, on `device` with the engine's NPU shape."""
        return PipelineSpec(
            model_path=self.store.checked_path(manifest, self.allow_modified_models),
            device=device.name,
            cache_dir=cache_dir,
            max_prompt_len=NPU_MAX_PROMPT,
            min_response_len=NPU_MIN_RESPONSE,
            emulate_npu=self.emulate_npu and device.kind == "npu",
        )


def fast_tier_generate(engine: Engine) -> Callable[[str], str]:
    """A few greedy tokens from the fast tier: what the router's optional second stage asks."""

    def generate(prompt: str) -> str:
        return engine.generate(prompt, tier="fast", max_new_tokens=4, decoding="plain").text

    return generate


class _Skip(Exception):
    """A chain step that cannot serve this request (not a failure to remember)."""


__all__ = [
    "Engine",
    "FallbackStep",
    "GenerationError",
    "GenerationMetrics",
    "GenerationResult",
    "NetworkError",
]
