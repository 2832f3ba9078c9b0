"""Non-streamed requests meet the same bounded queue as streams, at once, and stop when their
client leaves. Real SmolLM2 IR behind a real server on 127.0.0.1."""

import asyncio
import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.manifest import Manifest
from npu_engine.server.app import create_app
from npu_engine.store import ModelStore
from tests.test_server import HELLO, ServerThread

# SmolLM2 answers this with all 4000 tokens it may: about four minutes on two cores.
COUNT = [
    {"role": "user", "content": "Write the numbers from 1 to 5000, separated by commas, with nothing else."}
]


@pytest.fixture(scope="module")
def engine(cache_store: ModelStore, smollm_cpu: Manifest) -> Engine:
    return Engine.from_settings(
        store=cache_store, profile="tiny", inventory=discover(), remotes=()
    )  # default queue


@pytest.fixture(scope="module")
def served(engine: Engine) -> Iterator[ServerThread]:
    with ServerThread(create_app(engine)) as server:
        yield server


def test_fifty_concurrent_non_streamed_requests_get_200_or_503(served: ServerThread, engine: Engine) -> None:
    body = {"model": "code", "messages": HELLO, "max_tokens": 16}
    httpx.post(f"{served.url}/v1/chat/completions", json=body, timeout=60)  # loaded

    async def one(client: httpx.AsyncClient) -> tuple[httpx.Response, float]:
        started = time.monotonic()
        response = await client.post(f"{served.url}/v1/chat/completions", json=body)
        return response, time.monotonic() - started

    async def run() -> list[tuple[httpx.Response, float]]:
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=60)) as client:
            return await asyncio.gather(*(one(client) for _ in range(50)))

    started = time.monotonic()
    results = asyncio.run(run())
    seconds = time.monotonic() - started
    codes = [r.status_code for r, _ in results]
    served_ = sorted(latency for r, latency in results if r.status_code == 200)
    print(
        f"\n50 non-streamed in {seconds:.1f}s: {codes.count(200)} served, {codes.count(503)} busy; "
        f"p95 of served {served_[int(0.95 * (len(served_) - 1))] * 1000:.0f} ms"
    )
    assert set(codes) <= {200, 503} and codes.count(200) >= 1
    # The queue holds max_waiting (8) per model: the rest are told to come back, not kept waiting.
    assert codes.count(503) >= 1
    for busy in (r for r, _ in results if r.status_code == 503):
        assert int(busy.headers["retry-after"]) > 0 and busy.json()["error"]["type"] == "server_busy"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "code", "messages": COUNT, "max_tokens": 4000}),
        (
            "/api/chat",
            {"model": "code", "messages": COUNT, "stream": False, "options": {"num_predict": 4000}},
        ),
    ],
)
def test_a_non_streamed_request_whose_client_left_is_cancelled(
    served: ServerThread, engine: Engine, path: str, body: dict[str, object]
) -> None:
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{served.port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", served.port)) as client:
        client.sendall(head + payload)
        deadline = time.monotonic() + 60
        while not engine.queue_depth():  # the request is generating
            assert time.monotonic() < deadline, "the request never reached the engine"
            time.sleep(0.05)
        time.sleep(1.0)  # well into the answer
    left = time.monotonic()
    while engine.queue_depth() and time.monotonic() - left < 60:
        time.sleep(0.05)
    stopped_after = time.monotonic() - left
    print(f"\n{path}: generation stopped {stopped_after * 1000:.0f} ms after the client left")
    assert engine.queue_depth() == 0
    # Stopping is a poll (0.25 s) and a token away; the whole answer would take minutes.
    assert stopped_after < 5
