"""The server's front door, as one ASGI middleware: a request id on every response, the Host check
(DNS rebinding), the Origin check (a page of another site driving the engine with a "simple"
cross-site request, which needs no CORS preflight), the API key (not asked of CORS preflights,
which browsers send without it), the body-size limit, one count per route in the metrics, and
one access-log line per request (access_log.py). Written as plain ASGI so that streamed responses
pass through untouched, and counted and logged when they end."""

import json
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from npu_engine.server.access_log import AccessLog, new_record
from npu_engine.server.config import ServerConfig
from npu_engine.server.metrics import Metrics
from npu_engine.server.schemas import error_payload

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Open without the API key: the health check, the Code Mode page and the API docs with their files
# (they hold nothing private; every API call they make carries the key, /openapi.json too). The
# Host check still applies.
OPEN_PATHS = ("/health", "/", "/docs")
OPEN_PREFIXES = ("/page/",)


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        config: ServerConfig,
        metrics: Metrics,
        route_of: Callable[[Scope], str],
        access: AccessLog,
    ) -> None:
        self.app = app
        self.config = config
        self.metrics = metrics
        self.route_of = route_of  # the route template a request is counted under
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id
        record = new_record(scope, request_id)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path = scope["path"]
        started = time.monotonic()
        status = {"code": 0}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"x-request-id" for name, _ in headers):
                    headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        if path.startswith("/api/") and scope["method"] == "POST":
            scope["headers"] = _as_json(scope["headers"])  # as Ollama reads them: see _as_json
        try:
            refusal = self._refusal(scope["method"], path, headers)
            if refusal is not None:
                await _reply(send_with_id, *refusal)
                return
            body = await _read_body(receive, self.config.max_body_bytes, headers)
            if body is None:
                limit = self.config.max_body_bytes
                await _reply(send_with_id, 413, f"request body is over the {limit}-byte limit", path)
                return
            await self.app(scope, _replay(body, receive), send_with_id)
        except Exception:
            # Starlette's outermost middleware answers it with the 500 the client gets.
            status["code"] = status["code"] or 500
            raise
        finally:
            seconds = time.monotonic() - started
            record.route, record.status = self.route_of(scope), status["code"]
            self.metrics.request(record.route, record.status, seconds)
            self.access.write(record, seconds * 1000)

    def _refusal(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str, str] | None:
        if not self.config.host_allowed(headers.get("host", "")):
            return 403, "this Host is not served here (allowed: loopback and --allowed-host names)", path
        origin = headers.get("origin")
        foreign = origin is not None and not _same_origin(origin, headers)
        if foreign and origin is not None and not self.config.origin_allowed(origin):
            return 403, "requests from this Origin are refused (allowed: local pages, --allowed-origin)", path
        if self.config.api_key and not _is_open(path) and not _is_preflight(method, headers):
            given = headers.get("authorization", "").removeprefix("Bearer ").strip()
            given = given or headers.get("x-api-key", "")
            if not secrets.compare_digest(given.encode(), self.config.api_key.encode()):
                return 401, "a valid API key is required (Authorization: Bearer <key>)", path
        return None


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def _same_origin(origin: str, headers: dict[str, str]) -> bool:
    """The page's own calls: its Origin is the Host it was served from, which the Host check has
    allowed already (a rebound name is refused there)."""
    host = headers.get("host", "")
    return bool(host) and origin in (f"http://{host}", f"https://{host}")


def _as_json(raw_headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Ollama reads every request body as JSON whatever its Content-Type says (litellm's Ollama
    providers send none, `curl -d` sends application/x-www-form-urlencoded), so the Ollama routes
    do too: a body that is not JSON still gets a 400 saying so. Safe only because a cross-site
    page's request carries an Origin, which the guard refuses before any route runs."""
    kept = [(name, value) for name, value in raw_headers if name.lower() != b"content-type"]
    return [*kept, (b"content-type", b"application/json")]


def _is_preflight(method: str, headers: dict[str, str]) -> bool:
    """A CORS preflight: browsers send it without credentials, so it cannot carry the key. The CORS
    middleware behind the guard answers it without reaching a route, allowing only local (or
    configured) origins."""
    return method == "OPTIONS" and "origin" in headers and "access-control-request-method" in headers


async def _read_body(receive: Receive, limit: int, headers: dict[str, str]) -> bytes | None:
    """The whole request body, or None when it is over `limit` bytes (checked before reading when
    the client declares its length)."""
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later: the disconnect notice

    return replayed


async def _reply(send: Send, status: int, message: str, path: str) -> None:
    kind = {401: "authentication_error", 403: "permission_error", 413: "invalid_request_error"}[status]
    body = json.dumps(error_payload(path, message, kind)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
