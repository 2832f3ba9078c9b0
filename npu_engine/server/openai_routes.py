"""OpenAI's API: /v1/chat/completions, /v1/completions (server-sent events when streaming), /v1/models."""

import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from npu_engine.engine import Prepared
from npu_engine.generation import Message, SamplingOptions
from npu_engine.request import GenerateRequest, GenerationResult, StreamChunk
from npu_engine.server.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    _OpenAISampling,
    openai_error,
)
from npu_engine.server.service import ModelService, Served, mid_stream_message

DEFAULT_MAX_TOKENS = 512
log = logging.getLogger("npu_engine.server")


def engine_headers(tier: str, model: str, device: str) -> dict[str, str]:
    """Which tier, model and device answered (for streams: the tier and where it is planned to run)."""
    return {"X-NPU-Engine-Tier": tier, "X-NPU-Engine-Model": model, "X-NPU-Engine-Device": device}


def answered_by(result: GenerationResult) -> dict[str, Any]:
    return {
        "tier": result.tier,
        "model": result.model,
        "device": result.device,
        "decoding": result.decoding,
        "route": result.route.task if result.route else None,
    }


def _request(
    body: _OpenAISampling, messages: list[Message], tier: str, default_tokens: int
) -> GenerateRequest:
    """The engine's request for an OpenAI body: unset sampling fields take OpenAI's defaults
    (greedy here: temperature 0)."""
    options = SamplingOptions(
        max_new_tokens=body.max_completion_tokens or body.max_tokens or default_tokens,
        temperature=body.temperature if body.temperature is not None else 0.0,
        top_p=body.top_p if body.top_p is not None else 1.0,
        stop=tuple(body.stops()),
        seed=body.seed,
    )
    return GenerateRequest(tuple(messages), tier, options)


def _usage(result: GenerationResult) -> dict[str, int]:
    m = result.metrics
    return {
        "prompt_tokens": m.input_tokens,
        "completion_tokens": m.output_tokens,
        "total_tokens": m.input_tokens + m.output_tokens,
    }


def _finish(result: GenerationResult) -> str:
    return "length" if result.finish_reason == "length" else "stop"


def openai_router(service: ModelService) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["OpenAI"])

    @router.get("/models")
    async def models() -> dict[str, Any]:
        now = int(time.time())
        return {
            "object": "list",
            "data": [
                {"id": s.name, "object": "model", "created": now, "owned_by": "npu-engine", "tier": s.tier}
                for s in service.served()
            ],
        }

    @router.post("/chat/completions")
    async def chat(body: ChatCompletionRequest, request: Request) -> Any:
        messages: list[Message] = [{"role": _role(m.role), "content": m.text()} for m in body.messages]
        return await _complete(service, body, messages, request, chat=True)

    @router.post("/completions")
    async def completions(body: CompletionRequest, request: Request) -> Any:
        return await _complete(service, body, [], request, chat=False)

    return router


def _role(role: str) -> str:
    return "system" if role == "developer" else role


async def _complete(
    service: ModelService, body: _OpenAISampling, messages: list[Message], request: Request, chat: bool
) -> Any:
    served = service.tier_of(body.model)
    asked = _request(body, messages, served.tier, DEFAULT_MAX_TOKENS if chat else 16)
    if isinstance(body, CompletionRequest):  # completed as given, or filled in before the suffix
        asked = replace(asked, prompt=body.prompt, suffix=body.suffix or None)
    prepared = service.prepare(asked)
    ident = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
    created = int(time.time())
    if not body.stream:
        result = await service.answer(prepared, request.is_disconnected)
        choice: dict[str, Any] = {"index": 0, "finish_reason": _finish(result), "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": result.text}
        else:
            choice["text"] = result.text
        payload = {
            "id": ident,
            "object": "chat.completion" if chat else "text_completion",
            "created": created,
            "model": body.model,
            "choices": [choice],
            "usage": _usage(result),
            "system_fingerprint": f"npu-engine:{result.device}",
            "npu_engine": answered_by(result),
        }
        return JSONResponse(payload, headers=engine_headers(result.tier, result.model, result.device))
    pieces = await service.stream(prepared)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    events = _sse(pieces, ident, created, body.model, chat, include_usage)
    return StreamingResponse(
        events, media_type="text/event-stream", headers=planned_headers(served, prepared)
    )


def planned_headers(served: Served, prepared: Prepared) -> dict[str, str]:
    """For a stream, sent before the answer: the tier, its model and where it is planned to run."""
    if served.tier == "auto":
        return engine_headers("auto", "", "")
    chain = prepared.chain
    return engine_headers(served.tier, prepared.job.tier.model, chain[0].name if chain else "")


async def _sse(
    pieces: AsyncIterator[StreamChunk],
    ident: str,
    created: int,
    model: str,
    chat: bool,
    include_usage: bool,
) -> AsyncIterator[str]:
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(delta: dict[str, Any] | str, finish: str | None, **extra: Any) -> str:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
        if chat:
            choice["delta"] = delta
        else:
            choice["text"] = delta
        event = {
            "id": ident,
            "object": kind,
            "created": created,
            "model": model,
            "choices": [choice],
            **extra,
        }
        return f"data: {json.dumps(event)}\n\n"

    if chat:
        yield chunk({"role": "assistant", "content": ""}, None)
    try:
        async for piece in pieces:
            if piece.result is None:
                yield chunk({"content": piece.text} if chat else piece.text, None)
                continue
            result = piece.result
            yield chunk({} if chat else "", _finish(result), npu_engine=answered_by(result))
            if include_usage:
                usage_event = {
                    "id": ident,
                    "object": kind,
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": _usage(result),
                }
                yield f"data: {json.dumps(usage_event)}\n\n"
    except Exception as error:  # after the status line: the stream itself carries the error
        log.exception("stream failed")
        yield f"data: {json.dumps(openai_error(mid_stream_message(error), 'server_error'))}\n\n"
    yield "data: [DONE]\n\n"
