"""Loaded pipelines: loaded lazily, one caller at a time each, a bounded queue in front of each,
unloaded when idle past the keep-alive or when a new load would break the memory budget. A
pipeline generates text (`Pipeline`) or embeds it (`Embedder`); the pool keeps both alike."""

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from npu_engine.backends.genai_config import Constraint
from npu_engine.embedding import RawEmbedding
from npu_engine.errors import EngineBusyError
from npu_engine.generation import Prompt, RawGeneration, SamplingOptions, TextSink

# (model, device, decoding mode): OpenVINO GenAI's pipelines; a GGUF in llama.cpp has LLAMA_CPP for
# its mode (it decodes plainly), an embedding model "embed".
PipelineKey = tuple[str, str, str]
LLAMA_CPP = "llama.cpp"


def decoding_and_backend(key: PipelineKey) -> tuple[str, str]:
    """The decoding mode and the backend of a loaded pipeline, as /api/ps and /metrics name them."""
    return ("plain", LLAMA_CPP) if key[2] == LLAMA_CPP else (key[2], "openvino")


class Pipeline(Protocol):
    load_seconds: float
    concurrent: bool  # True when callers may generate at once (continuous batching)

    def count_prompt_tokens(self, prompt: Prompt, tools: Sequence[dict[str, Any]] = ()) -> int: ...

    def chat_prompt(self, prompt: Prompt, tools: Sequence[dict[str, Any]] = ()) -> str:
        """The prompt's text as the model sees it: raw, or after its chat template."""
        ...

    def reused_tokens(self, prompt: Prompt, tools: Sequence[dict[str, Any]] = ()) -> int:
        """Prompt tokens the next call would read back from the KV cache rather than evaluate."""
        ...

    def generate(
        self,
        prompt: Prompt,
        options: SamplingOptions,
        on_text: TextSink | None = None,
        tools: Sequence[dict[str, Any]] = (),
        constraint: Constraint | None = None,
    ) -> RawGeneration: ...


@runtime_checkable
class Embedder(Protocol):
    load_seconds: float
    concurrent: bool

    def embed(self, texts: Sequence[str], truncate: bool = True) -> RawEmbedding: ...


@dataclass
class _Slot:
    lock: threading.Lock = field(default_factory=threading.Lock)  # loading and unloading
    run: threading.Lock = field(default_factory=threading.Lock)  # one caller at a time, unless concurrent
    pipeline: Pipeline | Embedder | None = None
    size: int = 0
    last_used: float = 0.0
    waiting: int = 0  # callers queued or generating
    active: int = 0  # callers generating; never unloaded while above 0


