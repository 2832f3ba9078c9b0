"""Connection limits for `npu-engine serve`: how uvicorn is configured, and the timeouts it lacks.

uvicorn's h11 protocol times a connection out only while it is idle *after* a response
(keep-alive). A connection that never sends a byte, or sends half a request head, or stops halfway
through a body, is kept open for ever; enough of them fill the process's descriptor table, and then
nothing can connect, not even to /health (issue 10, finding 5). `TimedH11Protocol` closes such
connections after a deadline, and closes at once any connection past the cap, so that descriptors
stay bounded well under the process's limit."""

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from npu_engine.server.config import ServerConfig

log = logging.getLogger("npu_engine.server.connections")

# Descriptors kept for everything but client sockets: model files, the compiled-model cache,
# threads' pipes, the log. The cap is at most half of the limit, and never eats into these.
RESERVED_DESCRIPTORS = 256


def _closing_response(status: str, text: str, *headers: str) -> bytes:
    """A whole plain-text HTTP/1.1 response that ends the connection, written before uvicorn has
    a request cycle to answer through."""
    body = text.encode()
    lines = [f"HTTP/1.1 {status}", "content-type: text/plain; charset=utf-8", *headers]
    lines += ["connection: close", f"content-length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode() + body


OVER_CAP_RESPONSE = _closing_response("503 Service Unavailable", "too many connections", "retry-after: 2")
TIMEOUT_RESPONSE = _closing_response("408 Request Timeout", "the request came too slowly")


@dataclass(frozen=True)
class ConnectionLimits:
    """Deadlines for a client to deliver a request, and the most connections kept open."""

    max_connections: int
    header_seconds: float  # from connecting, or from the end of the last response, to a full head
    body_seconds: float  # from the end of the head to the end of the body


def raise_descriptor_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # a container may refuse: keep the soft limit we have
            pass
    return int(soft) if soft != resource.RLIM_INFINITY else 1 << 20


def connection_cap(requested: int, descriptors: int) -> int:
    """The connection cap actually used: the one asked for, but at most half of what the descriptor
    limit leaves after RESERVED_DESCRIPTORS, and at least 8."""
    return max(8, min(requested, (descriptors - RESERVED_DESCRIPTORS) // 2))


def accept_backlog(cap: int) -> int:
    """The listen backlog, which is also the most sockets asyncio accepts in one go: a quarter of
    the cap (so that a few bursts in flight and the cap together stay within the descriptors
    `connection_cap` leaves), between 16 and uvicorn's default of 2048."""
    return max(16, min(2048, cap // 4))


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's head and body, and a hard cap on
    open connections. Subclassed per server by `timed_protocol` (uvicorn builds protocols itself)."""

    limits = ConnectionLimits(max_connections=1000, header_seconds=15.0, body_seconds=30.0)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._phase: str | None = None  # "head" or "body" while a deadline runs

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            # Past the cap the socket is answered and closed at once, so that a flood of idle
            # connections cannot use up the descriptors that new clients and the model need.
            log.warning("over %d open connections: refusing one", self.limits.max_connections)
            transport.write(OVER_CAP_RESPONSE)
            transport.close()
            return
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def _watch(self) -> None:
        """Start, keep or stop the deadline for what the client still owes us."""
        if self.transport is None or self.transport.is_closing():
            self._disarm()
            return
        state = self.conn.their_state
        phase = "head" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None
        if phase == self._phase:
            return  # a deadline is a budget for the whole head or body, not per byte (slowloris)
        self._disarm()
        if phase is not None:
            seconds = self.limits.header_seconds if phase == "head" else self.limits.body_seconds
            self._deadline = self.loop.call_later(seconds, self._timed_out)
            self._phase = phase

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._phase = None, None

    def _timed_out(self) -> None:
        phase, self._deadline, self._phase = self._phase, None, None
        if self.transport is None or self.transport.is_closing():
            return
        if phase == "head" and self.conn.trailing_data[0]:
            self.transport.write(TIMEOUT_RESPONSE)  # part of a head came: say why we hang up
        # A body that stalls: closing tells the application (http.disconnect), which stops.
        self.transport.close()


def timed_protocol(limits: ConnectionLimits) -> type[TimedH11Protocol]:
    """A TimedH11Protocol class bound to these limits (uvicorn constructs one per connection)."""
    return type("TimedH11Protocol", (TimedH11Protocol,), {"limits": limits})


def uvicorn_config(app: Any, config: ServerConfig, descriptors: int | None = None) -> uvicorn.Config:
    """The uvicorn settings for serving `app` under `config`: the connection cap (kept well under
    `descriptors`, the process's open-file limit, read when not given), keep-alive, head and body
    deadlines. Logging is left to the caller (no uvicorn log config), so its records reach the
    root logger's handlers and their rate limit."""
    limit = descriptors if descriptors is not None else resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    cap = connection_cap(config.max_connections, int(limit))
    limits = ConnectionLimits(cap, config.header_timeout_seconds, config.body_timeout_seconds)
    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        http=timed_protocol(limits),
        ws="none",  # no WebSocket routes: an upgrade would escape the deadlines above
        # uvicorn answers 503 to a request that arrives while this many connections are open.
        limit_concurrency=cap,
        # asyncio accepts up to `backlog` sockets in one burst before any of them reaches
        # connection_made (where the cap closes them): a burst must fit in the descriptors left.
        backlog=accept_backlog(cap),
        timeout_keep_alive=max(1, round(config.connection_keep_alive_seconds)),
        log_config=None,
        log_level="warning",
        access_log=False,
    )


def serve_app(app: Any, config: ServerConfig, descriptors: int | None = None) -> None:
    """Serve `app` under `config` until interrupted (uvicorn's own signal handling)."""
    uvicorn.Server(uvicorn_config(app, config, descriptors)).run()
