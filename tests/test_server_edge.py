"""The HTTP edge against odd and hostile input (issue 10): metrics that made-up paths cannot grow,
strict types (no string or boolean taken for a number), CORS preflights without the key, and
keep_alive values range-checked."""

from typing import Any

import httpx
import psutil
import pytest
from fastapi.testclient import TestClient

from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.errors import UserInputError
from npu_engine.manifest import Manifest
from npu_engine.server.app import create_app
from npu_engine.server.config import MAX_KEEP_ALIVE_SECONDS, ServerConfig, keep_alive_seconds
from npu_engine.server.metrics import UNMATCHED
from npu_engine.store import ModelStore
from tests.test_server import LOCAL, ServerThread

HELLO = [{"role": "user", "content": "Say hello."}]
KEY = {"Authorization": "Bearer s3cret"}


@pytest.fixture(scope="module")
def empty_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """An engine with no model: enough for everything the edge answers before a model is needed."""
    store = ModelStore(tmp_path_factory.mktemp("home"))
    return Engine.from_settings(store=store, profile="tiny", inventory=discover(), remotes=())


def client_of(engine: Engine, **config: Any) -> TestClient:
    app = create_app(engine, ServerConfig(**config))
    return TestClient(app, base_url=LOCAL, raise_server_exceptions=False)


# -- metrics by route ----------------------------------------------------------------------------


@pytest.mark.parametrize("api_key", [None, "s3cret"])
def test_ten_thousand_made_up_paths_do_not_grow_metrics_or_memory(
    empty_engine: Engine, api_key: str | None
) -> None:
    answered = 401 if api_key else 404
    app = create_app(empty_engine, ServerConfig(api_key=api_key))
    with ServerThread(app) as server, httpx.Client(base_url=server.url, headers=KEY) as client:
        anonymous = {"Authorization": ""} if api_key else {}

        def visit(first: int, count: int) -> None:
            for i in range(first, first + count):
                answer = client.get(f"/v1/made-up/{i}?x={i}", headers=anonymous)
                assert answer.status_code == answered

        visit(0, 500)  # warm up: the allocator and the server reach their steady state
        before_body = len(client.get("/metrics.json").content)
        before_prometheus = len(client.get("/metrics").content)
        before_rss = psutil.Process().memory_info().rss
        visit(500, 10_000)
        client.get("/api/show")  # a real route (and method not allowed): counted under its template
        after_rss = psutil.Process().memory_info().rss
        metrics = client.get("/metrics.json")
        prometheus = client.get("/metrics")
    assert metrics.status_code == 200 and prometheus.status_code == 200
    assert len(metrics.content) <= before_body + 200  # one more route, not 10,000 more paths
    # In Prometheus's format one more route is a counter and a histogram (about 20 lines).
    assert len(prometheus.content) <= before_prometheus + 4000
    assert "/v1/made-up" not in prometheus.text
    rows = {(row["path"], row["status"]): row["count"] for row in metrics.json()["requests"]}
    assert rows[(UNMATCHED, answered)] == 10_500
    assert rows[("/api/show", 405)] == 1
    assert not any(path.startswith("/v1/made-up") for path, _ in rows)
    # 0.1.0 grew ~9 kB a path (86-101 MB for 10,000 paths); a generous bound for allocator noise.
    assert after_rss - before_rss < 24 << 20


# -- strict types --------------------------------------------------------------------------------

CHAT = {"model": "code", "messages": HELLO}
COERCED = [
    ("/v1/chat/completions", {**CHAT, "max_tokens": "10"}, "max_tokens"),
    ("/v1/chat/completions", {**CHAT, "max_tokens": True}, "max_tokens"),
    ("/v1/chat/completions", {**CHAT, "max_tokens": 10.5}, "max_tokens"),
    ("/v1/chat/completions", {**CHAT, "stream": "yes"}, "stream"),
    ("/v1/chat/completions", {**CHAT, "stream": 1}, "stream"),
    ("/v1/chat/completions", {**CHAT, "temperature": "0.5"}, "temperature"),
    ("/v1/chat/completions", {**CHAT, "top_p": True}, "top_p"),
    ("/v1/chat/completions", {**CHAT, "seed": "7"}, "seed"),
    ("/v1/chat/completions", {**CHAT, "n": True}, "n"),
    ("/v1/chat/completions", {**CHAT, "stream_options": {"include_usage": "yes"}}, "include_usage"),
    ("/v1/chat/completions", {**CHAT, "model": 7}, "model"),
    ("/v1/completions", {"model": "code", "prompt": "def f():", "max_tokens": "10"}, "max_tokens"),
    ("/api/chat", {**CHAT, "stream": "yes"}, "stream"),
    ("/api/chat", {**CHAT, "options": {"num_predict": "10"}}, "num_predict"),
    ("/api/chat", {**CHAT, "options": {"temperature": False}}, "temperature"),
    ("/api/chat", {**CHAT, "keep_alive": True}, "keep_alive"),
    ("/api/generate", {"model": "code", "prompt": "hi", "stream": 0}, "stream"),
    ("/api/generate", {"model": "code", "prompt": 5}, "prompt"),
]


