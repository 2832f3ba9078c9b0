"""The steps of a fallback chain. Every step is a Target: a device of this machine, Ollama, or an
OpenAI-compatible server, asked the same way (`answer(job, on_text)`) and answering with the same
GenerationResult. A chain is a list of targets; the engine walks it in one loop."""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from npu_engine.backends.pipeline_spec import (
    BatchingLimits,
    DecodingMode,
    EmbeddingSpec,
    LlamaCppSpec,
    PipelineSpec,
)
from npu_engine.catalog import Catalog, TierSpec
from npu_engine.device_profile import TunedSettings
from npu_engine.devices import Device, DeviceKind
from npu_engine.embedding import EmbeddingResult, EmbedRequest
from npu_engine.errors import ContextLengthError
from npu_engine.generation import Message, Prompt, RawGeneration, RawPrompt, SamplingOptions, TextSink
from npu_engine.gguf_source import source_gguf_path
from npu_engine.infill import InfillEnd
from npu_engine.machine import cpu_threads
from npu_engine.manifest import Manifest
from npu_engine.pipelines import LLAMA_CPP, Embedder, Pipeline, PipelineKey, PipelinePool
from npu_engine.planner import Planner, RequestShape
from npu_engine.readiness import tier_command
from npu_engine.receipt import text_sha256
from npu_engine.request import GenerateRequest, GenerationResult
from npu_engine.store import ModelStore
from npu_engine.tool_format import HeldText, chat_messages, offered, parse

CHARS_PER_TOKEN = 3.5

# The NPU's static shapes: the longest prompt, and the least room kept for the answer.
NPU_MAX_PROMPT = 1024
NPU_MIN_RESPONSE = 512


@dataclass(frozen=True)
class Job:
    """One request on one tier, as every target of the tier's chain sees it: the request, the
    tier's spec, the converted models of its model and draft, and whether a decoding mode the
    target cannot run may fall back to plain (the router's preference, not the caller's demand).

    For a raw completion, `raw` is the text the model continues (for an infill, in its family's
    FIM form) and `infill` the rules that end an infill early (see infill.py)."""

    request: GenerateRequest
    tier: TierSpec
    manifests: tuple[Manifest, ...]
    lenient: bool = False
    raw: RawPrompt | None = None
    infill: InfillEnd | None = None

    @property
    def prompt(self) -> Prompt:
        """What the pipeline continues: the raw text, else the chat messages."""
        return self.raw if self.raw is not None else self.request.messages

    def next_shared(self, prompt_tokens: int) -> int:
        """How many of the prompt's first tokens (of `prompt_tokens`) the next request is guessed
        to start with: an infill's next keystroke shares the code before the cursor (its suffix
        follows it, in the prompt sent or in the FIM form built); another raw completion is an
        editor's, continued; a chat of more than one message (a system prompt counts) or with tools
        is a conversation whose next turn starts with this whole prompt; one lone message is taken
        to stand alone (0)."""
        if self.infill is not None:
            return int(self.infill.before_chars / CHARS_PER_TOKEN)
        if self.raw is not None or self.request.tools or len(self.request.messages) > 1:
            return prompt_tokens
        return 0


class Target(Protocol):
    """A step of a chain. `answer` raises Unavailable when this target cannot take the job (nothing
    to remember), any other NpuEngineError, RuntimeError or OSError when it failed."""

    name: str

    def answer(self, job: Job, on_text: TextSink) -> GenerationResult: ...


class Unavailable(Exception):
    """A target that cannot serve this request, such as a model not converted for the device."""


def result_of(
    raw: RawGeneration,
    tier: str,
    model: str,
    device: str,
    decoding: str,
    load_seconds: float = 0.0,
    backend: str = "openvino",
) -> GenerationResult:
    """The backend's answer with who gave it; `load_seconds` is what loading the model took."""
    metrics = replace(raw.metrics, load_seconds=load_seconds)
    return GenerationResult(
        raw.text, raw.finish_reason, tier, model, device, decoding, metrics, backend=backend
    )


