"""Connections to `npu-engine serve` time out and are capped, and its log is rate-limited (issue 10,
finding 5). The server is the real app on an engine whose store is empty: nothing here loads a
model, so these need no heavy lock."""

import logging
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.server.app import create_app
from npu_engine.server.config import ServerConfig
from npu_engine.server.connections import accept_backlog, connection_cap, uvicorn_config
from npu_engine.server.log_limit import RateLimitFilter
from npu_engine.store import ModelStore
from tests.test_server import ServerThread, free_port

GENEROUS = 10.0  # seconds past a deadline before a test calls the connection stuck


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    store = ModelStore(tmp_path_factory.mktemp("empty-home"))
    return Engine.from_settings(store=store, profile="tiny", inventory=discover(), remotes=())


@pytest.fixture
def strict(engine: Engine) -> Iterator[ServerThread]:
    config = ServerConfig(
        port=free_port(), header_timeout_seconds=1.0, body_timeout_seconds=1.0, max_connections=8
    )
    app = create_app(engine, config)
    with ServerThread(app, uvicorn_config(app, config)) as server:
        yield server


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=GENEROUS + 5)
    return sock


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    started = time.monotonic()
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        except TimeoutError:
            pytest.fail(f"the server kept an idle connection open for {time.monotonic() - started:.0f} s")
        if not chunk:
            break
        received += chunk
    return received, time.monotonic() - started


def test_idle_and_half_sent_requests_are_closed_after_the_timeout(strict: ServerThread) -> None:
    silent = connect(strict.port)  # never sends a byte
    half_head = connect(strict.port)
    half_head.sendall(b"GET /health HTTP/1.1\r\nHo")
    half_body = connect(strict.port)
    half_body.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b'content-length: 100\r\n\r\n{"model":'
    )
    kept_alive = connect(strict.port)  # one full request, then half of the next one
    kept_alive.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert kept_alive.recv(65536).startswith(b"HTTP/1.1 200")
    kept_alive.sendall(b"GET /hea")
    for sock, what in ((silent, "silent"), (half_head, "half head"), (half_body, "half body")):
        received, seconds = read_until_closed(sock)
        assert seconds < 1.0 + GENEROUS, what
        if what == "half head":
            assert received.startswith(b"HTTP/1.1 408")
    _, seconds = read_until_closed(kept_alive)
    assert seconds < 1.0 + GENEROUS
    # A slow but steady client is held to the same budget: bytes do not reset the deadline.
    trickle = connect(strict.port)
    started = time.monotonic()
    with pytest.raises(OSError):
        for byte in b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200:
            trickle.sendall(bytes([byte]))
            time.sleep(0.1)
            assert time.monotonic() - started < 1.0 + GENEROUS
    for sock in (silent, half_head, half_body, kept_alive, trickle):
        sock.close()


def test_past_the_cap_health_answers_once_the_idle_connections_time_out(strict: ServerThread) -> None:
    idle = [connect(strict.port) for _ in range(30)]  # the cap is 8
    started = time.monotonic()
    statuses: list[int] = []
    while time.monotonic() - started < 1.0 + GENEROUS:
        try:
            status = httpx.get(f"{strict.url}/health", timeout=2, trust_env=False).status_code
        except httpx.HTTPError:
            status = 0  # closed at once, over the cap
        statuses.append(status)
        if status == 200:
            break
        time.sleep(0.1)
    waited = time.monotonic() - started
    for sock in idle:
        sock.close()
    assert statuses[-1] == 200, statuses
    assert set(statuses) <= {0, 200, 503}
    assert waited < 1.0 + GENEROUS


def test_the_connection_cap_stays_under_the_descriptor_limit() -> None:
    assert connection_cap(1000, 20000) == 1000
    assert connection_cap(1000, 1024) == 384  # half of what the reserve leaves
    assert connection_cap(1000, 100) == 8
    assert accept_backlog(1000) == 250 and accept_backlog(8) == 16 and accept_backlog(100_000) == 2048


def test_a_flood_of_idle_connections_keeps_the_cli_server_reachable_and_its_log_small(
    tmp_path: Path,
) -> None:
    """`npu-engine serve` with an open-file limit of 600 and 1,000 idle sockets against it: before,
    accept() failed with EMFILE in a loop (a line of log each time) and /health never answered."""
    log = tmp_path / "server.log"

    def low_descriptor_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (600, 600))

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "npu_engine.engine_cli", "serve", "--profile", "tiny"]
    with log.open("w") as stderr:
        server = subprocess.Popen(
            [*command, "--port", str(port), "--header-timeout", "2"],
            env={**os.environ, "NPU_ENGINE_HOME": str(tmp_path / "home")},
            stderr=stderr,
            preexec_fn=low_descriptor_limit,
        )
    idle: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{url}/health", timeout=1, trust_env=False)
                break
            except httpx.HTTPError:
                assert server.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        for _ in range(1000):
            try:
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            except OSError:
                break  # the listen backlog is full: the flood is as big as it gets
        started = time.monotonic()
        answered = 0
        while time.monotonic() - started < 2.0 + 3 * GENEROUS:
            try:
                answered = httpx.get(f"{url}/health", timeout=2, trust_env=False).status_code
            except httpx.HTTPError:
                answered = 0
            if answered == 200:
                break
            time.sleep(0.2)
        waited = time.monotonic() - started
    finally:
        for sock in idle:
            sock.close()
        server.terminate()
        server.wait(timeout=30)
    size = log.stat().st_size
    assert answered == 200, f"/health unreachable; log ({size} bytes) ends: {log.read_text()[-500:]}"
    assert waited < 2.0 + 3 * GENEROUS
    assert size < 20_000, log.read_text()[-2000:]
    assert "Too many open files" not in log.read_text()  # the cap and backlog kept descriptors free


# -- the log's rate limit ------------------------------------------------------------------------


def record(name: str, message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, message, args, None)


def test_the_rate_limit_drops_past_n_a_second_and_says_how_many() -> None:
    now = [100.0]
    limiter = RateLimitFilter(per_second=5, clock=lambda: now[0])
    flood = [record("asyncio", "socket.accept() out of system resource %s", i) for i in range(1000)]
    passed = [r for r in flood if limiter.filter(r)]
    assert len(passed) == 5 and limiter.dropped_total == 995
    # Another kind, or another logger, has its own allowance.
    assert limiter.filter(record("asyncio", "another message"))
    assert limiter.filter(record("uvicorn.error", "socket.accept() out of system resource %s", 1))
    now[0] += 1.5
    after = record("asyncio", "socket.accept() out of system resource %s", "x")
    assert limiter.filter(after)
    assert after.getMessage() == (
        "socket.accept() out of system resource x [995 more like this dropped in the last 2 s]"
    )
    later = record("asyncio", "socket.accept() out of system resource %s", "y")
    assert limiter.filter(later) and later.getMessage() == "socket.accept() out of system resource y"


def test_the_rate_limit_on_a_handler_keeps_a_flood_small(tmp_path: Path) -> None:
    path = tmp_path / "log"
    handler = logging.FileHandler(path)
    handler.addFilter(RateLimitFilter(per_second=10))
    logger = logging.getLogger("npu_engine.test_flood")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for i in range(20_000):
            try:
                raise OSError(24, "Too many open files")
            except OSError:
                logger.exception("accept failed %d", i)
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert path.stat().st_size < 10_000
    assert path.read_text().count("accept failed") <= 20
