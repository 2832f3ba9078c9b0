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
from npu_engine.errors import UserInputError
from npu_engine.generation import MAX_SEED, Message, SamplingOptions
from npu_engine.request import GenerateRequest, GenerationResult, StreamChunk
from npu_engine.router import Route
from npu_engine.server.access_log import record_of
from npu_engine.server.discovery import served_context
from npu_engine.server.schemas import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    _OpenAISampling,
    openai_error,
)
from npu_engine.server.service import ModelService, Served, mid_stream_message
from npu_engine.server.tool_schemas import (
    openai_call,
    openai_calls,
    response_format_of,
    tool_choice_of,
    tools_of,
    with_calls,
)

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
        "backend": result.backend,
        "decoding": result.decoding,
        "route": result.route.task if result.route else None,
        "routing": _routing(result.route) if result.route else None,
        "metrics": {
            "ttft_ms": round(result.metrics.ttft_ms, 1),
            "tokens_per_second": round(result.metrics.tokens_per_second, 2),
            "output_tokens": result.metrics.output_tokens,
            "load_seconds": round(result.metrics.load_seconds, 2),
        },
        "fallback": [{"target": step.target, "reason": step.reason} for step in result.fallback],
        **({"receipt": result.receipt.envelope} if result.receipt is not None else {}),
    }


def _routing(route: Route) -> dict[str, Any]:
    """The router's choice for tier `auto`: the task, the tier, why, and how sure it was."""
    return {
        "task": route.task,
        "tier": route.tier,
        "strategy": route.strategy,
        "confidence": round(route.confidence, 3),
        "why": list(route.signals),
        "stage": route.stage,
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
    return GenerateRequest(
        tuple(messages), tier, options, body.decoding_asked(), receipt=body.receipt_asked()
    )


def _usage(result: GenerationResult, choices: list[GenerationResult] | None = None) -> dict[str, Any]:
    """OpenAI's usage: the prompt counted once (with the part read back from the KV cache), the
    completion tokens of every choice."""
    m = result.metrics
    output = sum(c.metrics.output_tokens for c in choices) if choices else m.output_tokens
    return {
        "prompt_tokens": m.input_tokens,
        "completion_tokens": output,
        "total_tokens": m.input_tokens + output,
        "prompt_tokens_details": {"cached_tokens": m.cached_tokens},
    }


def _choice(result: GenerationResult, index: int, chat: bool) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": index, "finish_reason": _finish(result), "logprobs": None}
    if chat:
        choice["message"] = _assistant(result)
    else:
        choice["text"] = result.text
    return choice


def _check_unserved(body: _OpenAISampling) -> None:
    """Refuse, naming the field, what this server cannot answer rather than ignore it."""
    if body.n > 1 and body.stream:
        raise UserInputError("n > 1 is served only without stream (each choice is its own generation)")
    if body.logprobs or body.top_logprobs:
        raise UserInputError(
            "logprobs are not available: OpenVINO GenAI 2026.4's LLMPipeline, which answers here, "
            "returns no per-token log probabilities"
        )


def _more_choices(asked: GenerateRequest, n: int) -> list[GenerateRequest]:
    """The requests for choices 1 to n - 1: each its own generation, the same when greedy; when
    sampling, seeded seed + i (from a random seed when none was given), so that they differ."""
    options = asked.options
    if options.temperature == 0:
        return [asked] * (n - 1)
    base = options.seed if options.seed is not None else secrets.randbelow(2**62)
    return [replace(asked, options=replace(options, seed=(base + i) % (MAX_SEED + 1))) for i in range(1, n)]


def _finish(result: GenerationResult) -> str:
    if result.tool_calls:
        return "tool_calls"
    return "length" if result.finish_reason == "length" else "stop"


def _with_tools(asked: GenerateRequest, body: ChatCompletionRequest) -> GenerateRequest:
    """The request with the body's tools, tool_choice, parallel_tool_calls and response_format."""
    return replace(
        asked,
        tools=tools_of(body.tools),
        tool_choice=tool_choice_of(body.tool_choice),
        parallel_tool_calls=body.parallel_tool_calls is not False,
        response_format=response_format_of(body.response_format),
    )


def _message(index: int, message: ChatMessage) -> Message:
    """A chat message as the engine carries it: with an assistant's earlier calls (arguments as
    objects) and a tool result's call id."""
    found: Message = {"role": _role(message.role), "content": message.text()}
    if message.tool_call_id is not None:
        found["tool_call_id"] = message.tool_call_id
    return with_calls(found, openai_calls(index, message.tool_calls or []))


def _assistant(result: GenerationResult) -> dict[str, Any]:
    if not result.tool_calls:
        return {"role": "assistant", "content": result.text}
    return {
        "role": "assistant",
        "content": result.text or None,
        "tool_calls": [openai_call(call) for call in result.tool_calls],
    }


def openai_router(service: ModelService) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["OpenAI"])

    @router.get("/models")
    async def models() -> dict[str, Any]:
        now = int(time.time())
        answering, waiting = service.listed()
        return {
            "object": "list",
            "data": [_model_entry(service, s, now) for s in answering],
            # Beside the list clients read: what is named but cannot answer until converted.
            "not_converted": [not_converted_entry(service, s) for s in waiting],
        }

    @router.get("/models/{model}")
    async def model(model: str) -> dict[str, Any]:
        return _model_entry(service, service.resolve(model), int(time.time()))

    @router.post("/chat/completions")
    async def chat(body: ChatCompletionRequest, request: Request) -> Any:
        messages = [_message(index, m) for index, m in enumerate(body.messages)]
        return await _complete(service, body, messages, request, chat=True)

    @router.post("/completions")
    async def completions(body: CompletionRequest, request: Request) -> Any:
        return await _complete(service, body, [], request, chat=False)

    return router


