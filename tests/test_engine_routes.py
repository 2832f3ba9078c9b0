"""What the Code Mode page reads beyond the OpenAI API, on real IR (SmolLM2): the page and its
files (open without the key), the plan and measurements as data, the code checks, receipts that
verify in place, the decoding extension, and what the `npu_engine` object tells of an answer."""

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from npu_engine.engine import Engine
from npu_engine.server.app import create_app
from npu_engine.server.config import ServerConfig

LOCAL = "http://127.0.0.1"
KEY = "routes-key"
HTML = {"Accept": "text/html,application/xhtml+xml"}


@pytest.fixture(scope="module")
def client(engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine, ServerConfig(api_key=KEY)), base_url=LOCAL) as served:
        served.headers["Authorization"] = f"Bearer {KEY}"
        yield served


def chat(client: TestClient, **extension: Any) -> dict[str, Any]:
    body = {
        "model": "code",
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 8,
        "npu_engine": extension,
    }
    answered = client.post("/v1/chat/completions", json=body)
    assert answered.status_code == 200, answered.text
    found: dict[str, Any] = answered.json()
    return found


def test_a_browser_gets_the_page_and_its_files_without_the_key(client: TestClient) -> None:
    page = client.get("/", headers={**HTML, "Authorization": ""})
    assert page.status_code == 200 and "Code Mode" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for path in (
        "/page/page.js",
        "/page/page.css",
        "/page/vendor/highlight.min.js",
        "/page/vendor/purify.min.js",
    ):
        assert client.get(path, headers={"Authorization": ""}).status_code == 200, path
    # Open under /page/, but only the page's own files: no way out of its folder.
    assert client.get("/page/%2e%2e/app.py", headers={"Authorization": ""}).status_code == 404
    # The page holds nothing private; the data it shows does, behind the key.
    for path in ("/engine/plan", "/engine/measurements", "/v1/models"):
        assert client.get(path, headers={"Authorization": ""}).status_code == 401, path
    # A rebound name is still refused (the Host check comes before anything else).
    assert client.get("/", headers={**HTML, "Host": "evil.example"}).status_code == 403


def test_the_pages_own_origin_is_allowed_when_its_host_is(engine: Engine) -> None:
    config = ServerConfig(allowed_hosts=("devbox.lan",))
    with TestClient(create_app(engine, config), base_url="http://devbox.lan") as lan:
        same = lan.get("/engine/plan", headers={"Origin": "http://devbox.lan"})
        assert same.status_code == 200
        other = lan.get("/engine/plan", headers={"Origin": "http://evil.example"})
        assert other.status_code == 403


def test_the_plan_as_data(client: TestClient, engine: Engine) -> None:
    plan = client.get("/engine/plan").json()
    assert {p["tier"] for p in plan["placements"]} == {p.tier for p in engine.plan().placements}
    code = next(p for p in plan["placements"] if p["tier"] == "code")
    assert code["model"] == "smollm2-135m-instruct" and code["reason"] and isinstance(code["fallback"], list)
    assert plan["explanation"].startswith("Plan for ")
    assert "code" in plan["chat_tiers"] and "embed" not in plan["chat_tiers"]
    measured = client.get("/engine/measurements").json()["measurements"]
    assert len(measured) == len(engine.measurements)


def test_code_checks_for_a_page(client: TestClient) -> None:
    body = {
        "blocks": [{"code": "def f(:\n", "language": "python"}, {"code": "SELECT 1;", "language": "sql"}],
        "tier": "code",
        "device": "CPU",
        "backend": "openvino",
    }
    found = client.post("/engine/code-checks", json=body).json()["blocks"]
    assert found[0]["language"] == "python" and found[0]["checks"][0]["ok"] is False
    assert found[1]["checks"][0]["ok"] is True
    assert all(b["pass_at_1"] is None or 0 <= b["pass_at_1"] <= 1 for b in found)
    assert client.post("/engine/code-checks", json={"blocks": []}).status_code == 400
    too_many = {"blocks": [{"code": "x"}] * 33}
    assert client.post("/engine/code-checks", json=too_many).status_code == 400


def test_a_receipt_verifies_in_place_and_a_changed_text_does_not(client: TestClient) -> None:
    answer = chat(client, receipt=True)
    text = answer["choices"][0]["message"]["content"]
    receipt = answer["npu_engine"]["receipt"]
    good = client.post("/engine/receipts/verify", json={"receipt": receipt, "text": text}).json()
    assert good["ok"] is True and good["text_checked"] is True and good["summary"].startswith("ok: ")
    changed = client.post("/engine/receipts/verify", json={"receipt": receipt, "text": text + "!"}).json()
    assert changed == {"ok": False, "reason": "text", "message": changed["message"]}
    broken = client.post("/engine/receipts/verify", json={"receipt": {"payload": "x"}}).json()
    assert broken["ok"] is False and broken["reason"] == "malformed"


def test_the_answer_says_who_answered_how_fast_and_by_which_route(client: TestClient) -> None:
    answered = chat(client, decoding="plain")["npu_engine"]
    assert answered["decoding"] == "plain" and "receipt" not in answered
    assert answered["routing"] is None and answered["fallback"] == []
    assert answered["metrics"]["output_tokens"] >= 1 and answered["metrics"]["tokens_per_second"] > 0
    body = {
        "model": "auto",
        "messages": [{"role": "user", "content": "Write a Python function."}],
        "max_tokens": 4,
    }
    routed = client.post("/v1/chat/completions", json=body).json()["npu_engine"]
    assert routed["routing"]["tier"] == routed["tier"] and routed["routing"]["task"] == routed["route"]
    assert 0 <= routed["routing"]["confidence"] <= 1 and routed["routing"]["why"]


def test_an_unknown_decoding_mode_is_refused_naming_the_field(client: TestClient) -> None:
    body = {
        "model": "code",
        "messages": [{"role": "user", "content": "hi"}],
        "npu_engine": {"decoding": "fast"},
    }
    refused = client.post("/v1/chat/completions", json=body)
    assert refused.status_code == 400 and "npu_engine.decoding" in refused.json()["error"]["message"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "code", "max_tokens": 8}),
        ("/api/chat", {"model": "code", "stream": False, "options": {"num_predict": 8}}),
        ("/v1/messages", {"model": "code", "max_tokens": 8}),
    ],
)
def test_every_api_takes_the_decoding_mode(client: TestClient, path: str, body: dict[str, Any]) -> None:
    asked = {**body, "messages": [{"role": "user", "content": "Repeat: a b c"}]}
    answered = client.post(path, json={**asked, "npu_engine": {"decoding": "prompt_lookup"}})
    assert answered.status_code == 200, answered.text
    assert answered.json()["npu_engine"]["decoding"] == "prompt_lookup"
