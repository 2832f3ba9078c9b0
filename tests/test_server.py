"""`npu-engine serve` on real IR (SmolLM2): the official `openai` and `ollama` clients, unchanged,
against a server on 127.0.0.1; Ollama's keep_alive; and every safety default, each with its test."""

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import ollama
import openai
import pytest
import uvicorn
from fastapi.testclient import TestClient

from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.manifest import Manifest
from npu_engine.server.app import create_app
from npu_engine.server.config import ServerConfig, keep_alive_seconds
from npu_engine.store import ModelStore

LOCAL = "http://127.0.0.1"
HELLO = [{"role": "user", "content": "Say hello."}]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_serving(
    url: str, process: subprocess.Popen[str] | subprocess.Popen[bytes], seconds: float
) -> None:
    """Until `url/health` answers; fails when the server process exits or `seconds` pass first."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            httpx.get(f"{url}/health", timeout=1)
            return
        except httpx.HTTPError:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)


class ServerThread:
    """uvicorn serving an app on 127.0.0.1 in this process, so tests can also look at the engine;
    on a free port with uvicorn's defaults, or with the given uvicorn `config` (its port)."""

    def __init__(self, app: object, config: uvicorn.Config | None = None) -> None:
        if config is None:
            config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")  # type: ignore[arg-type]
        self.port = config.port
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


# -- the official clients ------------------------------------------------------------------------


def test_openai_client_chat_stream_and_models(served: ServerThread, smollm_cpu: Manifest) -> None:
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="code", messages=HELLO, max_tokens=8)  # type: ignore[arg-type]
    assert raw.headers["x-npu-engine-tier"] == "code" and raw.headers["x-npu-engine-device"] == "CPU"
    assert raw.headers["x-npu-engine-model"] == smollm_cpu.name
    reply = raw.parse()
    assert reply.choices[0].message.content and reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None and reply.usage.completion_tokens <= 8 and reply.usage.prompt_tokens > 0
    pieces = list(
        client.chat.completions.create(
            model="code",
            messages=HELLO,
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},  # type: ignore[arg-type]
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in pieces if c.choices)
    assert text == reply.choices[0].message.content  # greedy: the same answer streamed
    assert (
        pieces[-1].usage is not None and pieces[-1].usage.completion_tokens == reply.usage.completion_tokens
    )
    ids = {m.id for m in client.models.list()}
    assert {"auto", "fast", "code", "large", "review", smollm_cpu.name} <= ids
    completion = client.completions.create(model=smollm_cpu.name, prompt="def add(a, b):", max_tokens=6)
    assert completion.choices[0].text and completion.usage is not None
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=HELLO)  # type: ignore[arg-type]


def test_ollama_client_chat_generate_list_ps_show(served: ServerThread, smollm_cpu: Manifest) -> None:
    client = ollama.Client(host=served.url)
    reply = client.chat(model="code", messages=HELLO, options={"num_predict": 8})
    assert reply.message.content and reply.done and reply.eval_count and reply.eval_count <= 8
    assert reply.prompt_eval_count and reply.total_duration and reply.eval_duration is not None
    streamed = list(client.chat(model="code", messages=HELLO, options={"num_predict": 8}, stream=True))
    assert "".join(part.message.content or "" for part in streamed) == reply.message.content
    assert streamed[-1].done and not streamed[0].done
    generated = client.generate(model="fast", prompt="def add(a, b):", options={"num_predict": 6})
    assert generated.response and generated.done
    assert {m.model for m in client.list().models} >= {"code", "fast", smollm_cpu.name}
    assert smollm_cpu.name in {m.model for m in client.ps().models}
    shown = client.show("code")
    assert shown.details is not None and shown.details.family == smollm_cpu.architecture
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="llama9", messages=HELLO)
    assert missing.value.status_code == 404
    assert client._client.get("/api/version").json()["version"]


