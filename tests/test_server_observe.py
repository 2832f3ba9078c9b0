"""A server that shows what it does, on real IR (SmolLM2): one access-log line per request (answers,
4xx and the guard's refusals; the prompt only with --log-prompts, escaped), `/metrics` in
Prometheus's text format beside the JSON of `/metrics.json`, and `/docs` served from the package
with nothing from another origin."""

import json
import logging
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.manifest import Manifest
from npu_engine.server.access_log import ACCESS_LOGGER, PROMPT_CHARS, AccessLog, AccessRecord
from npu_engine.server.app import create_app
from npu_engine.server.metrics import UNMATCHED
from npu_engine.server.page_routes import PAGE_POLICY
from npu_engine.store import ModelStore
from tests.test_server import LOCAL, free_port, local_client, wait_until_serving

# A prompt that tries to forge a log line of its own, with text that must not reach the log.
FORGING = "Say hello.\nid=0 method=GET route=/health status=200\r\u2028SECRET-4711"
CHAT = {"model": "code", "messages": [{"role": "user", "content": FORGING}], "max_tokens": 4}
_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def fields(line: str) -> dict[str, Any]:
    """An access-log line's key=value fields, quoted values read as the JSON strings they are."""
    assert "\n" not in line and "\r" not in line and "\u2028" not in line
    found = {
        key: json.loads(value) if value.startswith('"') else value for key, value in _FIELD.findall(line)
    }
    # Every character of the line is in a field: nothing could hide between them.
    assert " ".join(f"{key}={value}" for key, value in _FIELD.findall(line)) == line
    return found


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [fields(r.getMessage()) for r in caplog.records if r.name == ACCESS_LOGGER]


def line_of(lines: list[dict[str, Any]], response: httpx.Response) -> dict[str, Any]:
    [line] = [one for one in lines if one["id"] == response.headers["x-request-id"]]
    return line


# -- the access log ------------------------------------------------------------------------------


def test_one_access_line_per_request_with_who_answered(
    engine: Engine, smollm_cpu: Manifest, caplog: pytest.LogCaptureFixture
) -> None:
    client = local_client(engine, max_body_bytes=4096)
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        answered = client.post("/v1/chat/completions", json=CHAT)
        streamed = client.post(
            "/api/chat",
            json={"model": "code", "messages": CHAT["messages"], "options": {"num_predict": 3}},
        )
        unknown = client.post("/api/chat", json={"model": "mystery", "messages": CHAT["messages"]})
        foreign = client.get("/api/tags", headers={"Host": "evil.example"})
        too_big = client.post("/v1/chat/completions", content=b"x" * 5000)
        made_up = client.get("/made-up%0Aid=forged")
    lines = access_lines(caplog)
    assert len(lines) == 6  # one each, refusals included

    assert answered.status_code == 200
    line = line_of(lines, answered)
    assert (line["method"], line["route"], line["status"]) == ("POST", "/v1/chat/completions", "200")
    assert (line["model"], line["tier"], line["device"]) == (smollm_cpu.name, "code", "CPU")
    assert line["backend"] == answered.json()["npu_engine"]["backend"]
    assert int(line["tokens"]) == answered.json()["usage"]["completion_tokens"] > 0
    assert int(line["ms"]) >= 0

    # Ollama's chat streams by default: the line is written when the stream ends, with its tokens.
    assert streamed.status_code == 200
    last = json.loads(streamed.text.strip().splitlines()[-1])
    line = line_of(lines, streamed)
    assert (line["route"], line["device"], int(line["tokens"])) == ("/api/chat", "CPU", last["eval_count"])

    line = line_of(lines, unknown)
    assert (line["route"], line["status"], line["model"], line["tokens"]) == ("/api/chat", "404", "-", "-")
    assert (line_of(lines, foreign)["status"], line_of(lines, foreign)["route"]) == ("403", "/api/tags")
    assert line_of(lines, too_big)["status"] == "413"
    line = line_of(lines, made_up)
    assert (line["route"], line["status"], line["path"]) == (UNMATCHED, "404", "/made-up\nid=forged")

    assert "prompt" not in caplog.text and "SECRET" not in caplog.text and "Say hello" not in caplog.text


