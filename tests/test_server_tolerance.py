"""What real clients send that the first cut of issue 12 refused or mishandled, on real IR
(SmolLM2, MiniLM): JSON nulls for unset fields (litellm's embeddings send `"encoding_format":
null`), the ollama CLI's `HEAD /` heartbeat, a JSON body without its Content-Type on the OpenAI
routes, browser SDK headers in a CORS preflight, `GET /v1/models/{id}`, Ollama `format` with `raw`
or a `template`, an infill at the top of a file, `format` as a schema annotation, non-capturing
groups in a pattern, and a schema the grammar backend refuses in the middle of a batch."""

import json
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest
from fastapi.testclient import TestClient

from npu_engine.backends.batching import BatchingPipeline
from npu_engine.backends.pipeline_spec import BatchingLimits, PipelineSpec
from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.errors import UserInputError
from npu_engine.generation import SamplingOptions
from npu_engine.json_schema import check_schema
from npu_engine.manifest import Manifest
from npu_engine.response_format import ResponseFormat
from npu_engine.server.app import create_app
from npu_engine.server.config import ServerConfig
from npu_engine.store import ModelStore
from tests.test_server import LOCAL

HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def client(cache_store: ModelStore, smollm_cpu: Manifest, minilm_cpu: Manifest) -> Iterator[TestClient]:
    engine = Engine.from_settings(store=cache_store, profile="tiny", inventory=discover(), remotes=())
    app = create_app(engine, ServerConfig(api_key="s3cret"))
    with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as served:
        served.headers["Authorization"] = "Bearer s3cret"
        yield served


def test_a_json_null_is_an_unset_field(client: TestClient) -> None:
    embedded = client.post("/v1/embeddings", json={"model": "embed", "input": "x", "encoding_format": None})
    assert embedded.status_code == 200 and len(embedded.json()["data"][0]["embedding"]) == 384
    body = {"model": "code", "messages": HELLO, "max_tokens": 2, "n": None, "stream": None, "seed": None}
    chatted = client.post("/v1/chat/completions", json=body)
    assert chatted.status_code == 200 and len(chatted.json()["choices"]) == 1
    # A null where a value is required is still refused, naming the field.
    missing = client.post("/v1/chat/completions", json={"model": "code", "messages": None})
    assert missing.status_code == 400 and "messages" in missing.json()["error"]["message"]


def test_the_ollama_cli_heartbeat_is_answered(client: TestClient) -> None:
    for method in ("HEAD", "GET"):
        assert client.request(method, "/").status_code == 200, method
    assert client.get("/").text == "npu-engine is running"
    # Open without the key, as the Code Mode page served there is (it holds nothing private; its
    # API calls carry the key); the API itself still asks for it.
    assert client.get("/", headers={"Authorization": ""}).text == "npu-engine is running"
    assert client.get("/v1/models", headers={"Authorization": ""}).status_code == 401


def test_a_json_body_without_its_content_type_is_told_so_on_the_openai_routes(client: TestClient) -> None:
    body = json.dumps({"model": "code", "messages": HELLO, "max_tokens": 2})
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for path in ("/v1/chat/completions", "/v1/messages"):
        refused = client.post(path, content=body, headers=form)
        assert refused.status_code == 400
        assert "Content-Type: application/json" in refused.text, refused.text
    # The Ollama routes read it as JSON, as Ollama does.
    ollama = {"model": "code", "messages": HELLO, "stream": False, "options": {"num_predict": 2}}
    assert client.post("/api/chat", content=json.dumps(ollama), headers=form).status_code == 200