def test_keep_alive_has_ollamas_meaning(served: ServerThread, engine: Engine, smollm_cpu: Manifest) -> None:
    client = ollama.Client(host=served.url)
    client.chat(model="code", messages=HELLO, options={"num_predict": 2}, keep_alive=-1)
    [running] = [m for m in client.ps().models if m.model == smollm_cpu.name]
    assert str(running.expires_at).startswith("0001")  # never expires
    client.chat(model="code", messages=HELLO, options={"num_predict": 2}, keep_alive="5m")
    assert engine.keep_alive_of(smollm_cpu.name) == 300
    client.chat(model="code", messages=HELLO, options={"num_predict": 2}, keep_alive=0)
    assert smollm_cpu.name not in {m.model for m in client.ps().models}
    assert client.generate(model="code", prompt="", keep_alive=0).done_reason == "unload"
    with pytest.raises(ollama.ResponseError) as bad:
        client.chat(model="code", messages=HELLO, keep_alive="soon")
    assert bad.value.status_code == 400 and "keep_alive" in bad.value.error


def test_keep_alive_durations() -> None:
    assert keep_alive_seconds("5m") == 300 and keep_alive_seconds("1h30m") == 5400
    assert keep_alive_seconds(-1) == float("inf") and keep_alive_seconds("-1m") == float("inf")
    assert keep_alive_seconds(0) == 0 and keep_alive_seconds("90") == 90 and keep_alive_seconds(None) is None


# -- safe by default -----------------------------------------------------------------------------


def local_client(engine: Engine, **config: object) -> TestClient:
    return TestClient(
        create_app(engine, ServerConfig(**config)), base_url=LOCAL, raise_server_exceptions=False
    )  # type: ignore[arg-type]


