"""Ollama's API: /api/chat and /api/generate (NDJSON streams by default), /api/tags, /api/ps,
/api/show, /api/version, with Ollama's `options`, `keep_alive` and timing fields."""

import json
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from npu_engine.errors import UnknownModelError
from npu_engine.generation import Message, SamplingOptions
from npu_engine.manifest import Manifest
from npu_engine.pipelines import decoding_and_backend
from npu_engine.request import GenerateRequest, GenerationResult, StreamChunk
from npu_engine.server.access_log import record_of
from npu_engine.server.config import keep_alive_seconds
from npu_engine.server.discovery import (
    OLLAMA_API_VERSION,
    capabilities,
    loaded_context,
    model_info,
    served_context,
)
from npu_engine.server.ollama_prompt import Generate, generate_request
from npu_engine.server.ollama_template import show_parameters, show_template
from npu_engine.server.openai_routes import (
    answered_by,
    engine_headers,
    not_converted_entry,
    planned_headers,
)
from npu_engine.server.schemas import (
    OllamaChatRequest,
    OllamaGenerateRequest,
    OllamaMessage,
    OllamaOptions,
    OllamaShowRequest,
    _OllamaCommon,
)
from npu_engine.server.service import ModelService, Served, mid_stream_message
from npu_engine.server.thinking import ThinkingStream, split_thinking
from npu_engine.server.tool_schemas import (
    ollama_call,
    ollama_calls,
    ollama_format_of,
    tools_of,
    with_calls,
)

log = logging.getLogger("npu_engine.server")
DEFAULT_PREDICT = 512
NS = 1_000_000_000


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _now() -> str:
    return _rfc3339(datetime.now(UTC))


def _sampling(options: OllamaOptions | None) -> SamplingOptions:
    """The engine's sampling options for Ollama's `options` (num_predict 0 or below: the default)."""
    o = options or OllamaOptions()
    predict = o.num_predict if o.num_predict and o.num_predict > 0 else DEFAULT_PREDICT
    return SamplingOptions(
        max_new_tokens=predict,
        temperature=o.temperature if o.temperature is not None else 0.0,
        top_p=o.top_p if o.top_p is not None else 1.0,
        stop=tuple(s for s in (o.stop or []) if s),
        seed=o.seed,
    )


def _timings(result: GenerationResult, started: float, notes: dict[str, Any]) -> dict[str, Any]:
    m = result.metrics
    return {
        "done_reason": "length" if result.finish_reason == "length" else "stop",
        "total_duration": int((time.monotonic() - started) * NS),
        "load_duration": int(m.load_seconds * NS),
        "prompt_eval_count": m.input_tokens,
        "prompt_eval_duration": int(m.ttft_ms * 1_000_000),
        "eval_count": m.output_tokens,
        "eval_duration": int(m.tpot_ms * max(m.output_tokens - 1, 0) * 1_000_000),
        "npu_engine": {**answered_by(result), **notes},
    }


def _details(manifest: Manifest | None) -> dict[str, Any]:
    if manifest is None:
        return {
            "format": "openvino",
            "family": "",
            "families": [],
            "parameter_size": "",
            "quantization_level": "",
        }
    return {
        "parent_model": "",
        "format": "openvino",
        "family": manifest.architecture,
        "families": [manifest.architecture],
        "parameter_size": _parameter_size(manifest.parameters),
        "quantization_level": manifest.recipe.name,
    }


def _parameter_size(parameters: int) -> str:
    """As Ollama writes it: 1.5B, 494.0M, 22.7M."""
    return f"{parameters / 1e9:.1f}B" if parameters >= 1e9 else f"{parameters / 1e6:.1f}M"


def _digest(served: Served) -> str:
    return served.manifest.source.digest.removeprefix("sha256:") if served.manifest else ""


def ollama_router(service: ModelService) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["Ollama"])

    @router.get("/version")
    async def version() -> dict[str, str]:
        return {"version": OLLAMA_API_VERSION, "npu_engine": service.version}

    @router.get("/tags")
    async def tags() -> dict[str, Any]:
        return _tags(service)

    @router.get("/ps")
    async def ps() -> dict[str, Any]:
        return _ps(service)

    @router.post("/show")
    async def show(body: OllamaShowRequest) -> dict[str, Any]:
        return _show(service, body)

    @router.post("/chat")
    async def chat(body: OllamaChatRequest, request: Request) -> Any:
        messages = [_message(m) for m in body.messages]
        served = service.tier_of(body.model)
        asked = Generate(GenerateRequest(tuple(messages), served.tier, _sampling(body.options)))
        return await _respond(service, body, served, asked if messages else None, request, chat=True)

    @router.post("/generate")
    async def generate(body: OllamaGenerateRequest, request: Request) -> Any:
        served = service.tier_of(body.model)
        asked = generate_request(body, served.tier, _sampling(body.options))
        return await _respond(service, body, served, asked, request, chat=False)

    return router


