"""Record every HTTP exchange an npu-engine app serves: `record_apps()` wraps
`npu_engine.server.app.create_app` so that each app it builds writes one raw JSON line per exchange
(request body, response start and body, timestamps) to a file of this process in a sink folder.

The app stays the FastAPI object `create_app` returned (tests call `app.openapi()`, schemathesis
needs it); what is wrapped is its middleware stack, from the outside, so that the 500s Starlette's
error middleware sends are recorded too. Raw records are normalised later (`normalise.py`)."""

import base64
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from types import ModuleType
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SINK_ENV = "NPU_BEHAVIOUR_HTTP_DIR"  # where raw records go; recording is on when it is set
PATCHED = "_npu_behaviour_recorder"  # marks a create_app already wrapped


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Sink:
    """Appends raw records to `<folder>/<pid>.jsonl`, one line each, flushed at once (a server
    process may be terminated at any moment). `test` names the test running now; None means
    `$PYTEST_CURRENT_TEST`, which a server started as a subprocess by a test inherits."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.test: str | None = None
        self._lock = threading.Lock()

    def current_test(self) -> str:
        if self.test is not None:
            return self.test
        running = os.environ.get("PYTEST_CURRENT_TEST", "")
        return running.rsplit(" (", 1)[0] if running else "(outside a test)"

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=True) + "\n"
        with self._lock, (self.folder / f"{os.getpid()}.jsonl").open("a", encoding="ascii") as out:
            out.write(line)


class Recording:
    """ASGI middleware: passes everything through, and writes each HTTP exchange to `sink`."""

    def __init__(self, app: ASGIApp, sink: Sink) -> None:
        self.app = app
        self.sink = sink

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"")
        record: dict[str, Any] = {
            "test": self.sink.current_test(),
            "pid": os.getpid(),
            "started_ns": time.monotonic_ns(),
            "ended_ns": None,
            "method": scope["method"],
            "path": scope["path"] + ("?" + query.decode("latin-1") if query else ""),
            "request_headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "request_body": [],
            "status": None,
            "headers": [],
            "response_body": [],
            "complete": False,  # the last body chunk was sent
            "client_left": False,  # the client went away before the last body chunk
        }

        def over() -> None:
            if record["ended_ns"] is None:
                record["ended_ns"] = time.monotonic_ns()

        async def receiving() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                record["request_body"].append(_b64(message.get("body", b"")))
            elif message["type"] == "http.disconnect" and not record["complete"]:
                record["client_left"] = True
                over()
            return message

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                record["status"] = message["status"]
                record["headers"] = [
                    [name.decode("latin-1"), value.decode("latin-1")] for name, value in message["headers"]
                ]
            elif message["type"] == "http.response.body":
                record["response_body"].append(_b64(message.get("body", b"")))
                if not message.get("more_body", False):
                    record["complete"] = True
                    over()  # before sending: the client cannot start its next request earlier
            try:
                await send(message)
            except OSError:
                record["client_left"] = True
                over()
                raise

        try:
            await self.app(scope, receiving, sending)
        finally:
            over()
            self.sink.write(record)


def _wrap(create_app: Callable[..., Any], sink: Sink) -> Callable[..., Any]:
    def create_recorded_app(*args: Any, **kwargs: Any) -> Any:
        app = create_app(*args, **kwargs)
        build = getattr(app, "build_middleware_stack", None)
        if build is None:  # not a Starlette app: wrap the callable itself
            return Recording(app, sink)
        app.build_middleware_stack = lambda: Recording(build(), sink)
        return app

    setattr(create_recorded_app, PATCHED, sink)
    return create_recorded_app


def record_apps(module: ModuleType, folder: Path) -> Sink:
    """Make `module.create_app` (of npu_engine.server.app) record every app it builds into
    `folder`; idempotent: a second call returns the sink of the first."""
    current = module.create_app
    existing = getattr(current, PATCHED, None)
    if isinstance(existing, Sink):
        return existing
    folder.mkdir(parents=True, exist_ok=True)
    sink = Sink(folder)
    setattr(module, "create_app", _wrap(current, sink))  # noqa: B010 (mypy: a module's attribute)
    return sink