def _model_entry(service: ModelService, served: Served, created: int) -> dict[str, Any]:
    """A /v1/models entry with the context the name accepts, under the names clients read:
    `context_length` (LM Studio, OpenRouter) and `max_model_len` (vLLM)."""
    context = served_context(service.engine, served)
    return {
        "id": served.name,
        "object": "model",
        "created": created,
        "owned_by": "npu-engine",
        "tier": served.tier,
        "context_length": context,
        "max_model_len": context,
    }


def not_converted_entry(service: ModelService, served: Served) -> dict[str, str | bool]:
    """A tier that cannot answer until its model is converted, and the command that converts it."""
    command = service.engine.tier_command(served.tier)
    return {
        "id": served.name,
        "tier": served.tier,
        "model": service.engine.tier(served.tier).model,
        "convert": command.command,
        "source": command.source,
        "needs_model_hub": command.needs_hub,
    }


def _role(role: str) -> str:
    return "system" if role == "developer" else role


async def _complete(
    service: ModelService, body: _OpenAISampling, messages: list[Message], request: Request, chat: bool
) -> Any:
    served = service.tier_of(body.model)
    _check_unserved(body)
    asked = _request(body, messages, served.tier, DEFAULT_MAX_TOKENS if chat else 16)
    if isinstance(body, ChatCompletionRequest):
        asked = _with_tools(asked, body)
    if isinstance(body, CompletionRequest):  # completed as given, or filled in before the suffix
        asked = replace(asked, prompt=body.prompt, suffix=body.suffix or None)
    prepared = service.prepare(asked)
    ident = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
    created = int(time.time())
    if not body.stream:
        record = record_of(request.scope)
        result = await service.answer(prepared, request.is_disconnected, record)
        results = [result]
        for more in _more_choices(asked, body.n):
            results.append(await service.answer(service.prepare(more), request.is_disconnected, record))
        payload = {
            "id": ident,
            "object": "chat.completion" if chat else "text_completion",
            "created": created,
            "model": body.model,
            "choices": [_choice(one, index, chat) for index, one in enumerate(results)],
            "usage": _usage(result, results),
            "system_fingerprint": f"npu-engine:{result.device}",
            "npu_engine": answered_by(result),
        }
        return JSONResponse(payload, headers=engine_headers(result.tier, result.model, result.device))
    pieces = await service.stream(prepared, record_of(request.scope))
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
            for index, call in enumerate(result.tool_calls):
                # OpenAI's shape: the call's id, type and name first, then its arguments.
                opened = {**openai_call(call, index), "function": {"name": call.name, "arguments": ""}}
                yield chunk({"tool_calls": [opened]}, None)
                arguments = openai_call(call)["function"]["arguments"]
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}, None)
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
