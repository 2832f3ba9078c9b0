"""Raw completion on real IR (SmolLM2, `tiny` profile), with the official `openai` and `ollama`
clients unchanged against a server on 127.0.0.1: `/v1/completions` and `/api/generate` complete
the prompt as given, compared with OpenVINO GenAI's own raw generate; Ollama's `raw`, `system`,
`template` and `context`; `/api/show`'s template, parameters and capabilities; and the 400s for a
`suffix` SmolLM2 cannot fill and for a template beyond what is understood."""

from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import openai
import pytest

from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.manifest import Manifest
from npu_engine.server.app import create_app
from npu_engine.server.config import ServerConfig
from npu_engine.store import ModelStore
from tests.test_server import ServerThread

CODE = "def fibonacci(n):\n"
TOKENS = 12


@pytest.fixture(scope="module")
def engine(cache_store: ModelStore, smollm_cpu: Manifest) -> Engine:
    return Engine.from_settings(store=cache_store, profile="tiny", inventory=discover(), remotes=())


@pytest.fixture(scope="module")
def served(engine: Engine) -> Iterator[ServerThread]:
    with ServerThread(create_app(engine, ServerConfig())) as server:
        yield server


@pytest.fixture(scope="module")
def raw_generate(cache_store: ModelStore, smollm_cpu: Manifest) -> Any:
    """OpenVINO GenAI's own greedy generate of a text as it is (no chat template): the reference."""
    import openvino_genai

    pipeline = openvino_genai.LLMPipeline(str(cache_store.path(smollm_cpu.name)), "CPU")

    def generate(text: str, tokens: int = TOKENS) -> str:
        config = openvino_genai.GenerationConfig(max_new_tokens=tokens)
        config.apply_chat_template = False
        return str(pipeline.generate([text], config).texts[0])

    return generate


def test_openai_completions_continue_the_prompt_as_given(served: ServerThread, raw_generate: Any) -> None:
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)
    completion = client.completions.create(model="code", prompt=CODE, max_tokens=TOKENS)
    expected = raw_generate(CODE)
    assert completion.choices[0].text == expected
    assert completion.choices[0].finish_reason == "length" and completion.usage is not None
    assert completion.usage.completion_tokens == TOKENS
    chat = client.chat.completions.create(
        model="code", messages=[{"role": "user", "content": CODE}], max_tokens=TOKENS
    )
    assert chat.choices[0].message.content != expected  # the chat template made the difference
    streamed = client.completions.create(model="code", prompt=CODE, max_tokens=TOKENS, stream=True)
    chunks = list(streamed)
    assert all(c.object == "text_completion" for c in chunks) and len(chunks) > 2
    assert "".join(c.choices[0].text for c in chunks) == expected
    routed = client.completions.create(model="auto", prompt=CODE, max_tokens=TOKENS)
    assert routed.choices[0].text == expected
    assert routed.model_extra and routed.model_extra["npu_engine"]["route"] == "snippet"


def test_a_suffix_for_a_model_without_fim_tokens_is_a_400_naming_suffix(served: ServerThread) -> None:
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model="code", prompt="def f(", suffix=")\n", max_tokens=4)
    assert "400 - suffix: smollm2-135m-instruct" in str(refused.value)
    with pytest.raises(ollama.ResponseError) as ollama_refused:
        ollama.Client(host=served.url).generate(model="code", prompt="def f(", suffix=")\n", raw=True)
    assert ollama_refused.value.status_code == 400 and "suffix" in ollama_refused.value.error