def test_log_prompts_shows_the_prompt_escaped(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    client = local_client(engine, log_prompts=True)
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        answered = client.post("/v1/chat/completions", json=CHAT)
    assert answered.status_code == 200
    [message] = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER]
    line = fields(message)  # one line: the newline, carriage return and line separator are escaped
    assert line["prompt"] == FORGING and int(line["prompt_chars"]) == len(FORGING)
    assert line["status"] == "200" and line["id"] == answered.headers["x-request-id"]
    assert "\\n" in message and "\\r" in message and "\\u2028" in message


def test_an_access_line_is_bounded_and_cannot_be_forged() -> None:
    record = AccessRecord("abc", "GET", "/x\r\nroute=/health status=200 " + "y" * 1000)
    record.prompt = "line one\nline two " * 100
    record.model = 'evil model" status=200'
    text = AccessLog(logging.getLogger(ACCESS_LOGGER), log_prompts=True).line(record, 12.4)
    line = fields(text)
    assert (line["route"], line["status"], line["ms"], line["model"]) == (UNMATCHED, "0", "12", record.model)
    assert line["prompt"] == record.prompt[:PROMPT_CHARS] and int(line["prompt_chars"]) == len(record.prompt)
    assert len(text) < 1500
    assert "prompt" not in AccessLog(logging.getLogger(ACCESS_LOGGER)).line(record, 1)


def test_serve_writes_the_access_log_to_stderr_without_verbose(
    cache_store: ModelStore, smollm_cpu: Manifest, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    os.symlink(cache_store.path(smollm_cpu.name), home / "models" / smollm_cpu.name)
    port = free_port()
    command = [sys.executable, "-m", "npu_engine.engine_cli", "serve", "--profile", "tiny"]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--log-prompts"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NPU_ENGINE_HOME": str(home), "NPU_ENGINE_API_KEY": ""},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process, 120)
        answered = httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "max_tokens": 2}, timeout=120)
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=30)
    assert answered.status_code == 200
    [message] = [
        line.removeprefix(f"{ACCESS_LOGGER}: ")
        for line in errors.splitlines()
        if answered.headers["x-request-id"] in line
    ]
    assert fields(message)["prompt"] == FORGING
    assert any("route=/health status=200" in line for line in errors.splitlines())


# -- /metrics and /metrics.json ------------------------------------------------------------------


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def requests(route: str, status: int) -> tuple[str, frozenset[tuple[str, str]]]:
    """The key of a request counter's sample in Samples."""
    return ("npu_engine_http_requests_total", frozenset({("route", route), ("status", str(status))}))


def samples(client: TestClient) -> Samples:
    """Every sample of /metrics, by name and labels, read with Prometheus's own parser."""
    exposed = client.get("/metrics")
    assert exposed.status_code == 200 and exposed.headers["content-type"] == CONTENT_TYPE_LATEST
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposed.text)
        for sample in family.samples
    }


def test_metrics_in_prometheus_format_count_requests_and_answers(
    engine: Engine, smollm_cpu: Manifest
) -> None:
    client = local_client(engine)
    before = samples(client)
    tags = requests("/api/tags", 200)
    assert before.get(tags, 0) == 0  # a registry of each app's own: nothing counted elsewhere
    for _ in range(2):
        assert client.get("/api/tags").status_code == 200
    answered = client.post("/v1/chat/completions", json=CHAT)
    assert client.get("/v1/made-up/123").status_code == 404
    after = samples(client)

    assert after[tags] == 2
    assert after[requests("/v1/chat/completions", 200)] == 1
    assert after[requests(UNMATCHED, 404)] == 1
    routes = {dict(labels).get("route") for _, labels in after}
    assert not any(route and route.startswith("/v1/made-up") for route in routes)
    timed = frozenset({("route", "/v1/chat/completions")})
    assert after[("npu_engine_http_request_duration_seconds_count", timed)] == 1
    assert after[("npu_engine_http_request_duration_seconds_sum", timed)] > 0

    backend = answered.json()["npu_engine"]["backend"]
    by = frozenset({("device", "CPU"), ("tier", "code"), ("backend", backend)})
    assert after[("npu_engine_answers_total", by)] == before.get(("npu_engine_answers_total", by), 0) + 1
    tokens = answered.json()["usage"]["completion_tokens"]
    assert after[("npu_engine_output_tokens_total", by)] == tokens
    assert after[("npu_engine_first_token_seconds_count", by)] == 1
    assert after[("npu_engine_queue_depth", frozenset())] == 0
    loaded = {dict(labels)["model"] for name, labels in after if name == "npu_engine_loaded_pipeline"}
    assert smollm_cpu.name in loaded