def estimated_tokens(prompt: Prompt) -> int:
    """About how many tokens a prompt has, before any tokenizer is loaded: enough to weigh
    prefill against decoding (code and English run about 3.5 characters a token)."""
    text = (
        prompt.text if isinstance(prompt, RawPrompt) else "".join(str(m.get("content") or "") for m in prompt)
    )
    return int(len(text) / CHARS_PER_TOKEN)


class RemoteBackend(Protocol):
    def generate(
        self,
        model: str,
        messages: Sequence[Message],
        options: SamplingOptions,
        on_text: TextSink | None = None,
    ) -> RawGeneration: ...


class RemoteTarget:
    """A model served over HTTP (Ollama, an OpenAI-compatible server); `models` names the remote
    model for a catalog model (None: it has none). A `placed` target is a tier's own server
    (remote-tiers.json), which a request asking for a local backend passes over; the fallbacks
    answer whatever was asked once this machine could not."""

    def __init__(
        self, name: str, backend: RemoteBackend, models: Callable[[str], str | None], placed: bool = False
    ) -> None:
        self.name = name
        self.backend = backend
        self.models = models
        self.placed = placed

    def answer(self, job: Job, on_text: TextSink) -> GenerationResult:
        remote = self.models(job.tier.model)
        if self.placed and job.request.backend in ("openvino", LLAMA_CPP):
            raise Unavailable(f"backend {job.request.backend!r} asked for, not the tier's server")
        if job.raw is not None:
            raise Unavailable(f"{self.name} takes chat requests only, not raw completions")
        if not remote:
            raise Unavailable(f"no {self.name} model for {job.tier.model}")
        if job.request.constraint() is not None:
            # Its calls and JSON would come back unchecked, in its own format: not the same answer.
            raise Unavailable(f"the {self.name} fallback does not take tools or a response format")
        raw = self.backend.generate(remote, job.request.messages, job.request.options, on_text)
        return result_of(raw, job.tier.tier, f"{self.name}:{remote}", self.name, "plain", backend=self.name)


class PipelineLoader:
    """Opens converted models as pipelines, through the pool that keeps them loaded: checks their
    files against their manifests on the way (see ModelStore.checked_path), with the runtime
    settings `npu-bench tune` kept for the model on the device (`tuned`), else the defaults."""

    def __init__(
        self,
        store: ModelStore,
        pool: PipelinePool,
        continuous_batching: bool = False,
        allow_modified_models: bool = False,
        prefix_reuse: bool = True,
        tuned: Sequence[TunedSettings] = (),
    ) -> None:
        self.store = store
        self.pool = pool
        self.continuous_batching = continuous_batching
        self.allow_modified_models = allow_modified_models
        self.prefix_reuse = prefix_reuse
        self.tuned = {(t.model, t.device): t for t in tuned}

    def spec(
        self,
        manifest: Manifest,
        device: str,
        mode: DecodingMode = "plain",
        draft: Manifest | None = None,
        emulated: bool = False,
        kv_bytes: int = 0,
    ) -> PipelineSpec:
        allowed = self.allow_modified_models
        tuned = self.tuned.get((manifest.name, device), TunedSettings(manifest.name, device))
        return PipelineSpec(
            model_path=self.store.checked_path(manifest, allowed),
            device=device,
            cache_dir=self.store.compiled_cache(manifest.name),
            max_prompt_len=NPU_MAX_PROMPT,
            min_response_len=NPU_MIN_RESPONSE,
            emulate_npu=emulated,
            mode=mode,
            draft_path=self.store.checked_path(draft, allowed) if draft else None,
            batching=(
                BatchingLimits(max_sequences=self.pool.max_waiting, cache_bytes=kv_bytes * 2)
                if self.continuous_batching
                else None
            ),
            cpu=tuned.cpu,
            speculation=tuned.speculation,
        )

    def source_gguf(self, manifest: Manifest, catalog: Catalog) -> Path | None:
        """The GGUF `manifest` was converted from, when it is here and still hashes to the
        manifest's source digest (llama.cpp then runs the very weights the IR was made from)."""
        path = source_gguf_path(manifest, catalog, self.store.root)
        if path is None or not path.is_file() or not self.store.source_matches(path, manifest.source.digest):
            return None
        return path

    def llama_cpp_spec(self, manifest: Manifest, gguf: Path, context: int) -> LlamaCppSpec:
        return LlamaCppSpec(
            gguf_path=gguf,
            tokenizer_path=self.store.checked_path(manifest, self.allow_modified_models),
            context=context,
            threads=self._llama_threads(manifest.name) or cpu_threads(),
            reuse_prefix=self.prefix_reuse,
        )

    def _llama_threads(self, model: str) -> int | None:
        tuned = self.tuned.get((model, "CPU"))
        return tuned.llama_threads if tuned is not None else None

    def embedding_spec(self, manifest: Manifest, device: str) -> EmbeddingSpec:
        info = manifest.embedding
        if info is None:
            raise AssertionError(f"{manifest.name} is not an embedding model")
        return EmbeddingSpec(
            model_path=self.store.checked_path(manifest, self.allow_modified_models),
            device=device,
            pooling=info.pooling,
            normalize=info.normalize,
            max_length=info.max_length,
            cache_dir=self.store.compiled_cache(manifest.name),
        )

    @contextmanager
    def use(
        self, key: PipelineKey, spec: PipelineSpec | LlamaCppSpec, size: int
    ) -> Iterator[tuple[Pipeline, float]]:
        with self.pool.use(key, spec, size) as held:
            yield held


