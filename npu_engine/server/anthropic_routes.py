"""Anthropic's Messages API: `POST /v1/messages`, whole or streamed with Anthropic's event sequence
(message_start, content_block_start, ping, content_block_delta, content_block_stop, message_delta,
message_stop), so that tools speaking it (Claude Code with `ANTHROPIC_BASE_URL`) use the tiers.

`model` is a tier, `auto`, or a converted model a tier serves; a `claude-…` name this server does
not serve is answered by `auto` (the router picks the tier), and the answer's `npu_engine` field
says so. Sampling is greedy unless `temperature` is given, as on the other routes. `max_tokens` is
an upper bound, capped at the server's own limit (ServerConfig.max_new_tokens, 4096; the OpenAI
routes refuse more)."""

import json
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from npu_engine.errors import UnknownModelError
from npu_engine.generation import SamplingOptions
from npu_engine.request import GenerateRequest, GenerationResult, StreamChunk
from npu_engine.server.access_log import record_of
from npu_engine.server.anthropic_messages import (
    StopScanner,
    arguments_json,
    chat_messages,
    content_blocks,
    stop_reason,
    tool_choice_of,
    tool_use,
    tools_of,
)
from npu_engine.server.anthropic_schemas import MessagesRequest
from npu_engine.server.openai_routes import answered_by, engine_headers, planned_headers
from npu_engine.server.schemas import anthropic_error
from npu_engine.server.service import AUTO, ModelService, Served, mid_stream_message

log = logging.getLogger("npu_engine.server")


def anthropic_router(service: ModelService) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["Anthropic"])

    @router.post("/messages")
    async def messages(body: MessagesRequest, request: Request) -> Any:
        served, mapped = _served(service, body.model)
        stops = tuple(s for s in body.stop_sequences or () if s)
        asked = GenerateRequest(
            tuple(chat_messages(body)),
            served.tier,
            SamplingOptions(
                max_new_tokens=min(body.max_tokens, service.max_new_tokens),
                temperature=body.temperature if body.temperature is not None else 0.0,
                top_p=body.top_p if body.top_p is not None else 1.0,
                stop=stops,
                include_stop=True,
            ),
            tools=tools_of(body.tools),
            tool_choice=tool_choice_of(body.tool_choice) if body.tools else "auto",
            parallel_tool_calls=not (body.tool_choice and body.tool_choice.disable_parallel_tool_use),
            receipt=body.receipt_asked(),
            decoding=body.decoding_asked(),
        )
        prepared = service.prepare(asked)
        ident = "msg_" + secrets.token_hex(12)
        if not body.stream:
            result = await service.answer(prepared, request.is_disconnected, record_of(request.scope))
            scanner = StopScanner(stops)
            text = scanner.feed(result.text) + scanner.finish()
            payload = {
                "id": ident,
                "type": "message",
                "role": "assistant",
                "model": body.model,
                "content": content_blocks(text, result.tool_calls),
                "stop_reason": stop_reason(result.finish_reason, bool(result.tool_calls), scanner.found),
                "stop_sequence": scanner.found,
                "usage": _usage(result),
                "npu_engine": _answered_by(result, mapped),
            }
            return JSONResponse(payload, headers=engine_headers(result.tier, result.model, result.device))
        pieces = await service.stream(prepared, record_of(request.scope))
        events = _events(pieces, ident, body.model, StopScanner(stops), mapped)
        return StreamingResponse(
            events, media_type="text/event-stream", headers=planned_headers(served, prepared)
        )

    return router


def _served(service: ModelService, model: str) -> tuple[Served, str | None]:
    """What `model` names, and the `claude-…` name it stands in for when it is `auto` for one."""
    try:
        return service.tier_of(model), None
    except UnknownModelError:
        if model.startswith("claude-"):
            return Served(AUTO, AUTO, None), model
        raise


def _answered_by(result: GenerationResult, mapped: str | None) -> dict[str, Any]:
    found = answered_by(result)
    if mapped is not None:
        found["model_asked"] = f"{mapped} is not served here: answered by tier auto"
    return found


def _usage(result: GenerationResult) -> dict[str, int]:
    return {"input_tokens": result.metrics.input_tokens, "output_tokens": result.metrics.output_tokens}


def _event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"


async def _events(
    pieces: AsyncIterator[StreamChunk], ident: str, model: str, scanner: StopScanner, mapped: str | None
) -> AsyncIterator[str]:
    """Anthropic's stream: a text block opened by the first text, a tool_use block per call (its
    arguments in one input_json_delta), the stop reason and usage in message_delta."""
    message: dict[str, Any] = {
        "id": ident,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},  # counted once the answer is over
    }
    yield _event("message_start", {"message": message})
    index = -1  # the open block's
    pinged = False

    def start(block: dict[str, Any]) -> list[str]:
        nonlocal index, pinged
        index += 1
        sent = [_event("content_block_start", {"index": index, "content_block": block})]
        if not pinged:
            pinged = True
            sent.append(_event("ping", {}))
        return sent

    def text_delta(text: str) -> str:
        return _event("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": text}})

    text_open = False
    try:
        async for piece in pieces:
            if piece.result is None:
                text = scanner.feed(piece.text)
                if text:
                    if not text_open:
                        text_open = True
                        for line in start({"type": "text", "text": ""}):
                            yield line
                    yield text_delta(text)
                continue
            result = piece.result
            rest = scanner.finish()
            if rest or (not text_open and not result.tool_calls):
                if not text_open:
                    text_open = True
                    for line in start({"type": "text", "text": ""}):
                        yield line
                if rest:
                    yield text_delta(rest)
            if text_open:
                yield _event("content_block_stop", {"index": index})
            for call in result.tool_calls:
                for line in start(tool_use(call, with_input=False)):
                    yield line
                delta = {"type": "input_json_delta", "partial_json": arguments_json(call)}
                yield _event("content_block_delta", {"index": index, "delta": delta})
                yield _event("content_block_stop", {"index": index})
            reason = stop_reason(result.finish_reason, bool(result.tool_calls), scanner.found)
            yield _event(
                "message_delta",
                {
                    "delta": {"stop_reason": reason, "stop_sequence": scanner.found},
                    "usage": _usage(result),
                    "npu_engine": _answered_by(result, mapped),
                },
            )
            yield _event("message_stop", {})
    except Exception as error:  # after the status line: the stream itself carries the error
        log.exception("stream failed")
        failure = anthropic_error(mid_stream_message(error), "server_error")
        yield f"event: error\ndata: {json.dumps(failure)}\n\n"
