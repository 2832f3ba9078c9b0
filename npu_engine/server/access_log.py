"""The access log: one line per HTTP request on the `npu_engine.access` logger, written when its
response has ended (a stream's too), refusals by the guard included.

A request's `AccessRecord` lives in its ASGI scope (`scope["state"]`, which Starlette's
`request.state` reads): the guard makes it, the routes hand it to the model service, which notes
who answered, and the guard writes it. Every value a client chose is escaped, so that no request
can forge a log line; the prompt is left out unless the server was started with --log-prompts."""

import json
import logging
import re
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from npu_engine.embedding import EmbeddingResult
from npu_engine.request import GenerateRequest, GenerationResult
from npu_engine.server.metrics import UNMATCHED

ACCESS_LOGGER = "npu_engine.access"
STATE_KEY = "access"
PROMPT_CHARS = 500  # of a logged prompt: enough to recognise it, bounded like every line
VALUE_CHARS = 200  # of any other value a client chose (a path no route serves)
# A value written bare; anything else is JSON-quoted (newlines, quotes, spaces, non-ASCII).
_BARE = re.compile(r"[\w.:/@+()-]{1,200}", re.ASCII)


@dataclass
class AccessRecord:
    """What one request's log line says. The guard sets the request's fields and its outcome; the
    model service adds who answered (none of it when nothing answered: a 4xx, a refusal)."""

    request_id: str
    method: str
    path: str
    route: str = UNMATCHED
    status: int = 0
    model: str | None = None
    tier: str | None = None
    device: str | None = None
    backend: str | None = None
    output_tokens: int | None = None
    prompt: str | None = None

    def asked(self, request: GenerateRequest) -> None:
        self.prompt = prompt_text(request)

    def answered(self, result: GenerationResult) -> None:
        self.model, self.tier, self.device, self.backend = (
            result.model,
            result.tier,
            result.device,
            result.backend,
        )
        # A request for several choices (OpenAI's `n`) answers several times: its tokens add up.
        self.output_tokens = (self.output_tokens or 0) + result.metrics.output_tokens

    def embedded(self, result: EmbeddingResult) -> None:
        self.model, self.tier, self.device = result.model, result.tier, result.device
        self.output_tokens = 0  # vectors, not tokens


def new_record(scope: MutableMapping[str, Any], request_id: str) -> AccessRecord:
    """A fresh record for the request of `scope`, kept in it for the routes to find."""
    record = AccessRecord(request_id, str(scope.get("method", "")), str(scope.get("path", "")))
    scope.setdefault("state", {})[STATE_KEY] = record
    return record


def record_of(scope: MutableMapping[str, Any]) -> AccessRecord:
    """The request's record (a route's `request.scope`); a detached one when the app runs without
    the guard, which makes them."""
    record = scope.get("state", {}).get(STATE_KEY)
    if isinstance(record, AccessRecord):
        return record
    return AccessRecord("-", str(scope.get("method", "")), str(scope.get("path", "")))


def prompt_text(request: GenerateRequest) -> str:
    """The text a request asks about: a raw completion's prompt, else the last user message."""
    if request.prompt is not None:
        return request.prompt
    users = [m for m in request.messages if m.get("role") == "user"] or list(request.messages)
    content = users[-1].get("content", "") if users else ""
    return content if isinstance(content, str) else json.dumps(content, default=str)


def _value(value: object) -> str:
    if value is None:
        return "-"
    text = str(value)
    return text if _BARE.fullmatch(text) else json.dumps(text[:VALUE_CHARS])


class AccessLog:
    """Writes AccessRecords to `logger` at INFO; the prompt only when `log_prompts`."""

    def __init__(self, logger: logging.Logger, log_prompts: bool = False) -> None:
        self.logger = logger
        self.log_prompts = log_prompts

    def line(self, record: AccessRecord, duration_ms: float) -> str:
        fields: list[tuple[str, object]] = [
            ("id", record.request_id),
            ("method", record.method),
            ("route", record.route),
            ("status", record.status),
            ("model", record.model),
            ("tier", record.tier),
            ("device", record.device),
            ("backend", record.backend),
            ("tokens", record.output_tokens),
            ("ms", f"{duration_ms:.0f}"),
        ]
        if record.route == UNMATCHED:  # which path was not found; templates say it otherwise
            fields.append(("path", record.path))
        text = " ".join(f"{name}={_value(value)}" for name, value in fields)
        if self.log_prompts and record.prompt is not None:
            # JSON-escaped (ASCII only): a newline, a carriage return or a Unicode line separator
            # in the prompt cannot start a line of its own.
            shown = json.dumps(record.prompt[:PROMPT_CHARS], ensure_ascii=True)
            text += f" prompt_chars={len(record.prompt)} prompt={shown}"
        return text

    def write(self, record: AccessRecord, duration_ms: float) -> None:
        if self.logger.isEnabledFor(logging.INFO):
            # One %s argument: the rate limiter (log_limit.py) counts access lines as one kind.
            self.logger.info("%s", self.line(record, duration_ms))


def enable_access_log() -> logging.Logger:
    """Let the access log through at INFO whatever the root logger's level (the CLI keeps it at
    ERROR without -v). Its lines reach the root logger's handlers (stderr) and their rate limit
    (log_limit.py): past that many a second they are counted, not written, like any flood."""
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.setLevel(logging.INFO)
    return logger