def test_every_route_but_health_and_the_pages_needs_the_api_key(engine: Engine) -> None:
    app = create_app(engine, ServerConfig(api_key="s3cret"))
    client = TestClient(app, base_url=LOCAL)
    routes = [(path, method) for path, ops in app.openapi()["paths"].items() for method in ops]
    routes += [("/openapi.json", "get"), ("/docs", "get")]
    assert len(routes) >= 12
    for path, method in routes:
        refused = client.request(method, path, json={})
        if (path, method) in (("/health", "get"), ("/docs", "get")):
            # The API docs page holds nothing private: it asks for the key before it fetches
            # /openapi.json (docs.js), which stays keyed like every call.
            assert refused.status_code == 200
            continue
        assert refused.status_code == 401, (method, path)
        assert "API key" in refused.text
    ok = client.post(
        "/v1/chat/completions",
        json={"model": "code", "messages": HELLO, "max_tokens": 2},
        headers={"Authorization": "Bearer s3cret"},
    )
    assert ok.status_code == 200
    assert client.get("/api/tags", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_foreign_host_headers_and_origins_are_refused(engine: Engine) -> None:
    client = local_client(engine)
    assert client.get("/api/tags", headers={"Host": "evil.example:11435"}).status_code == 403
    assert client.get("/api/tags", headers={"Host": "localhost:11435"}).status_code == 200
    named = local_client(engine, allowed_hosts=("box.lan",))
    assert named.get("/api/tags", headers={"Host": "box.lan:11435"}).status_code == 200
    evil = client.get("/api/tags", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in evil.headers
    local = client.get("/api/tags", headers={"Origin": "http://localhost:3000"})
    assert local.headers["access-control-allow-origin"] == "http://localhost:3000"


def test_bad_requests_get_clear_4xx(engine: Engine) -> None:
    client = local_client(engine, max_body_bytes=4096)
    big = client.post(
        "/v1/chat/completions", content=b"x" * 5000, headers={"Content-Type": "application/json"}
    )
    assert big.status_code == 413
    broken = client.post(
        "/v1/chat/completions", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]["message"]
    wrong = client.post("/v1/chat/completions", json={"model": "code", "messages": HELLO, "temperature": 7})
    assert wrong.status_code == 400 and "'temperature'" in wrong.json()["error"]["message"]
    no_role = client.post("/api/chat", json={"model": "code", "messages": [{"content": "hi"}]})
    assert no_role.status_code == 400 and "'messages.0.role'" in no_role.json()["error"]
    unknown = client.post("/api/chat", json={"model": "mystery", "messages": HELLO})
    assert unknown.status_code == 404 and "not served here" in unknown.json()["error"]
    greedy = client.post(
        "/v1/chat/completions", json={"model": "code", "messages": HELLO, "max_tokens": 5000}
    )
    assert greedy.status_code == 400 and "over this server's limit" in greedy.json()["error"]["message"]


def test_a_prompt_over_the_context_gets_400_with_the_counts(engine: Engine) -> None:
    client = local_client(engine, max_body_bytes=1 << 20)
    long_text = "word " * 9000
    answer = client.post(
        "/v1/chat/completions", json={"model": "code", "messages": [{"role": "user", "content": long_text}]}
    )
    assert answer.status_code == 400
    message = answer.json()["error"]["message"]
    assert "tokens" in message and "at most 8192" in message
    assert answer.json()["error"]["type"] == "context_length_exceeded"


def test_log_lines_escape_user_input(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    client = local_client(engine)
    with caplog.at_level(logging.INFO, logger="npu_engine.access"):
        client.get("/api/tags%0Afake-entry%20200")
    lines = [r.getMessage() for r in caplog.records if r.name == "npu_engine.access"]
    assert lines and all("\n" not in line for line in lines)
    assert any("\\n" in line for line in lines)


def test_a_full_queue_answers_503_with_retry_after(cache_store: ModelStore, smollm_cpu: Manifest) -> None:
    engine = Engine.from_settings(
        store=cache_store, profile="tiny", inventory=discover(), remotes=(), max_waiting=1
    )
    with ServerThread(create_app(engine)) as server:
        body = {"model": "code", "messages": HELLO, "max_tokens": 48, "stream": False}
        httpx.post(f"{server.url}/v1/chat/completions", json={**body, "max_tokens": 1}, timeout=60)  # loaded
        statuses: list[httpx.Response] = []

        def one() -> None:
            statuses.append(httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120))

        threads = [threading.Thread(target=one) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    codes = sorted(r.status_code for r in statuses)
    assert 200 in codes and 503 in codes and set(codes) <= {200, 503}
    busy = next(r for r in statuses if r.status_code == 503)
    assert int(busy.headers["retry-after"]) > 0 and busy.json()["error"]["type"] == "server_busy"


def test_a_client_that_disconnects_stops_generation(served: ServerThread, engine: Engine) -> None:
    body = {
        "model": "code",
        "messages": [{"role": "user", "content": "Count from 1 to 5000, one per line."}],
        "max_tokens": 4000,
        "stream": True,
    }
    with httpx.stream("POST", f"{served.url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        for _ in range(4):
            next(lines)
    left = time.monotonic()
    while engine.queue_depth() and time.monotonic() - left < 30:
        time.sleep(0.05)
    stopped_after = time.monotonic() - left
    assert engine.queue_depth() == 0
    # 4000 tokens take SmolLM2 half a minute here; stopping is a matter of one token.
    assert stopped_after < 5
    started = time.monotonic()
    quick = httpx.post(
        f"{served.url}/api/chat",
        json={"model": "code", "messages": HELLO, "stream": False, "options": {"num_predict": 1}},
        timeout=60,
    )
    assert quick.status_code == 200 and time.monotonic() - started < 10


def test_health_and_metrics(served: ServerThread) -> None:
    assert httpx.get(f"{served.url}/health").json()["status"] == "ok"
    metrics = httpx.get(f"{served.url}/metrics.json").json()
    assert metrics["requests_total"] > 0 and metrics["queue_depth"] >= 0
    assert (
        metrics["devices"]["CPU"]["answers"] > 0 and metrics["devices"]["CPU"]["tokens_per_second_recent"] > 0
    )


def test_the_openapi_document_fuzzes_without_a_5xx(engine: Engine) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    # The ASGI test transport calls itself "testserver".
    app = create_app(engine, ServerConfig(max_new_tokens=4, allowed_hosts=("testserver",)))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures = []
    for operation in schema.get_all_operations():
        api = operation.ok()

        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=api.as_strategy())
        def fuzz(case: "schemathesis.Case") -> None:
            response = case.call()
            if response.status_code >= 500:
                failures.append((case.method, case.path, response.status_code, response.text[:200]))

        fuzz()
    assert failures == []


# -- the command line ----------------------------------------------------------------------------


def test_serve_binds_loopback_unless_told_otherwise(tmp_path: Path) -> None:
    env = {**os.environ, "NPU_ENGINE_HOME": str(tmp_path)}
    serve = [sys.executable, "-m", "npu_engine.engine_cli", "serve", "--profile", "tiny"]
    refused = subprocess.run(
        [*serve, "--host", "0.0.0.0"], capture_output=True, text=True, env=env, timeout=60
    )
    assert refused.returncode == 2
    assert (
        refused.stderr.strip()
        == "error: refusing to bind 0.0.0.0: pass --allow-remote to serve beyond this machine"
    )
    port = free_port()
    process = subprocess.Popen(
        [*serve, "--host", "0.0.0.0", "--allow-remote", "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "NPU_ENGINE_API_KEY": ""},
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        assert first.startswith("warning: serving on 0.0.0.0 without an API key")
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_fifty_concurrent_streams_complete_or_get_503_and_memory_returns(
    cache_store: ModelStore, smollm_cpu: Manifest, tmp_path: Path
) -> None:
    """Bounded load, loopback only: 50 simultaneous streaming chats against a server process."""
    import asyncio

    import psutil

    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    os.symlink(cache_store.path(smollm_cpu.name), home / "models" / smollm_cpu.name)
    port = free_port()
    env = {**os.environ, "NPU_ENGINE_HOME": str(home)}
    process = subprocess.Popen(
        [sys.executable, "-m", "npu_engine.engine_cli", "serve", "--profile", "tiny", "--port", str(port)],
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process, 60)
        body = {"model": "code", "messages": HELLO, "max_tokens": 16, "stream": True}
        httpx.post(f"{url}/v1/chat/completions", json={**body, "stream": False}, timeout=60)
        server = psutil.Process(process.pid)
        baseline = server.memory_info().rss

        async def one(client: httpx.AsyncClient) -> tuple[int, float, bool]:
            started = time.monotonic()
            async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
                text = "".join([line async for line in response.aiter_lines()])
            return (
                response.status_code,
                time.monotonic() - started,
                "[DONE]" in text and '"error"' not in text,
            )

        async def run() -> list[tuple[int, float, bool]]:
            async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=60)) as client:
                return await asyncio.gather(*(one(client) for _ in range(50)))

        after: list[int] = []
        for _ in range(3):
            started = time.monotonic()
            results = asyncio.run(run())
            seconds = time.monotonic() - started
            time.sleep(1.0)
            after.append(server.memory_info().rss)
    finally:
        process.terminate()
        process.wait(timeout=30)
    codes = [status for status, _, _ in results]
    assert set(codes) <= {200, 503} and codes.count(200) >= 1
    assert all(done for status, _, done in results if status == 200)
    latencies = sorted(latency for status, latency, _ in results if status == 200)
    print(
        f"\nload: 50 streams in {seconds:.1f}s, {codes.count(200)} served, {codes.count(503)} busy; "
        f"{len(latencies) / seconds:.1f} served/s; p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, "
        f"p95 {latencies[int(0.95 * (len(latencies) - 1))] * 1000:.0f} ms; "
        f"RSS idle {baseline / 2**20:.0f} MB, after each burst {[round(a / 2**20) for a in after]} MB"
    )
    # Memory returns to the idle level after every burst (no growth from burst to burst).
    assert max(after) <= baseline * 1.05 + (32 << 20)
