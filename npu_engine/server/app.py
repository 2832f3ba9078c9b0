"""`create_app(engine, config)`: the FastAPI application behind `npu-engine serve`. It holds the
one Engine it is given; nothing is global (its metrics have a registry of their own). Errors
answer in the protocol of the route (OpenAI's shape under /v1, Anthropic's under /v1/messages,
Ollama's elsewhere), never with a stack trace or a file path."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from npu_engine.code_checks import CodeChecker
from npu_engine.engine import Engine
from npu_engine.errors import NpuEngineError
from npu_engine.pipelines import PipelineKey, decoding_and_backend
from npu_engine.server.access_log import ACCESS_LOGGER, AccessLog
from npu_engine.server.anthropic_routes import anthropic_router
from npu_engine.server.config import LOCAL_ORIGINS, ServerConfig
from npu_engine.server.embedding_routes import embedding_routers
from npu_engine.server.engine_routes import engine_router
from npu_engine.server.guard import Guard
from npu_engine.server.metrics import EngineGauges, Loaded, Metrics, route_label
from npu_engine.server.ollama_routes import ollama_router
from npu_engine.server.openai_routes import openai_router
from npu_engine.server.page_routes import PAGE_PREFIX, page_files, page_router
from npu_engine.server.schemas import error_payload
from npu_engine.server.service import ModelService, http_failure

log = logging.getLogger("npu_engine.server")


def _error(
    request: Request, status: int, message: str, kind: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_payload(request.url.path, message, kind), status_code=status, headers=headers)


def _field(location: tuple[Any, ...]) -> str:
    parts = [str(p) for p in location if p != "body"]
    return ".".join(parts) or "body"


def create_app(
    engine: Engine, config: ServerConfig | None = None, checker: CodeChecker | None = None
) -> FastAPI:
    """The app over `engine`; `checker` runs the Code Mode page's code checks (default: with the
    checkers installed here)."""
    config = config or ServerConfig()
    metrics = Metrics()
    metrics.watch(EngineGauges(engine.queue_depth, lambda: [_loaded(key) for key in engine.loaded()]))
    service = ModelService(engine, metrics, config.version, config.max_new_tokens)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def unload_idle() -> None:  # keep-alive expiry without waiting for the next request
            while True:
                await asyncio.sleep(config.idle_check_seconds)
                await asyncio.to_thread(engine.unload_idle)

        task = asyncio.create_task(unload_idle())
        try:
            yield
        finally:
            task.cancel()

    app = FastAPI(
        title="npu-engine",
        version=config.version,
        description="OpenAI- and Ollama-compatible API over local coder models on NPU, GPU and CPU.",
        lifespan=lifespan,
        # Served by page_routes from the package's own copy of Swagger UI: FastAPI's pages load
        # theirs from a CDN, and are blank offline. No ReDoc: it would need a copy too.
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service

    _answer_errors_in_protocol(app)

    @app.get("/health", tags=["Server"])
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "version": config.version,
            "profile": engine.profile_name,
            "devices": engine.device_names(),
        }

    @app.get(
        "/metrics",
        tags=["Server"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
    )
    async def prometheus_metrics() -> Response:
        """Requests, answers, tokens, durations, the queue and the loaded models, for Prometheus."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/metrics.json", tags=["Server"])
    async def metrics_json() -> dict[str, Any]:
        """The same counts as JSON, with the queue and the loaded models (the Code Mode page's)."""
        return {
            **metrics.snapshot(),
            "queue_depth": engine.queue_depth(),
            "loaded": [asdict(_loaded(key)) for key in engine.loaded()],
        }

    app.mount(PAGE_PREFIX, page_files(), name="page")
    apis = [
        page_router(),
        engine_router(engine, checker or CodeChecker()),
        openai_router(service),
        anthropic_router(service),
        ollama_router(service),
        *embedding_routers(service),
    ]
    for api in apis:
        app.include_router(api)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(config.allowed_origins),
        allow_origin_regex=None if config.allowed_origins else LOCAL_ORIGINS,
        allow_methods=["GET", "POST", "OPTIONS"],
        # Any header a local page's client sends (the OpenAI JS SDK adds x-stainless-*): the
        # origins allowed are what guards the server, and they stay local unless configured.
        allow_headers=["*"],
        expose_headers=["X-Request-Id", "X-NPU-Engine-Tier", "X-NPU-Engine-Model", "X-NPU-Engine-Device"],
    )
    app.add_middleware(
        Guard,
        config=config,
        metrics=metrics,
        # Included routers show up in app.routes as one entry each: their own routes are listed.
        route_of=lambda scope: route_label([*app.routes, *(r for api in apis for r in api.routes)], scope),
        access=AccessLog(logging.getLogger(ACCESS_LOGGER), config.log_prompts),
    )
    return app


def _answer_errors_in_protocol(app: FastAPI) -> None:
    """Every error as the route's protocol shapes it; a stack trace only in the log."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid request"}
        field = _field(tuple(first.get("loc", ())))
        message = f"invalid field {field!r}: {first.get('msg', 'invalid value')}"
        if first.get("type") == "json_invalid":
            message = "the request body is not valid JSON"
        elif field == "body" and first.get("type") in ("model_attributes_type", "missing"):
            # No body, or one not read as JSON: OpenAI's and Anthropic's routes need its header.
            message = "the request body must be a JSON object, sent with Content-Type: application/json"
        return _error(request, 400, message, "invalid_request_error")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return _error(request, error.status_code, str(error.detail), "invalid_request_error")

    @app.exception_handler(NpuEngineError)
    async def engine_error(request: Request, error: NpuEngineError) -> JSONResponse:
        try:
            failure = http_failure(error)
        except NpuEngineError:
            return await internal(request, error)
        return _error(request, failure.status, failure.message, failure.kind, failure.headers)

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> JSONResponse:
        request_id = request.scope.get("state", {}).get("request_id", "?")
        log.error("request %s failed", request_id, exc_info=error)
        # Sent from outside the guard (Starlette's error middleware), so the id header is set here.
        return _error(
            request,
            500,
            f"internal error (request id {request_id})",
            "server_error",
            {"X-Request-Id": request_id},
        )


def _loaded(key: PipelineKey) -> Loaded:
    decoding, backend = decoding_and_backend(key)
    return Loaded(model=key[0], device=key[1], decoding=decoding, backend=backend)