def _message(message: OllamaMessage) -> Message:
    """A chat message as the engine carries it: with an assistant's earlier calls and the tool
    a result comes from."""
    found: Message = {"role": message.role, "content": message.content}
    if message.tool_name is not None:
        found["name"] = message.tool_name
    return with_calls(found, ollama_calls(message.tool_calls or []))


def _shaped(asked: GenerateRequest, body: _OllamaCommon) -> GenerateRequest:
    """The request with the body's `tools` (chat), `format` and context cap (`options.num_ctx`)."""
    tools = tools_of(body.tools) if isinstance(body, OllamaChatRequest) else ()
    shape = (
        ollama_format_of(body.format) if isinstance(body, OllamaChatRequest | OllamaGenerateRequest) else None
    )
    limit = body.options.num_ctx if body.options else None
    return replace(
        asked,
        tools=tools,
        response_format=shape,
        context_limit=limit,
        receipt=body.receipt_asked(),
        decoding=body.decoding_asked(),
    )


def _assistant(result: GenerationResult) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": result.text}
    if result.tool_calls:
        message["tool_calls"] = [ollama_call(call) for call in result.tool_calls]
    return message


def _tags(service: ModelService) -> dict[str, Any]:
    answering, waiting = service.listed()
    return {
        "models": [
            {
                "name": s.name,
                "model": s.name,
                "modified_at": s.manifest.created if s.manifest else _now(),
                "size": s.manifest.size if s.manifest else 0,
                "digest": _digest(s),
                "details": _details(s.manifest),
            }
            for s in answering
        ],
        # Beside the list clients read: what is named but cannot answer until converted.
        "not_converted": [not_converted_entry(service, s) for s in waiting],
    }


def _ps(service: ModelService) -> dict[str, Any]:
    """The loaded models, as Ollama's /api/ps lists them (expiry from their keep-alive)."""
    manifests = {m.name: m for m in service.engine.converted()}
    pipelines: dict[str, list[dict[str, str]]] = {}
    for key in service.engine.loaded():
        decoding, backend = decoding_and_backend(key)
        pipelines.setdefault(key[0], []).append({"device": key[1], "decoding": decoding, "backend": backend})
    # One entry per model, as Ollama lists them; a model loaded for two decoding modes or both CPU
    # backends names every pipeline it holds (the first one's fields stay at the top level).
    running = []
    for name, held in pipelines.items():
        manifest = manifests.get(name)
        keep = service.engine.keep_alive_of(name)
        expires = (
            "0001-01-01T00:00:00Z"
            if math.isinf(keep)
            else _rfc3339(datetime.now(UTC) + timedelta(seconds=keep))
        )
        device = held[0]["device"]
        running.append(
            {
                "name": name,
                "model": name,
                "size": manifest.size if manifest else 0,
                "digest": manifest.source.digest.removeprefix("sha256:") if manifest else "",
                "details": _details(manifest),
                "expires_at": expires,
                "size_vram": 0,
                "context_length": loaded_context(service.engine, manifest.model, device) if manifest else 0,
                **held[0],
                "pipelines": held,
            }
        )
    return {"models": running}


def _show(service: ModelService, body: OllamaShowRequest) -> dict[str, Any]:
    name = body.model or body.name
    if not name:
        raise UnknownModelError("model is required")
    served = service.resolve(name)
    m = served.manifest
    family = service.engine.family(served.tier)
    return {
        "modelfile": "",
        "parameters": show_parameters(family, served_context(service.engine, served)),
        "template": show_template(family),
        "details": _details(m),
        "model_info": model_info(service.engine, served),
        "capabilities": capabilities(service.engine, served),
        "modified_at": m.created if m else _now(),
    }


async def _respond(
    service: ModelService,
    body: _OllamaCommon,
    served: Served,
    asked: Generate | None,
    request: Request,
    chat: bool,
) -> Any:
    keep = keep_alive_seconds(body.keep_alive)
    started = time.monotonic()
    if asked is None:  # Ollama: an empty request loads the model, or unloads it with keep_alive 0
        return _load_or_unload(service, served, keep, chat)
    asked = replace(asked, request=_shaped(asked.request, body))
    notes = _notes(service, body, asked.request)
    if not body.stream:
        # keep_alive takes effect whether the answer comes or the request is refused.
        try:
            prepared = service.prepare(asked.request)
            result = await service.answer(prepared, request.is_disconnected, record_of(request.scope))
        finally:
            _apply_keep_alive(service, served, keep)
        timings = _timings(result, started, notes)
        payload = {"model": body.model, "created_at": _now(), "done": True, **timings}
        if chat:
            payload["message"] = _assistant(result)
        else:
            payload["response"] = result.text
            _add_context(payload, asked, result.text)
        if _thinks(service, body, service.engine.tier(result.tier).model):
            _with_thinking(payload, *split_thinking(result.text))
        return JSONResponse(payload, headers=engine_headers(result.tier, result.model, result.device))
    prepared = service.prepare(asked.request)
    pieces = await service.stream(prepared, record_of(request.scope))
    thinking = ThinkingStream() if _thinks(service, body, prepared.job.tier.model) else None
    generated = asked if not chat else None
    lines = _ndjson(service, served, keep, pieces, body.model, generated, started, notes, thinking)
    return StreamingResponse(
        lines, media_type="application/x-ndjson", headers=planned_headers(served, prepared)
    )


