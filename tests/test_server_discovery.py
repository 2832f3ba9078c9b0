"""What editors read before they send a prompt, on a real server over SmolLM2: Copilot Chat's Ollama
discovery replayed as its client does it, /api/show's model_info and capabilities, the context in
/api/ps and /v1/models; and the protocol's tolerance: Ollama bodies without a JSON Content-Type,
and every route refusing a foreign Origin before any work."""

import httpx
import ollama
import openai
import pytest

from npu_engine.engine import Engine
from npu_engine.manifest import Manifest
from tests.test_server import ServerThread, local_client

HELLO = [{"role": "user", "content": "Say hello."}]
COPILOT_MINIMUM = "0.6.4"  # vscode-copilot-chat, src/extension/byok/vscode-node/ollamaProvider.ts


def copilot_version_supported(version: str) -> bool:
    """Copilot Chat's `_isVersionSupported`, as it is written there."""
    if version == "0.0.0":
        return True
    current = [int(n) for n in version.split(".")]
    minimum = [int(n) for n in COPILOT_MINIMUM.split(".")]
    for i in range(max(len(current), len(minimum))):
        c = current[i] if i < len(current) else 0
        m = minimum[i] if i < len(minimum) else 0
        if c != m:
            return c > m
    return True


def test_copilot_chat_byok_discovery_finds_a_context_budget_and_tools(
    served: ServerThread, engine: Engine
) -> None:
    """Copilot Chat's Ollama provider: GET /api/version (>= 0.6.4), GET /api/tags, then POST
    /api/show {"model": tags[i].model} per model; the budget is model_info["<arch>.context_length"]
    (32768 when absent: so it must be there), minus up to 4096 for the answer; tools from
    `capabilities`; chat then goes to /v1/chat/completions."""
    with httpx.Client(base_url=served.url, timeout=120) as http:
        version = http.get("/api/version").json()["version"]
        assert copilot_version_supported(version)
        models = http.get("/api/tags").json()["models"]
        assert {m["model"] for m in models} >= {"auto", "fast", "code", "large", "review"}
        seen = {}
        for model in models:
            shown = http.post(
                "/api/show", headers={"Content-Type": "application/json"}, json={"model": model["model"]}
            ).json()
            info = shown["model_info"]
            context = info[f"{info['general.architecture']}.context_length"]
            output = context // 2 if context < 4096 else 4096
            assert context > 0 and info["general.basename"]
            seen[model["model"]] = (context, context - output, "tools" in shown["capabilities"])
        tiers = engine.tiers()
        for tier, spec in tiers.items():
            context = min(spec.context, 8192)  # SmolLM2 is trained for 8192; it calls tools by prompt
            # Copilot keeps 4096 for the answer, so a 4096-token tier leaves no room for a prompt
            # (the README says to pick a larger one); the 8192-token tiers leave 4096.
            assert seen[tier] == (context, 4096 if context == 8192 else 0, True)
        assert seen["auto"][0] == min(spec.context for spec in tiers.values())
        assert seen["code"][1] > 0
        reply = http.post("/v1/chat/completions", json={"model": "code", "messages": HELLO, "max_tokens": 4})
        assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"]


def test_show_ps_and_models_carry_the_context(served: ServerThread, smollm_cpu: Manifest) -> None:
    with httpx.Client(base_url=served.url, timeout=120) as http:
        shown = http.post("/api/show", json={"model": smollm_cpu.name}).json()
        info = shown["model_info"]
        assert info["general.architecture"] == "llama" == smollm_cpu.architecture
        assert info["general.basename"] == "SmolLM2-135M-Instruct"
        assert info["general.parameter_count"] == smollm_cpu.parameters
        assert info["llama.embedding_length"] == 576  # SmolLM2-135M's hidden size
        assert info["llama.context_length"] == 8192 and info["npu_engine.model_context_length"] == 8192
        assert info["npu_engine.tier"] == "code" and info["npu_engine.converted"] is True
        assert shown["capabilities"] == ["completion", "tools"]  # SmolLM2 does not infill or reason
        fast = http.post("/api/show", json={"model": "fast"}).json()["model_info"]
        assert fast["llama.context_length"] == 4096  # the tier's planned context, under the model's
        version = http.get("/api/version").json()
        assert version["npu_engine"] == http.get("/health").json()["version"] != version["version"]
        http.post(
            "/api/generate",
            json={"model": "fast", "prompt": "hi", "stream": False, "options": {"num_predict": 2}},
        )
        loaded = http.get("/api/ps").json()["models"]
        assert loaded and all(m["context_length"] == 8192 for m in loaded if m["device"] == "CPU")
        listed = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
        assert listed["fast"]["context_length"] == listed["fast"]["max_model_len"] == 4096
        assert listed["code"]["context_length"] == 8192 and listed["auto"]["context_length"] == 4096


def test_ollama_routes_take_json_whatever_its_content_type(served: ServerThread) -> None:
    """As Ollama does: litellm's Ollama providers send no Content-Type, `curl -d` sends a form's."""
    body = b'{"model": "fast", "prompt": "hi", "stream": false, "options": {"num_predict": 2}}'
    with httpx.Client(base_url=served.url, timeout=120) as http:
        for content_type in (None, "application/x-www-form-urlencoded", "text/plain"):
            headers = {"Content-Type": content_type} if content_type else {}
            reply = http.post("/api/generate", content=body, headers=headers)
            assert reply.status_code == 200, (content_type, reply.text)
            assert reply.json()["done"] is True
        shown = http.post("/api/show", content=b'{"model": "code"}', headers={"Content-Type": "text/plain"})
        assert shown.status_code == 200
        broken = http.post(
            "/api/chat", content=b"model=fast&prompt=hi", headers={"Content-Type": "text/plain"}
        )
        assert broken.status_code == 400 and broken.json() == {"error": "the request body is not valid JSON"}