class PipelinePool:
    def __init__(
        self,
        factory: Callable[[Any], Pipeline | Embedder],
        budget_bytes: int,
        keep_alive_seconds: float,
        max_waiting: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = factory
        self._budget = budget_bytes
        self.keep_alive_seconds = keep_alive_seconds
        self.max_waiting = max_waiting
        self._clock = clock
        self._slots: dict[PipelineKey, _Slot] = {}
        self._keep: dict[str, float] = {}  # per-model keep-alive, seconds (math.inf: forever)
        self._guard = threading.Lock()

    @contextmanager
    def use(self, key: PipelineKey, spec: Any, size: int) -> Iterator[tuple[Pipeline, float]]:
        """The pipeline for `key`, loaded from `spec` if needed, held for the block: exclusively,
        unless it batches concurrent callers itself.

        Yields the pipeline and the seconds spent loading it (0 when it was loaded already).
        Raises EngineBusyError when `max_waiting` callers are already queued or generating on it.
        """
        with self._hold(key, spec, size) as (held, load_seconds):
            if isinstance(held, Embedder):
                raise TypeError(f"{key[0]} is an embedding model: it does not generate")
            yield held, load_seconds

    @contextmanager
    def use_embedder(self, key: PipelineKey, spec: Any, size: int) -> Iterator[tuple[Embedder, float]]:
        """As `use`, for an embedding model's pipeline."""
        with self._hold(key, spec, size) as (held, load_seconds):
            if not isinstance(held, Embedder):
                raise TypeError(f"{key[0]} is not an embedding model")
            yield held, load_seconds

    @contextmanager
    def _hold(self, key: PipelineKey, spec: Any, size: int) -> Iterator[tuple[Pipeline | Embedder, float]]:
        with self._guard:
            slot = self._slots.setdefault(key, _Slot())
            if slot.waiting >= self.max_waiting:
                raise EngineBusyError(
                    f"{key[0]} on {key[1]} has {slot.waiting} requests queued; try again shortly"
                )
            slot.waiting += 1
        try:
            with slot.lock:
                self.unload_idle()
                load_seconds = 0.0
                if slot.pipeline is None:
                    self._make_room(size, keep=key)
                    slot.pipeline = self._factory(spec)
                    slot.size = size
                    load_seconds = slot.pipeline.load_seconds
                pipeline = slot.pipeline
                with self._guard:
                    slot.active += 1
            try:
                if pipeline.concurrent:
                    yield pipeline, load_seconds
                else:
                    with slot.run:
                        yield pipeline, load_seconds
            finally:
                with self._guard:
                    slot.active -= 1
                    slot.last_used = self._clock()
        finally:
            with self._guard:
                slot.waiting -= 1

    def open(self, spec: Any) -> Pipeline | Embedder:
        """A pipeline for `spec` outside the pool: neither kept nor counted (for timing a load)."""
        return self._factory(spec)

    def peek(self, key: PipelineKey) -> Pipeline | Embedder | None:
        """The pipeline loaded for `key` when it is idle, without holding it (to ask what its KV
        cache holds); None when none is loaded or a caller is using it."""
        with self._guard:
            slot = self._slots.get(key)
            return slot.pipeline if slot is not None and slot.active == 0 else None

    def loaded(self) -> list[PipelineKey]:
        with self._guard:
            return [key for key, slot in self._slots.items() if slot.pipeline is not None]

    def queued(self) -> int:
        with self._guard:
            return sum(slot.waiting for slot in self._slots.values())

    def keep_alive(self, model: str, seconds: float | None) -> list[PipelineKey]:
        """Keep `model`'s pipelines this long after their last use (math.inf: until unloaded; None:
        the pool's default). 0 unloads them now, once idle. Returns what was unloaded."""
        with self._guard:
            if seconds is None or seconds == 0:
                self._keep.pop(model, None)
            else:
                self._keep[model] = seconds
        return self.unload(model) if seconds == 0 else []

    def keep_alive_of(self, model: str) -> float:
        with self._guard:
            return self._keep.get(model, self.keep_alive_seconds)

    def unload_idle(self) -> list[PipelineKey]:
        """Drop pipelines unused for longer than their keep-alive; returns what was unloaded."""
        now = self._clock()
        with self._guard:
            keep = dict(self._keep)
        return self._unload(
            lambda key, slot: now - slot.last_used > keep.get(key[0], self.keep_alive_seconds)
        )

    def unload(self, model: str | None = None) -> list[PipelineKey]:
        """Drop the idle pipelines of `model` (all models when None)."""
        return self._unload(lambda key, slot: model is None or key[0] == model)

    def _make_room(self, size: int, keep: PipelineKey) -> None:
        with self._guard:
            used = sum(slot.size for slot in self._slots.values() if slot.pipeline is not None)
            by_age = sorted(
                (slot.last_used, key)
                for key, slot in self._slots.items()
                if slot.pipeline is not None and key != keep
            )
        for _, oldest in by_age:
            if used + size <= self._budget:
                break
            for dropped in self._unload(lambda key, _slot, oldest=oldest: key == oldest):  # type: ignore[misc]
                used -= self._slots[dropped].size

    def _unload(self, doomed: Callable[[PipelineKey, _Slot], bool]) -> list[PipelineKey]:
        dropped = []
        with self._guard:
            candidates = [(key, slot) for key, slot in self._slots.items() if slot.pipeline is not None]
        for key, slot in candidates:
            if doomed(key, slot) and slot.lock.acquire(blocking=False):
                try:
                    with self._guard:
                        idle = slot.active == 0
                    if idle:
                        slot.pipeline = None
                        dropped.append(key)
                finally:
                    slot.lock.release()
        return dropped