def test_a_local_pages_sdk_headers_pass_the_preflight(client: TestClient) -> None:
    asked = "content-type,authorization,x-stainless-os,x-stainless-lang,x-stainless-retry-count"
    preflight = client.options(
        "/v1/chat/completions",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": asked,
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
    foreign = client.options(
        "/v1/chat/completions",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert foreign.status_code == 403


def test_one_model_is_retrieved_by_its_id(client: TestClient) -> None:
    listed = {entry["id"]: entry for entry in client.get("/v1/models").json()["data"]}
    got = client.get("/v1/models/code")
    assert got.status_code == 200 and got.json() == {**listed["code"], "created": got.json()["created"]}
    missing = client.get("/v1/models/gpt-9")
    assert missing.status_code == 404 and missing.json()["error"]["message"].startswith("model 'gpt-9'")


def test_ollama_format_holds_raw_and_templated_prompts(client: TestClient) -> None:
    shape = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    for extra in ({"raw": True}, {"template": "{{ .Prompt }}"}):
        body: dict[str, Any] = {
            "model": "code",
            "prompt": 'Answer with {"ok": true}:',
            "format": shape,
            "stream": False,
            "options": {"num_predict": 24},
            **extra,
        }
        answered = client.post("/api/generate", json=body)
        assert answered.status_code == 200, answered.text
        assert jsonschema_rs.is_valid(shape, json.loads(answered.json()["response"]))


def test_an_infill_at_the_top_of_a_file_reaches_the_suffix_check(client: TestClient) -> None:
    # SmolLM2 cannot infill: the empty prompt passes the edge and the suffix is what is refused.
    refused = client.post("/v1/completions", json={"model": "code", "prompt": "", "suffix": "x = 1\n"})
    assert refused.status_code == 400 and refused.json()["error"]["message"].startswith("suffix")
    empty = client.post("/v1/completions", json={"model": "code", "prompt": ""})
    assert empty.status_code == 400 and "prompt must not be empty" in empty.json()["error"]["message"]


def test_format_is_an_annotation_and_non_capturing_groups_are_enforced() -> None:
    # Claude Code declares `"format": "uri"`; pydantic writes "date-time": taken, not enforced.
    check_schema({"type": "object", "properties": {"url": {"type": "string", "format": "uri"}}}, "tools")
    check_schema({"type": "string", "pattern": "^(?:ab)+$"}, "format")
    with pytest.raises(UserInputError, match=r"uses '\(\?='"):
        check_schema({"type": "string", "pattern": "^(?=a)a+$"}, "format")


def test_a_schema_the_grammar_refuses_mid_batch_is_the_requests_error_and_the_pipeline_recovers(
    cache_store: ModelStore, smollm_cpu: Manifest
) -> None:
    limits = BatchingLimits(max_sequences=2)
    spec = PipelineSpec(model_path=cache_store.checked_path(smollm_cpu), device="CPU", batching=limits)
    pipeline = BatchingPipeline(spec, limits)
    # Past the engine's own schema check (which refuses lookaround), as a schema it does not know
    # to refuse would be: the grammar backend fails the batch's step.
    lookahead = {"type": "object", "properties": {"a": {"type": "string", "pattern": "^(?=a)a+$"}}}
    with pytest.raises(UserInputError, match="constrained decoding"):
        pipeline.generate(
            HELLO, SamplingOptions(max_new_tokens=8), constraint=ResponseFormat("json_schema", lookahead)
        )
    after = pipeline.generate(HELLO, SamplingOptions(max_new_tokens=8))
    assert after.text and after.metrics.output_tokens > 0 and pipeline.reopened == 1


def test_show_names_tools_for_tool_callers_and_ps_gives_an_embedder_its_context(client: TestClient) -> None:
    # litellm decides whether an Ollama model calls tools by looking for "tools" in its template.
    assert ".Tools" in client.post("/api/show", json={"model": "code"}).json()["template"]
    assert client.post("/api/show", json={"model": "embed"}).json()["template"] == ""
    assert client.post("/api/embed", json={"model": "embed", "input": "x"}).status_code == 200
    [embedder] = [m for m in client.get("/api/ps").json()["models"] if m["decoding"] == "embed"]
    assert embedder["context_length"] == 256