def test_a_foreign_origin_is_refused_on_every_route_before_any_work(engine: Engine) -> None:
    client = local_client(engine)
    evil = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
    # A "simple" cross-site POST, which a browser sends without a preflight: refused, not answered.
    drive_by = client.post(
        "/api/generate", content=b'{"model": "no-such-model", "prompt": "hi"}', headers=evil
    )
    assert drive_by.status_code == 403 and "Origin" in drive_by.json()["error"]
    routes = [(path, method) for path, ops in client.app.openapi()["paths"].items() for method in ops]  # type: ignore[attr-defined]
    routes += [("/openapi.json", "get"), ("/docs", "get")]
    assert len(routes) >= 14 and ("/v1/messages", "post") in routes
    for path, method in routes:
        assert client.request(method.upper(), path, headers=evil).status_code == 403, path
    assert client.get("/health", headers={"Origin": "null"}).status_code == 403
    preflight = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    assert client.options("/api/chat", headers=preflight).status_code == 403
    assert client.get("/api/tags", headers={"Origin": "http://127.0.0.1:5173"}).status_code == 200
    named = local_client(engine, allowed_origins=("https://app.example",))
    assert named.get("/api/tags", headers={"Origin": "https://app.example"}).status_code == 200
    assert named.get("/api/tags", headers={"Origin": "http://localhost:3000"}).status_code == 403
    messages = client.post("/v1/messages", headers=evil, content=b"{}")
    assert messages.json()["type"] == "error" and messages.json()["error"]["type"] == "permission_error"


def test_n_choices_and_logprobs_on_the_openai_api(served: ServerThread) -> None:
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0, timeout=120)
    greedy = client.chat.completions.create(model="code", messages=HELLO, max_tokens=6, n=3)  # type: ignore[arg-type]
    texts = [c.message.content for c in greedy.choices]
    assert [c.index for c in greedy.choices] == [0, 1, 2] and texts[0] and len(set(texts)) == 1
    one = client.chat.completions.create(model="code", messages=HELLO, max_tokens=6)  # type: ignore[arg-type]
    assert greedy.usage is not None and one.usage is not None
    assert greedy.usage.completion_tokens == 3 * one.usage.completion_tokens
    assert greedy.usage.prompt_tokens == one.usage.prompt_tokens

    def sampled() -> list[str | None]:
        reply = client.chat.completions.create(
            model="code",
            messages=HELLO,
            max_tokens=12,
            n=3,
            temperature=1.0,
            seed=7,  # type: ignore[arg-type]
        )
        return [c.message.content for c in reply.choices]

    first = sampled()
    assert len(set(first)) > 1 and sampled() == first  # seeds 7, 8, 9: different, and repeatable
    completions = client.completions.create(model="code", prompt="def add(a, b):", max_tokens=4, n=2)
    assert [c.index for c in completions.choices] == [0, 1]
    with httpx.Client(base_url=served.url, timeout=120) as http:
        for body, field in (
            ({"n": 5}, "'n'"),
            ({"n": 2, "stream": True}, "n > 1"),
            ({"logprobs": True}, "logprobs"),
            ({"top_logprobs": 2}, "logprobs"),
        ):
            refused = http.post("/v1/chat/completions", json={"model": "code", "messages": HELLO, **body})
            assert refused.status_code == 400 and field in refused.json()["error"]["message"], body


def test_think_and_num_ctx_on_the_ollama_api(served: ServerThread) -> None:
    client = ollama.Client(host=served.url, timeout=120)
    thought = client.chat(model="code", messages=HELLO, think=True, options={"num_predict": 4})
    assert thought.message.content and thought.message.thinking is None
    with httpx.Client(base_url=served.url, timeout=120) as http:
        body = {
            "model": "code",
            "messages": HELLO,
            "stream": False,
            "think": True,
            "options": {"num_predict": 4},
        }
        said = http.post("/api/chat", json=body).json()["npu_engine"]
        assert said["think"] == "ignored: smollm2-135m-instruct does not reason"
        capped = {**body, "options": {"num_predict": 4, "num_ctx": 2048}}
        assert http.post("/api/chat", json=capped).json()["npu_engine"]["num_ctx"] == 2048
        # What applies, not what was asked: the tiny profile's code tier plans 8192 tokens.
        above = {**body, "options": {"num_predict": 4, "num_ctx": 32768}}
        assert http.post("/api/chat", json=above).json()["npu_engine"]["num_ctx"] == 8192
        long = [{"role": "user", "content": "Please say hello to every one of my friends. " * 8}]
        tight = http.post(
            "/api/chat", json={"model": "code", "messages": long, "stream": False, "options": {"num_ctx": 32}}
        )
        assert tight.status_code == 400 and "at most 32" in tight.json()["error"], tight.text
    with pytest.raises(ollama.ResponseError, match="at most 32"):
        client.generate(model="code", prompt="hello " * 40, options={"num_ctx": 32})