def _thinks(service: ModelService, body: _OllamaCommon, model: str) -> bool:
    """Whether the answer's <think> section is given apart, as `thinking`: asked for, by a model
    that reasons."""
    return bool(body.think) and service.engine.catalog_model(model).family.reasoning


def _with_thinking(payload: dict[str, Any], thinking: str, answer: str) -> None:
    """Ollama's shape: `message.thinking` on /api/chat, `thinking` on /api/generate."""
    if "message" in payload:
        payload["message"] = {**payload["message"], "content": answer, "thinking": thinking}
    else:
        payload["response"] = answer
        payload["thinking"] = thinking


def _notes(service: ModelService, body: _OllamaCommon, asked: GenerateRequest) -> dict[str, Any]:
    """What the answer's `npu_engine` field says of the options taken: the context cap `num_ctx`
    set, and that `think` was ignored where the tier's model does not reason (where it does, its
    <think> section is the answer's `thinking`)."""
    notes: dict[str, Any] = {}
    if asked.context_limit is not None:  # the cap that applies: never above the tier's own context
        tier_context = served_context(service.engine, Served(asked.tier, asked.tier, None))
        notes["num_ctx"] = min(asked.context_limit, tier_context)
    if body.think:
        tiers = service.engine.tiers()
        models = [tiers[asked.tier].model] if asked.tier in tiers else [t.model for t in tiers.values()]
        reasoning = {m: service.engine.catalog_model(m).family.reasoning for m in models}
        plain = sorted(m for m, reasons in reasoning.items() if not reasons)
        if plain:
            notes["think"] = f"ignored: {', '.join(plain)} does not reason"
    return notes


def _add_context(payload: dict[str, Any], generated: Generate, answer: str) -> None:
    """A generate chat turn's answer carries its `context` (see ollama_prompt.py)."""
    context = generated.context(answer)
    if context is not None:
        payload["context"] = context


def _load_or_unload(service: ModelService, served: Served, keep: float | None, chat: bool) -> JSONResponse:
    _apply_keep_alive(service, served, keep)
    reason = "unload" if keep == 0 else "load"
    payload: dict[str, Any] = {
        "model": served.name,
        "created_at": _now(),
        "done": True,
        "done_reason": reason,
    }
    payload["message" if chat else "response"] = {"role": "assistant", "content": ""} if chat else ""
    return JSONResponse(payload)


def _apply_keep_alive(service: ModelService, served: Served, keep: float | None) -> None:
    """Ollama's keep_alive for every conversion of the tier's model: 0 unloads them now (once idle)."""
    if keep is None or served.tier == "auto":
        return
    service.engine.keep_alive(served.tier, keep)


async def _ndjson(
    service: ModelService,
    served: Served,
    keep: float | None,
    pieces: AsyncIterator[StreamChunk],
    model: str,
    generated: Generate | None,
    started: float,
    notes: dict[str, Any],
    thinking: ThinkingStream | None = None,
) -> AsyncIterator[str]:
    """The NDJSON lines of a chat's answer, or of a generate's (`generated`: its request)."""
    chat = generated is None
    answer: list[str] = []

    def line_of(text: str, thought: str = "") -> str:
        line: dict[str, Any] = {"model": model, "created_at": _now(), "done": False}
        if chat:
            line["message"] = {"role": "assistant", "content": text}
        else:
            line["response"] = text
        if thought:
            _with_thinking(line, thought, text)
        return json.dumps(line) + "\n"

    try:
        async for piece in pieces:
            if piece.result is None:
                answer.append(piece.text)
                if thinking is None:
                    yield line_of(piece.text)
                elif any(split := thinking.feed(piece.text)):
                    yield line_of(split[1], split[0])
                continue
            if thinking is not None and any(rest := thinking.finish()):
                yield line_of(rest[1], rest[0])
            if chat and piece.result.tool_calls:  # as Ollama streams them: one line before the last
                calls = [ollama_call(call) for call in piece.result.tool_calls]
                line = {"model": model, "created_at": _now(), "done": False}
                line["message"] = {"role": "assistant", "content": "", "tool_calls": calls}
                yield json.dumps(line) + "\n"
            final: dict[str, Any] = {
                "model": model,
                "created_at": _now(),
                "done": True,
                **_timings(piece.result, started, notes),
            }
            if generated is None:
                final["message"] = {"role": "assistant", "content": ""}
            else:
                final["response"] = ""
                _add_context(final, generated, "".join(answer))
            yield json.dumps(final) + "\n"
    except Exception as error:  # after the status line: the stream itself carries the error
        log.exception("stream failed")
        yield json.dumps({"error": mid_stream_message(error)}) + "\n"
    finally:
        _apply_keep_alive(service, served, keep)