def not_converted(planner: Planner, tier: TierSpec, kind: DeviceKind) -> str:
    """Why a device cannot run `tier`: its model is not converted for that kind, and the command
    that converts it, with what network that needs."""
    command = tier_command(tier.tier, planner.profile, planner.catalog, kind)
    return f"{tier.model} is not converted for {kind.upper()} ({command.command}, {command.source})"


class DeviceTarget:
    """A device of this machine running the tier's converted model with OpenVINO GenAI."""

    def __init__(self, device: Device, planner: Planner, loader: PipelineLoader, emulated: bool) -> None:
        self.device = device
        self.name = device.name
        self.planner = planner
        self.loader = loader
        self.emulated = emulated

    @property
    def label(self) -> str:
        """The device as results name it: an emulated NPU says so."""
        return self.name + (" (emulated on CPU)" if self.emulated else "")

    def answer(self, job: Job, on_text: TextSink) -> GenerationResult:
        device, tier, request = self.device, job.tier, job.request
        if request.backend == "remote":
            raise Unavailable("the request asked for the tier's remote server")
        manifest = self.planner.conversion(job.manifests, tier.model, device.kind)
        if manifest is None:
            raise Unavailable(not_converted(self.planner, tier, device.kind))
        draft = self.planner.conversion(job.manifests, tier.draft, device.kind) if tier.draft else None
        constraint = request.constraint()
        # Structured output runs with plain decoding: `auto` means plain there (see validate).
        asked = "plain" if constraint is not None and request.decoding == "auto" else request.decoding
        mode = self.planner.decoding(asked, tier.tier, device, draft is not None, job.lenient)
        gguf = self.loader.source_gguf(manifest, self.planner.catalog) if device.kind == "cpu" else None
        blocked = self._llama_cpp_blocked(job, manifest, gguf)
        tools = offered(request.tools, request.tool_choice)
        family = self.planner.catalog.model(tier.model).family
        messages, declared = chat_messages(request.messages, tools, family.tools)
        prompt: Prompt = job.raw if job.raw is not None else messages
        llama_key: PipelineKey = (manifest.name, device.name, LLAMA_CPP)
        cached = 0 if blocked else self._llama_cpp_cached(llama_key, prompt, declared)
        tokens = estimated_tokens(job.prompt)
        shared = job.next_shared(tokens) if self.loader.prefix_reuse else 0
        shape = RequestShape(tokens, request.options.max_new_tokens, cached, shared)
        pick = self.planner.backend(request.backend, asked, tier.tier, device, mode, blocked, shape)
        mode = pick.mode
        draft = draft if mode == "speculative" else None
        # Memory as the scheduler counts it: weights (with the draft's) plus the KV cache at the
        # tier's planned context, which also sizes the batching pipeline's shared cache.
        kv = self.planner.kv_bytes(tier.tier)
        context = min(tier.context, manifest.context_length, request.context_limit or tier.context)
        spec: PipelineSpec | LlamaCppSpec
        key: PipelineKey
        if pick.backend == LLAMA_CPP and gguf is not None:
            spec = self.loader.llama_cpp_spec(manifest, gguf, min(tier.context, manifest.context_length))
            key, size = llama_key, gguf.stat().st_size + kv
        else:
            spec = self.loader.spec(manifest, device.name, mode, draft, self.emulated, kv)
            key, size = (manifest.name, device.name, mode), manifest.size + (draft.size if draft else 0) + kv
        options = request.options
        sink = HeldText(on_text) if tools else on_text
        with self.loader.use(key, spec, size) as (pipeline, load_seconds):
            prompt_tokens = pipeline.count_prompt_tokens(prompt, declared)
            if prompt_tokens >= context:
                raise ContextLengthError(prompt_tokens, context, f"tier {tier.tier} ({tier.model})")
            if device.kind == "npu" and (
                prompt_tokens > NPU_MAX_PROMPT
                or prompt_tokens + options.max_new_tokens > NPU_MAX_PROMPT + NPU_MIN_RESPONSE
            ):
                raise Unavailable(
                    f"prompt of {prompt_tokens} tokens plus {options.max_new_tokens} new "
                    "exceeds the NPU's "
                    f"static shape ({NPU_MAX_PROMPT} prompt, {NPU_MAX_PROMPT + NPU_MIN_RESPONSE} in all)"
                )
            raw = pipeline.generate(prompt, options, sink, declared, constraint)
            # What a receipt names: the prompt exactly as the model saw it.
            seen = text_sha256(pipeline.chat_prompt(prompt, declared)) if request.receipt else None
        result = result_of(raw, tier.tier, manifest.name, self.label, mode, load_seconds, pick.backend)
        result = replace(result, prompt_sha256=seen)
        if not tools:
            return result
        content, calls = parse(raw.text, tools)
        if isinstance(sink, HeldText):
            sink.release(calls)
        if not calls:
            return result
        return replace(result, text=content, finish_reason="tool_calls", tool_calls=calls)

    def _llama_cpp_cached(self, key: PipelineKey, prompt: Prompt, declared: Sequence[dict[str, Any]]) -> int:
        """Prompt tokens llama.cpp's loaded, idle pipeline for `key` would read back for this prompt."""
        loaded = self.loader.pool.peek(key)
        if loaded is None or isinstance(loaded, Embedder):
            return 0
        return loaded.reused_tokens(prompt, declared)

    def _llama_cpp_blocked(self, job: Job, manifest: Manifest, gguf: Path | None) -> str | None:
        """Why llama.cpp cannot take this job here, or None when it can."""
        if job.request.constraint() is not None:
            return "structured output runs on OpenVINO"
        if gguf is None:
            return f"no source GGUF of {manifest.name} here that matches its manifest"
        if self.loader.continuous_batching and job.request.backend == "auto":
            return "continuous batching decodes concurrent requests together on OpenVINO"
        return None

    def embed(self, request: EmbedRequest, tier: TierSpec, manifests: Sequence[Manifest]) -> EmbeddingResult:
        """The tier's embedding model, converted for this device, embeds the request's texts."""
        manifest = self.planner.conversion(manifests, tier.model, self.device.kind)
        if manifest is None or manifest.embedding is None:
            raise Unavailable(not_converted(self.planner, tier, self.device.kind))
        spec = self.loader.embedding_spec(manifest, self.device.name)
        key = (manifest.name, self.device.name, "embed")
        # Memory as the scheduler counts it: the weights plus the working memory of a batch at the
        # tier's context (the catalog's kv_bytes_per_token, for a model that has no KV cache).
        size = manifest.size + self.planner.kv_bytes(tier.tier)
        with self.loader.pool.use_embedder(key, spec, size) as (embedder, load_seconds):
            raw = embedder.embed(request.texts, request.truncate)
        return EmbeddingResult(
            raw.vectors, tier.tier, manifest.name, self.label, sum(raw.tokens), raw.seconds, load_seconds
        )