def test_metrics_json_keeps_its_fields(engine: Engine) -> None:
    client = local_client(engine)
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    data = client.get("/metrics.json").json()
    assert {"requests", "requests_total", "devices", "queue_depth", "loaded"} <= data.keys()
    assert {"path": "/v1/chat/completions", "status": 200, "count": 1} in data["requests"]
    assert data["devices"]["CPU"]["answers"] == 1 and data["devices"]["CPU"]["output_tokens"] > 0
    assert {"model", "device", "decoding", "backend"} <= data["loaded"][0].keys()


# -- /docs ---------------------------------------------------------------------------------------


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def test_docs_load_only_from_this_server(engine: Engine) -> None:
    client = local_client(engine)
    docs = client.get("/docs")
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    assert docs.headers["content-security-policy"] == PAGE_POLICY  # no inline script, no CDN
    assert "http://" not in docs.text and "https://" not in docs.text
    references = _References()
    references.feed(docs.text)
    assets = [url for url in references.urls if not url.startswith("data:")]
    assert len(assets) == 3 and all(not urlsplit(url).netloc for url in assets)
    kinds = {".js": ("text/javascript", "application/javascript"), ".css": ("text/css",)}
    for url in assets:
        served = client.get(url)
        assert served.status_code == 200, url
        assert served.headers["content-type"].startswith(kinds[Path(url).suffix]), url
    assert "SwaggerUIBundle" in client.get("/page/docs.js").text
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/redoc").status_code == 404  # ReDoc would load from a CDN: not served


def test_the_docs_page_opens_without_the_key_and_its_document_needs_it(engine: Engine) -> None:
    # A browser cannot send a Bearer header for a typed URL: the page opens, then asks for the key
    # (docs.js) before it fetches the document, which stays keyed like every call.
    client = local_client(engine, api_key="s3cret")
    assert client.get("/docs").status_code == 200 and client.get("/openapi.json").status_code == 401
    assert client.get("/page/vendor/swagger-ui-bundle.js").status_code == 200
    keyed = client.get("/openapi.json", headers={"Authorization": "Bearer s3cret"})
    assert keyed.status_code == 200 and "/v1/chat/completions" in keyed.json()["paths"]


def test_an_internal_error_answers_500_with_a_request_id_and_no_paths_logged_and_counted(
    cache_store: ModelStore, smollm_cpu: Manifest, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_factory(spec: object) -> object:
        raise KeyError("/secret/models/openvino_model.xml")

    engine = Engine.from_settings(
        store=cache_store, profile="tiny", inventory=discover(), remotes=(), pipeline_factory=broken_factory
    )
    client = TestClient(create_app(engine), base_url=LOCAL, raise_server_exceptions=False)
    caplog.set_level(logging.ERROR, logger="npu_engine.server")
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        failed = client.post("/api/chat", json={**CHAT, "stream": False})
    assert failed.status_code == 500
    body = failed.text
    assert "request id" in body and "/secret" not in body and "Traceback" not in body
    assert failed.headers["x-request-id"] in body
    assert "/secret/models" in caplog.text  # the server's log has the detail
    line = line_of(access_lines(caplog), failed)
    assert (line["route"], line["status"]) == ("/api/chat", "500")
    assert samples(client)[requests("/api/chat", 500)] == 1