@pytest.mark.parametrize(("path", "body", "field"), COERCED)
def test_strings_and_booleans_are_not_taken_for_numbers(
    empty_engine: Engine, path: str, body: dict[str, Any], field: str
) -> None:
    answer = client_of(empty_engine).post(path, json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    message = error["message"] if isinstance(error, dict) else error
    assert f"'{field}" in message or f".{field}" in message, message


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {**CHAT, "temperature": 1, "top_p": 1, "max_tokens": 8, "stream": True}),
        ("/v1/chat/completions", {**CHAT, "temperature": 0.2, "stop": ["\n"], "seed": 3, "n": 1}),
        (
            "/api/chat",
            {**CHAT, "options": {"temperature": 0, "top_p": 1, "num_predict": -1}, "keep_alive": 0},
        ),
        ("/api/generate", {"model": "code", "prompt": "hi", "keep_alive": "5m", "stream": False}),
    ],
)
def test_well_typed_requests_pass_the_edge(empty_engine: Engine, path: str, body: dict[str, Any]) -> None:
    # No model here: past validation, the request finds nothing to answer it (404, or 503 for a
    # stream), but no 400.
    assert client_of(empty_engine).post(path, json=body).status_code in (404, 503)


# -- CORS preflight ------------------------------------------------------------------------------


def preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }


def test_a_local_preflight_is_answered_without_the_key(empty_engine: Engine) -> None:
    client = client_of(empty_engine, api_key="s3cret")
    answer = client.options("/v1/chat/completions", headers=preflight("http://localhost:3000"))
    assert answer.status_code in (200, 204)
    assert answer.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "authorization" in answer.headers["access-control-allow-headers"].lower()
    # What the page then sends still needs the key.
    origin = {"Origin": "http://localhost:3000"}
    assert client.post("/v1/chat/completions", json=CHAT, headers=origin).status_code == 401
    assert client.options("/v1/chat/completions", headers=origin).status_code == 401  # no preflight
    allowed = client.get("/v1/models", headers={**origin, **KEY})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"


def test_a_foreign_preflight_gets_no_allow_origin(empty_engine: Engine) -> None:
    for config in ({"api_key": "s3cret"}, {}):
        client = client_of(empty_engine, **config)
        answer = client.options("/v1/chat/completions", headers=preflight("http://evil.example"))
        assert answer.status_code >= 400
        assert "access-control-allow-origin" not in answer.headers
    foreign_host = {**preflight("http://localhost:3000"), "Host": "evil.example"}
    refused = client_of(empty_engine, api_key="s3cret").options("/v1/models", headers=foreign_host)
    assert refused.status_code == 403  # the Host check still comes first


# -- keep_alive ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["1e12", 1e12, "2562047h", "87700h", "inf", "-inf", "nan", 10 * MAX_KEEP_ALIVE_SECONDS]
)
def test_keep_alive_past_ten_years_or_not_finite_is_refused(value: str | float) -> None:
    with pytest.raises(UserInputError, match="keep_alive"):
        keep_alive_seconds(value)


def test_keep_alive_within_range_keeps_its_meaning() -> None:
    assert keep_alive_seconds(MAX_KEEP_ALIVE_SECONDS) == MAX_KEEP_ALIVE_SECONDS
    assert keep_alive_seconds("87600h") == 87600 * 3600  # ten years, as a duration
    assert keep_alive_seconds(-1) == float("inf") and keep_alive_seconds("-1e12") == float("inf")


def test_a_huge_keep_alive_is_a_400_and_ps_keeps_answering(
    cache_store: ModelStore, smollm_cpu: Manifest
) -> None:
    engine = Engine.from_settings(store=cache_store, profile="tiny", inventory=discover(), remotes=())
    with ServerThread(create_app(engine)) as server:
        body = {"model": "code", "prompt": "hi", "stream": False, "options": {"num_predict": 1}}
        assert httpx.post(f"{server.url}/api/generate", json=body, timeout=120).status_code == 200
        for value in ("1e12", 1e12, "2562047h"):
            answer = httpx.post(
                f"{server.url}/api/generate",
                json={"model": "code", "prompt": "", "keep_alive": value},
                timeout=60,
            )
            assert answer.status_code == 400 and "keep_alive" in answer.json()["error"]
        ps = httpx.get(f"{server.url}/api/ps", timeout=30)
        assert ps.status_code == 200
        assert smollm_cpu.name in {m["model"] for m in ps.json()["models"]}
