"""What the HTTP routes ask of the engine: which tier a `model` name means, an answer, or a stream
of one that stops when the client goes away. Both protocols' routes share it."""

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from npu_engine.bridge import Run
from npu_engine.catalog import EMBED_TIER, TIERS, TierSpec
from npu_engine.embedding import EmbeddingResult
from npu_engine.engine import Engine, Prepared
from npu_engine.errors import (
    ContextLengthError,
    EngineBusyError,
    GenerationError,
    NpuEngineError,
    ReceiptError,
    UnknownModelError,
    UserInputError,
    presentable,
)
from npu_engine.manifest import Manifest
from npu_engine.request import GenerateRequest, GenerationResult, StreamChunk
from npu_engine.server.access_log import AccessRecord
from npu_engine.server.metrics import Metrics

AUTO = "auto"
RETRY_AFTER_SECONDS = 2
DISCONNECT_POLL_SECONDS = 0.25  # how often a non-streamed answer checks that its client is there
T = TypeVar("T")


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
    if isinstance(error, ReceiptError):
        # The answer was written but could not be signed (the store's key cannot be written).
        return HttpFailure(500, message, "receipt_failed", {})
    raise error


class ModelService:
    def __init__(self, engine: Engine, metrics: Metrics, version: str, max_new_tokens: int) -> None:
        self.engine = engine
        self.metrics = metrics
        self.version = version
        self.max_new_tokens = max_new_tokens

    def _check(self, request: GenerateRequest) -> None:
        asked = request.options.max_new_tokens
        if asked > self.max_new_tokens:
            raise UserInputError(f"max_tokens {asked} is over this server's limit of {self.max_new_tokens}")

    def served(self) -> list[Served]:
        """Every name a client may use: the tiers, `auto`, and converted models a tier runs."""
        manifests = self.engine.converted()
        tiers = {**self.engine.tiers(), **self.engine.embedding_tiers()}
        names = [Served(AUTO, AUTO, None)]
        for tier, spec in tiers.items():
            converted = [m for m in manifests if m.model == spec.model]
            names.append(Served(tier, tier, converted[0] if converted else None))
        for manifest in manifests:
            serving = _tier_for(tiers, manifest.model)
            if serving is not None:
                names.append(Served(manifest.name, serving, manifest))
        return names

    def listed(self) -> tuple[list[Served], list[Served]]:
        """The names that can answer now (a converted model, a tier with its model converted here
        or on a server, `auto` when any chat tier can), and the tiers that cannot until converted
        (`auto` is never one: it names no model)."""
        ready = self.engine.ready_tiers()
        now: list[Served] = []
        later: list[Served] = []
        for served in self.served():
            if served.tier == AUTO:
                if ready & set(self.engine.tiers()):
                    now.append(served)
                continue  # `auto` names no model to convert: it answers when a chat tier does
            answers = served.name != served.tier or served.tier in ready
            (now if answers else later).append(served)
        return now, later

    def resolve(self, model: str) -> Served:
        name = model.removesuffix(":latest")
        every = self.served()
        for served in every:
            if served.name == name:
                return served
        known = ", ".join(s.name for s in every)
        raise UnknownModelError(f"model {model!r} is not served here (known: {known})")

    def tier_of(self, model: str) -> Served:
        """What a request's `model` names, reading the store only when it names no tier."""
        name = model.removesuffix(":latest")
        if name == AUTO or name in self.engine.tiers() or name in self.engine.embedding_tiers():
            return Served(name, name, None)
        return self.resolve(model)

    def prepare(self, request: GenerateRequest) -> Prepared:
        """The request checked against this server's limits, routed and planned (see Engine.prepare)."""
        self._check(request)
        return self.engine.prepare(request)

    async def answer(
        self,
        prepared: Prepared,
        disconnected: Callable[[], Awaitable[bool]] | None = None,
        record: AccessRecord | None = None,
    ) -> GenerationResult:
        """The whole answer. Generation starts at once on its own thread, so the request meets the
        model's bounded queue now (EngineBusyError past it), never a thread pool's hidden queue.
        While it runs, `disconnected` (the request's `is_disconnected`) is polled: once the client
        has gone, generation stops within a token and the cancelled result is returned. `record`,
        the request's access-log record, is told the prompt and who answered."""
        if record is not None:
            record.asked(prepared.job.request)
        events, run = self._start(prepared, relay_text=False)
        try:
            while True:
                try:
                    item = await asyncio.wait_for(events.get(), DISCONNECT_POLL_SECONDS)
                except TimeoutError:
                    if not run.stop.is_set() and disconnected is not None and await disconnected():
                        run.stop.set()
                    continue
                if isinstance(item, BaseException):
                    raise item
                if item.result is not None:
                    self._answered(item.result, record)
                    return item.result
        finally:
            run.stop.set()  # also when this task is cancelled: nobody waits for the answer

    async def embed(
        self,
        model: str,
        served: Served,
        texts: Sequence[str],
        truncate: bool = True,
        record: AccessRecord | None = None,
    ) -> EmbeddingResult:
        """The vectors of `texts` from the embedding model `model` names (UserInputError naming the
        field when it names a chat model). The work runs on its own thread, as generation does, so
        the request meets the model's bounded queue, never a thread pool's hidden one. `record` is
        told who made them."""
        if served.tier not in self.engine.embedding_tiers():  # `auto` too: it routes to chat tiers
            raise UserInputError(
                f"invalid field 'model': {model!r} is a chat model and makes no embeddings "
                f"(the embedding model here is {EMBED_TIER!r})"
            )
        result = await _on_own_thread(lambda: self.engine.embed(texts, served.tier, truncate=truncate))
        if record is not None:
            record.embedded(result)
        return result

    async def stream(
        self, prepared: Prepared, record: AccessRecord | None = None
    ) -> AsyncIterator[StreamChunk]:
        """Chunks of text, then the one holding the result. Starts generating at once; raises the
        engine's error before the first chunk (so a route can still answer with an error status).
        When the consumer stops (the client disconnected), generation stops within a token.
        `record`, the request's access-log record, is told the prompt and who answered."""
        if record is not None:
            record.asked(prepared.job.request)
        events, run = self._start(prepared, relay_text=True)
        first = await events.get()
        if isinstance(first, BaseException):
            raise first
        return self._relay(first, events, run, record)

    def _answered(self, result: GenerationResult, record: AccessRecord | None) -> None:
        self.metrics.answered(result)
        if record is not None:
            record.answered(result)

    def _start(
        self, prepared: Prepared, relay_text: bool
    ) -> "tuple[asyncio.Queue[StreamChunk | BaseException], Run]":
        """The engine's run on the bridge's thread, its chunks (text only when `relay_text`) posted
        back to this event loop."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[StreamChunk | BaseException] = asyncio.Queue()
        stop = threading.Event()

        def post(item: StreamChunk | BaseException) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, item)
            except RuntimeError:  # the event loop is gone: nobody is listening any more
                stop.set()

        run = Run(lambda sink: self.engine.run(prepared, sink), post, relay_text, stop)
        return events, run

    async def _relay(
        self,
        item: StreamChunk,
        events: "asyncio.Queue[StreamChunk | BaseException]",
        run: Run,
        record: AccessRecord | None,
    ) -> AsyncIterator[StreamChunk]:
        try:
            while True:
                if item.result is not None:
                    self._answered(item.result, record)
                    yield item
                    return
                yield item
                following = await events.get()
                if isinstance(following, BaseException):
                    raise following
                item = following
        finally:
            run.stop.set()


async def _on_own_thread(work: Callable[[], T]) -> T:
    """`work()` on a thread of its own, awaited without blocking the event loop."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(value: T | None, error: BaseException | None) -> None:
        if done.cancelled():  # the client went away: nobody waits for the answer
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(value)  # type: ignore[arg-type]

    def run() -> None:
        try:
            value = work()
        except BaseException as error:  # handed to the awaiting task, which raises it
            outcome: tuple[T | None, BaseException | None] = (None, error)
        else:
            outcome = (value, None)
        with contextlib.suppress(RuntimeError):  # the event loop is gone: nobody is listening
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name="npu-engine-work", daemon=True).start()
    return await done


# The order in which tiers claim a converted model that several serve: code first (the tiny and
# embedded profiles' fast and code tiers share one model), then the other chat tiers, then embed.
_CLAIMING = ("code", *(tier for tier in TIERS if tier != "code"), EMBED_TIER)


def _tier_for(tiers: dict[str, TierSpec], model: str) -> str | None:
    """The tier a converted model of `model` is served under: the first of code, fast, large,
    review, embed."""
    return next((tier for tier in _CLAIMING if tier in tiers and tiers[tier].model == model), None)


def mid_stream_message(error: BaseException) -> str:
    """What a stream says when generation fails after it started."""
    if isinstance(error, NpuEngineError):
        return presentable(error)
    return "internal error while generating"