def test_ollama_generate_raw_system_and_template(
    served: ServerThread, engine: Engine, raw_generate: Any
) -> None:
    client = ollama.Client(host=served.url)
    options = {"num_predict": TOKENS}
    raw = client.generate(model="code", prompt=CODE, raw=True, options=options)
    assert raw.response == raw_generate(CODE) and raw.done and raw.context is None
    ignored = client.generate(
        model="code", prompt=CODE, raw=True, system="Talk like a pirate.", options=options
    )
    assert ignored.response == raw.response  # raw: no template, so no system prompt either
    streamed = list(client.generate(model="code", prompt=CODE, raw=True, options=options, stream=True))
    assert "".join(part.response for part in streamed) == raw.response and streamed[-1].done

    system = "Answer in one word."
    asked = client.generate(
        model="code", prompt="What is the capital of France?", system=system, options=options
    )
    chat = engine.generate(
        [
            {"role": "system", "content": system},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        max_new_tokens=TOKENS,
    )
    assert asked.response == chat.text

    template = "{{ if .System }}{{ .System }}\n{{ end }}Question: {{ .Prompt }}\nAnswer:"
    templated = client.generate(
        model="code", prompt="2+2?", system="Be exact.", template=template, options=options
    )
    assert templated.response == raw_generate("Be exact.\nQuestion: 2+2?\nAnswer:")


def test_ollama_context_continues_the_conversation(served: ServerThread, engine: Engine) -> None:
    client = ollama.Client(host=served.url)
    options = {"num_predict": TOKENS}
    first = client.generate(model="code", prompt="Name a colour.", options=options)
    assert first.context
    second = client.generate(model="code", prompt="Another one?", context=first.context, options=options)
    conversation = [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": first.response},
        {"role": "user", "content": "Another one?"},
    ]
    assert second.response == engine.generate(conversation, max_new_tokens=TOKENS).text
    streamed = list(
        client.generate(
            model="code", prompt="Another one?", context=first.context, options=options, stream=True
        )
    )
    assert streamed[-1].context == second.context and len(second.context or []) > len(first.context)
    with pytest.raises(ollama.ResponseError) as refused:
        client.generate(model="code", prompt="Hi", context=[1, 2, 3])
    assert refused.value.status_code == 400 and refused.value.error.startswith("context ")


@pytest.mark.parametrize("template", ["{{ .Messages }}", "{{ if .System }}x", "{{ range .Tools }}{{ end }}"])
def test_a_template_beyond_what_is_understood_is_a_400_naming_template(
    served: ServerThread, template: str
) -> None:
    answer = httpx.post(
        f"{served.url}/api/generate", json={"model": "code", "prompt": "hi", "template": template}, timeout=30
    )
    assert answer.status_code == 400 and answer.json()["error"].startswith("template: ")


def test_show_gives_template_parameters_and_capabilities(served: ServerThread, smollm_cpu: Manifest) -> None:
    shown = ollama.Client(host=served.url).show("code")
    assert shown.template and ".Suffix" not in shown.template and ".Prompt" in shown.template
    assert shown.capabilities and "insert" not in shown.capabilities  # SmolLM2 cannot infill
    lines = dict(line.split(None, 1) for line in (shown.parameters or "").splitlines())
    assert lines["num_ctx"] == "8192" and lines["stop"] == '"<|im_end|>"'


def test_show_of_an_infill_model_turns_continue_fim_on(cache_store: ModelStore) -> None:
    """No Qwen model is loaded (or needed): /api/show reads the catalog's families."""
    engine = Engine.from_settings(store=cache_store, profile="embedded", inventory=discover(), remotes=())
    with ServerThread(create_app(engine, ServerConfig())) as server:
        body = httpx.post(f"{server.url}/api/show", json={"name": "code"}, timeout=30).json()
    assert ".Suffix" in body["template"]  # what Continue checks to enable fill-in-the-middle
    assert "insert" in body["capabilities"]
    stops = [line.split(None, 1)[1] for line in body["parameters"].splitlines() if line.startswith("stop")]
    assert '"<|fim_pad|>"' in stops and '"<|im_end|>"' in stops


def test_raw_completion_in_every_decoding_mode(engine: Engine, raw_generate: Any) -> None:
    """Prompt lookup and speculative decoding (the tiny profile's `large` tier drafts with
    SmolLM2 itself) give the plain raw answer."""
    expected = raw_generate(CODE)
    for tier, decoding in (("code", "plain"), ("code", "prompt_lookup"), ("large", "speculative")):
        result = engine.complete(CODE, tier=tier, max_new_tokens=TOKENS, decoding=decoding)
        assert (result.text, result.decoding) == (expected, decoding)


@pytest.mark.slow
def test_raw_completion_on_the_npu(cache_store: ModelStore, smollm_npu: Manifest) -> None:
    """The NPU path (NPUW on the CPU here: correctness only) takes raw prompts too."""
    npu = Engine.from_settings(
        store=cache_store, profile="tiny", inventory=discover(), remotes=(), emulate_npu=True
    )
    on_npu = npu.complete(CODE, max_new_tokens=TOKENS)
    assert on_npu.device == "NPU (emulated on CPU)" and on_npu.text and on_npu.metrics.output_tokens == TOKENS
