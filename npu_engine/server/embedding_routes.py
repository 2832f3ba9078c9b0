"""The embedding routes: OpenAI's POST /v1/embeddings, Ollama's POST /api/embed and its older
POST /api/embeddings, all answered by `Engine.embed` on the model a `model` name means (the
`embed` tier, or a converted embedding model). A chat model named there is a 400."""

import base64
import struct
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from npu_engine.embedding import EmbeddingResult
from npu_engine.errors import UserInputError
from npu_engine.server.access_log import record_of
from npu_engine.server.config import keep_alive_seconds
from npu_engine.server.embedding_schemas import EmbeddingRequest, OllamaEmbeddingsRequest, OllamaEmbedRequest
from npu_engine.server.openai_routes import engine_headers
from npu_engine.server.service import ModelService, Served

NS = 1_000_000_000


def answered_by(result: EmbeddingResult) -> dict[str, Any]:
    return {"tier": result.tier, "model": result.model, "device": result.device}


def _headers(result: EmbeddingResult) -> dict[str, str]:
    return engine_headers(result.tier, result.model, result.device)


def _check_dimensions(asked: int | None, result: EmbeddingResult) -> None:
    if asked is not None and asked != result.dimensions:
        raise UserInputError(
            f"invalid field 'dimensions': {result.model} makes {result.dimensions}-dimensional vectors "
            f"and cannot shorten them (send {result.dimensions} or leave it out)"
        )


def as_base64(vector: tuple[float, ...]) -> str:
    """OpenAI's base64 encoding: the vector's float32 values, little-endian."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def embedding_routers(service: ModelService) -> list[APIRouter]:
    """The OpenAI router (/v1) and the Ollama router (/api) of the embedding routes."""
    openai = APIRouter(prefix="/v1", tags=["OpenAI"])
    ollama = APIRouter(prefix="/api", tags=["Ollama"])

    @openai.post("/embeddings")
    async def embeddings(body: EmbeddingRequest, request: Request) -> Any:
        served = service.tier_of(body.model)
        result = await service.embed(body.model, served, body.texts(), record=record_of(request.scope))
        _check_dimensions(body.dimensions, result)
        encode = as_base64 if body.encoding_format == "base64" else list
        payload = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": index, "embedding": encode(vector)}
                for index, vector in enumerate(result.vectors)
            ],
            "model": body.model,
            "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
            "npu_engine": answered_by(result),
        }
        return JSONResponse(payload, headers=_headers(result))

    @ollama.post("/embed")
    async def embed(body: OllamaEmbedRequest, request: Request) -> Any:
        record = record_of(request.scope)
        started = time.monotonic()
        served = service.tier_of(body.model)
        keep = keep_alive_seconds(body.keep_alive)
        texts = body.texts()
        try:
            if not texts:  # Ollama: no input loads the model (or unloads it, with keep_alive 0)
                result = await service.embed(body.model, served, [""], record=record)
                vectors: list[list[float]] = []
            else:
                result = await service.embed(body.model, served, texts, body.truncate, record)
                _check_dimensions(body.dimensions, result)
                vectors = [list(vector) for vector in result.vectors]
        finally:
            _keep_alive(service, served, keep)
        payload = {
            "model": body.model,
            "embeddings": vectors,
            "total_duration": int((time.monotonic() - started) * NS),
            "load_duration": int(result.load_seconds * NS),
            "prompt_eval_count": result.tokens if texts else 0,
            "npu_engine": answered_by(result),
        }
        return JSONResponse(payload, headers=_headers(result))

    @ollama.post("/embeddings")
    async def embeddings_legacy(body: OllamaEmbeddingsRequest, request: Request) -> Any:
        served = service.tier_of(body.model)
        keep = keep_alive_seconds(body.keep_alive)
        try:
            result = await service.embed(body.model, served, [body.prompt], record=record_of(request.scope))
        finally:
            _keep_alive(service, served, keep)
        # Ollama answers an empty prompt with an empty vector (having loaded the model).
        vector = list(result.vectors[0]) if body.prompt else []
        payload = {"embedding": vector, "npu_engine": answered_by(result)}
        return JSONResponse(payload, headers=_headers(result))

    return [openai, ollama]


def _keep_alive(service: ModelService, served: Served, keep: float | None) -> None:
    """Ollama's keep_alive for the embedding model: 0 unloads it now (once idle)."""
    if keep is not None and served.tier != "auto":
        service.engine.keep_alive(served.tier, keep)
