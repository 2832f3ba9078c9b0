"""What the HTTP routes ask of the engine: which tier a `model` name means, an answer, or a stream
of one that stops when the client goes away. Both protocols' routes share it."""

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from npu_engine.engine import Engine, GenerationResult
from npu_engine.errors import (
    ContextLengthError,
    EngineBusyError,
    GenerationError,
    NpuEngineError,
    UnknownModelError,
    UserInputError,
    presentable,
)
from npu_engine.generation import Message
from npu_engine.manifest import Manifest
from npu_engine.server.metrics import Metrics

AUTO = "auto"
RETRY_AFTER_SECONDS = 2
DISCONNECT_POLL_SECONDS = 0.25  # how often a non-streamed answer checks that its client is there


@dataclass(frozen=True)
class Served:
    """A name a client may put in `model`: a tier, `auto`, or a converted model a tier serves."""

    name: str
    tier: str
    manifest: Manifest | None


@dataclass(frozen=True)
class HttpFailure:
    status: int
    message: str
    kind: str
    headers: dict[str, str]


def http_failure(error: Exception) -> HttpFailure:
    """The HTTP status and message for an engine error; anything else is an internal error.
    The message never carries a library's file path (see `presentable`)."""
    message = presentable(error)
    if isinstance(error, UnknownModelError):
        return HttpFailure(404, message, "not_found_error", {})
    if isinstance(error, ContextLengthError):
        return HttpFailure(400, message, "context_length_exceeded", {})
    if isinstance(error, UserInputError):
        return HttpFailure(400, message, "invalid_request_error", {})
    if isinstance(error, EngineBusyError):
        return HttpFailure(503, message, "server_busy", {"Retry-After": str(RETRY_AFTER_SECONDS)})
    if isinstance(error, GenerationError):
        return HttpFailure(503, message, "no_device_available", {"Retry-After": "30"})
    raise error


class ModelService:
    def __init__(self, engine: Engine, metrics: Metrics, version: str, max_new_tokens: int) -> None:
        self.engine = engine
        self.metrics = metrics
        self.version = version
        self.max_new_tokens = max_new_tokens

    def _check(self, options: dict[str, Any]) -> None:
        asked = options.get("max_new_tokens", 0)
        if asked > self.max_new_tokens:
            raise UserInputError(f"max_tokens {asked} is over this server's limit of {self.max_new_tokens}")

    def served(self) -> list[Served]:
        """Every name a client may use: the tiers, `auto`, and converted models a tier runs."""
        manifests = self.engine.store.manifests()
        names = [Served(AUTO, AUTO, None)]
        for tier, spec in self.engine.profile.tiers.items():
            converted = [m for m in manifests if m.model == spec.model]
            names.append(Served(tier, tier, converted[0] if converted else None))
        for manifest in manifests:
            serving = self._tier_for(manifest.model)
            if serving is not None:
                names.append(Served(manifest.name, serving, manifest))
        return names

    def resolve(self, model: str) -> Served:
        name = model.removesuffix(":latest")
        every = self.served()
        for served in every:
            if served.name == name:
                return served
        known = ", ".join(s.name for s in every)
        raise UnknownModelError(f"model {model!r} is not served here (known: {known})")

    def _tier_for(self, model: str) -> str | None:
        tiers = self.engine.profile.tiers
        return next(
            (
                tier
                for tier in ("code", "fast", "large", "review")
                if tier in tiers and tiers[tier].model == model
            ),
            None,
        )

    async def answer(
        self,
        messages: Sequence[Message],
        tier: str,
        disconnected: Callable[[], Awaitable[bool]] | None = None,
        **options: Any,
    ) -> GenerationResult:
        """The whole answer. Generation starts at once on its own thread, so the request meets the
        model's bounded queue now (EngineBusyError past it), never a thread pool's hidden queue.
        While it runs, `disconnected` (the request's `is_disconnected`) is polled: once the client
        has gone, generation stops within a token and the cancelled result is returned."""
        run = self._start(messages, tier, options, relay_text=False)
        try:
            while True:
                try:
                    kind, value = await asyncio.wait_for(run.events.get(), DISCONNECT_POLL_SECONDS)
                except TimeoutError:
                    if not run.stop.is_set() and disconnected is not None and await disconnected():
                        run.stop.set()
                    continue
                if kind == "error":
                    raise value
                if kind == "done":
                    self.metrics.answered(value)
                    result: GenerationResult = value
                    return result
        finally:
            run.stop.set()  # also when this task is cancelled: nobody waits for the answer

    async def stream(
        self, messages: Sequence[Message], tier: str, **options: Any
    ) -> AsyncIterator[str | GenerationResult]:
        """Text pieces, then the result. Starts generating at once; raises the engine's error before
        the first piece (so a route can still answer with an error status). When the consumer stops
        (the client disconnected), generation stops within a token."""
        run = self._start(messages, tier, options, relay_text=True)
        kind, value = await run.events.get()
        if kind == "error":
            raise value
        return self._relay(kind, value, run)

    def _start(
        self, messages: Sequence[Message], tier: str, options: dict[str, Any], relay_text: bool
    ) -> "_Run":
        """The one bridge from the event loop to the engine: `engine.generate` on a thread of its
        own, its text (when `relay_text`), result or error posted back to the loop as events, and
        stopped at the next piece of text once `stop` is set."""
        self._check(options)
        loop = asyncio.get_running_loop()
        run = _Run(asyncio.Queue(), threading.Event())

        def post(kind: str, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(run.events.put_nowait, (kind, value))
            except RuntimeError:  # the event loop is gone: nobody is listening any more
                run.stop.set()

        def sink(text: str) -> bool:
            if relay_text:
                post("text", text)
            return run.stop.is_set()

        def work() -> None:
            try:
                post("done", self.engine.generate(list(messages), tier=tier, on_text=sink, **options))
            except BaseException as error:  # handed to the consumer
                post("error", error)

        threading.Thread(target=work, name="npu-engine-generate", daemon=True).start()
        return run

    async def _relay(self, kind: str, value: Any, run: "_Run") -> AsyncIterator[str | GenerationResult]:
        try:
            while True:
                if kind == "error":
                    raise value
                if kind == "done":
                    self.metrics.answered(value)
                    yield value
                    return
                yield value
                kind, value = await run.events.get()
        finally:
            run.stop.set()


@dataclass(frozen=True)
class _Run:
    """One generation in flight: its events for the event loop, and the flag that stops it."""

    events: "asyncio.Queue[tuple[str, Any]]"
    stop: threading.Event


def mid_stream_message(error: BaseException) -> str:
    """What a stream says when generation fails after it started."""
    if isinstance(error, NpuEngineError):
        return presentable(error)
    return "internal error while generating"
