"""llama.cpp as the engine's other CPU backend: the source GGUF of a conversion, run by
llama-cpp-python, chosen per request by the device profile's measured speeds; prefix reuse that
keeps greedy answers identical. Real runtimes on SmolLM2-135M (and Qwen2.5-Coder-0.5B, slow)."""

from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from npu_engine.backends.llama_cpp import LlamaCppPipeline, StopScan
from npu_engine.backends.pipeline_spec import LlamaCppSpec
from npu_engine.catalog import Catalog, TierSpec
from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.errors import UserInputError
from npu_engine.generation import RawPrompt, SamplingOptions
from npu_engine.gguf_source import source_gguf_path
from npu_engine.infill import InfillEnd
from npu_engine.manifest import Manifest
from npu_engine.planner import Planner, RequestShape
from npu_engine.recipes import load_recipe_book
from npu_engine.request import GenerateRequest
from npu_engine.response_format import ResponseFormat
from npu_engine.scheduler import Measurement
from npu_engine.server.app import create_app
from npu_engine.server.config import ServerConfig
from npu_engine.store import ModelStore
from npu_engine.targets import Job
from tests.conftest import PRIME_PROMPT
from tests.test_server import LOCAL

SYSTEM = {
    "role": "system",
    "content": "You are a careful Python coding assistant who explains briefly. " * 30,
}
QUESTIONS = [
    "Write a Python function that reverses a string.",
    "What does the zip function do in Python?",
    "Write a function that returns the largest of three numbers.",
]


def test_stop_scan_holds_back_what_may_start_a_stop_string_and_cuts_at_it() -> None:
    scan = StopScan(["</end>"], include=False)
    assert scan.add("hello </e") == "hell"  # the last 5 characters could begin "</end>"
    assert scan.add("nd> more") == "o "
    assert scan.stopped and scan.text == "hello "
    kept = StopScan(["STOP"], include=True)
    assert kept.add("aSTOPb") == "aSTOP" and kept.stopped
    plain = StopScan([], include=False)
    assert plain.add("abc") == "abc" and plain.flush() == "" and not plain.stopped


def _planner(catalog: Catalog, measurements: list[Measurement]) -> Planner:
    inventory = discover()
    return Planner(
        catalog.profile("tiny"), catalog, load_recipe_book(), inventory, inventory.memory_bytes, measurements
    )


def test_the_planner_picks_the_backend_that_answers_the_request_sooner(catalog: Catalog) -> None:
    measured = [
        # llama.cpp decodes faster, OpenVINO reads prompts faster (as measured on CPUs).
        Measurement("code", "cpu", 60.0, 400.0, "plain", "llama.cpp", 300.0),
        Measurement("code", "cpu", 40.0, 300.0, "plain", "openvino", 900.0),
    ]
    planner = _planner(catalog, measured)
    cpu = discover().of_kind("cpu")[0]
    chat = planner.backend("auto", "auto", "code", cpu, "plain", None, RequestShape(300, 512))
    assert (chat.backend, chat.mode) == ("llama.cpp", "plain") and "measured" in chat.reason
    complete = planner.backend("auto", "auto", "code", cpu, "plain", None, RequestShape(3000, 16))
    assert complete.backend == "openvino"  # 3.3 s + 0.4 s against 10 s + 0.3 s
    # the next agent turn: llama.cpp holds 2,900 of its 3,000 prompt tokens already
    turn = planner.backend("auto", "auto", "code", cpu, "plain", None, RequestShape(3000, 16, 2900))
    assert turn.backend == "llama.cpp" and "2900 prompt tokens in llama.cpp's cache" in turn.reason
    unmeasured = _planner(catalog, []).backend("auto", "auto", "code", cpu, "plain", None, RequestShape(9, 9))
    assert unmeasured.backend == "llama.cpp" and "not measured" in unmeasured.reason


def test_a_conversation_weighs_its_next_turn_where_llama_cpp_keeps_the_prompt(catalog: Catalog) -> None:
    measured = [
        Measurement("code", "cpu", 40.0, 500.0, "plain", "llama.cpp", 300.0),
        Measurement("code", "cpu", 40.0, 300.0, "plain", "openvino", 450.0),
    ]
    planner = _planner(catalog, measured)
    cpu = discover().of_kind("cpu")[0]
    alone = planner.backend("auto", "auto", "code", cpu, "plain", None, RequestShape(2000, 16))
    assert alone.backend == "openvino"  # 4.4 s + 0.4 s against 6.7 s + 0.4 s: nothing follows
    # A turn whose next ones start with this whole prompt: OpenVINO reads its 2,000 tokens again for
    # each of the 3 foreseen (4.4 s each), llama.cpp the 80 past its last whole chunk of 128 (0.3 s).
    turn = planner.backend("auto", "auto", "code", cpu, "plain", None, RequestShape(2000, 16, 0, 2000))
    assert turn.backend == "llama.cpp" and "again for the 3 expected after it" in turn.reason
    assert RequestShape(2000, 16, 0, 2000).next_request("llama.cpp") == RequestShape(2000, 0, 1920)
    assert RequestShape(2000, 16, 0, 2000).next_request("openvino") == RequestShape(2000, 0, 0)
    # An infill whose next keystrokes share only its prefix, 500 tokens before a 1,500-token
    # suffix: llama.cpp would read 1,616 tokens again (5.4 s), OpenVINO 2,000 (4.4 s).
    infill = RequestShape(2000, 16, 0, 500)
    assert infill.next_request("llama.cpp") == RequestShape(2000, 0, 384)
    assert planner.backend("auto", "auto", "code", cpu, "plain", None, infill).backend == "openvino"
    assert RequestShape(2000, 16).next_request("llama.cpp") is None


def test_what_the_next_request_is_guessed_to_share_follows_the_request_shape() -> None:
    tier = TierSpec("code", "smollm2-135m-instruct", None, 8192)
    user = {"role": "user", "content": "x" * 700}
    assert Job(GenerateRequest.of([user]), tier, ()).next_shared(200) == 0  # one lone message
    chat = Job(GenerateRequest.of([{"role": "system", "content": "Be brief."}, user]), tier, ())
    assert chat.next_shared(200) == 200  # a conversation: the whole prompt
    raw = Job(GenerateRequest.completion("def f("), tier, (), raw=RawPrompt("def f("))
    assert raw.next_shared(2) == 2
    before, after = "a = 1\n" * 70, "b = 2\n" * 700  # the cursor after 420 characters
    infill = Job(
        GenerateRequest.completion(before, suffix=after),
        tier,
        (),
        raw=RawPrompt(before + after),
        infill=InfillEnd.around(before, after),
    )
    assert infill.next_shared(1320) == 120  # the code before the cursor only


def test_a_backend_that_answers_worse_is_not_chosen_however_fast(catalog: Catalog) -> None:
    cpu = discover().of_kind("cpu")[0]
    fast_but_worse = [
        Measurement("code", "cpu", 90.0, 100.0, "plain", "llama.cpp", 900.0, pass_at_1=0.60),
        Measurement("code", "cpu", 30.0, 300.0, "plain", "openvino", 300.0, pass_at_1=0.70),
    ]
    pick = _planner(catalog, fast_but_worse).backend(
        "auto", "auto", "code", cpu, "plain", None, RequestShape(9, 9)
    )
    assert pick.backend == "openvino" and "answers worse" in pick.reason and "60%" in pick.reason
    within_noise = [replace(m, pass_at_1=0.69) if m.backend == "llama.cpp" else m for m in fast_but_worse]
    pick = _planner(catalog, within_noise).backend(
        "auto", "auto", "code", cpu, "plain", None, RequestShape(9, 9)
    )
    assert pick.backend == "llama.cpp" and "measured" in pick.reason


def test_what_llama_cpp_cannot_take_runs_on_openvino_or_is_refused_when_asked_for(catalog: Catalog) -> None:
    planner = _planner(catalog, [])
    cpu = discover().of_kind("cpu")[0]
    shape = RequestShape(100, 100)
    blocked = "structured output runs on OpenVINO"
    assert planner.backend("auto", "auto", "code", cpu, "plain", blocked, shape).backend == "openvino"
    lookup = planner.backend("auto", "prompt_lookup", "code", cpu, "prompt_lookup", None, shape)
    assert (lookup.backend, lookup.mode) == ("openvino", "prompt_lookup")
    with pytest.raises(UserInputError, match="structured output"):
        planner.backend("llama.cpp", "auto", "code", cpu, "plain", blocked, shape)
    with pytest.raises(UserInputError, match="speculative"):
        planner.backend("llama.cpp", "speculative", "large", cpu, "speculative", None, shape)
    assert planner.backend("openvino", "auto", "code", cpu, "plain", None, shape).backend == "openvino"


def _pipeline(store: ModelStore, catalog: Catalog, manifest: Manifest, reuse: bool) -> LlamaCppPipeline:
    gguf = source_gguf_path(manifest, catalog, store.root)
    assert gguf is not None and gguf.is_file()
    return LlamaCppPipeline(
        LlamaCppSpec(gguf, store.path(manifest.name), 4096, 2, reuse_prefix=reuse, chunk=64)
    )


def test_prefix_reuse_reads_back_whole_chunks_and_answers_as_a_cold_evaluation(
    cache_store: ModelStore, catalog: Catalog, smollm_cpu: Manifest
) -> None:
    cold = _pipeline(cache_store, catalog, smollm_cpu, reuse=False)
    warm = _pipeline(cache_store, catalog, smollm_cpu, reuse=True)
    options = SamplingOptions(48)
    history: list[dict[str, str]] = [SYSTEM]
    for turn, question in enumerate(QUESTIONS):
        history = [*history, {"role": "user", "content": question}]
        expected = cold.generate(history, options)
        foreseen = warm.reused_tokens(history)  # what the planner weighs before choosing
        got = warm.generate(history, options)
        assert got.text == expected.text and got.metrics.cached_tokens == foreseen
        assert cold.reused_tokens(history) == 0
        assert expected.metrics.cached_tokens == 0
        if turn > 0:  # the system prompt and the earlier turns are read back, in whole chunks
            assert got.metrics.cached_tokens >= 64 and got.metrics.cached_tokens % 64 == 0
        assert got.metrics.input_tokens == expected.metrics.input_tokens
        history.append({"role": "assistant", "content": got.text})
    again = warm.generate(history[:2], options)  # back to the first turn's prompt
    assert again.text == cold.generate(history[:2], options).text


def test_the_engine_answers_on_llama_cpp_by_default_on_the_cpu_and_says_so(engine: Engine) -> None:
    result = engine.generate(PRIME_PROMPT, tier="code", max_new_tokens=24)
    assert result.backend == "llama.cpp" and result.device == "CPU" and result.decoding == "plain"
    assert result.text.strip() and result.metrics.output_tokens > 0 and result.metrics.input_tokens > 10
    ours = engine.generate(PRIME_PROMPT, tier="code", max_new_tokens=24, backend="openvino")
    assert ours.backend == "openvino" and ours.text.strip()
    stopped = engine.generate(PRIME_PROMPT, tier="code", max_new_tokens=64, stop=["\n"], backend="llama.cpp")
    assert "\n" not in stopped.text and stopped.finish_reason == "stop"


def test_an_agent_session_stays_on_the_backend_that_keeps_its_prompt_from_the_first_turn(
    cache_store: ModelStore, smollm_cpu: Manifest
) -> None:
    # OpenVINO reads prompts 1.5 times as fast; both decode alike: a long question alone goes to
    # OpenVINO, a conversation to llama.cpp, which reads its later turns mostly from its cache.
    measured = [
        Measurement("code", "cpu", 40.0, 500.0, "plain", "llama.cpp", 300.0),
        Measurement("code", "cpu", 40.0, 300.0, "plain", "openvino", 450.0),
    ]
    engine = Engine.from_settings(
        store=cache_store, profile="tiny", inventory=discover(), remotes=(), measurements=measured
    )
    system = {"role": "system", "content": SYSTEM["content"] * 5}  # 9,600 characters
    try:
        alone = [{"role": "user", "content": system["content"] + QUESTIONS[0]}]
        assert engine.generate(alone, tier="code", max_new_tokens=16).backend == "openvino"
        history: list[dict[str, str]] = [system]
        for turn, question in enumerate(QUESTIONS):
            history.append({"role": "user", "content": question})
            result = engine.generate(history, tier="code", max_new_tokens=16)
            assert result.backend == "llama.cpp"
            if turn > 0:  # the system prompt and the earlier turns are read back
                assert result.metrics.cached_tokens >= 1024
            history.append({"role": "assistant", "content": result.text})
    finally:
        engine.unload()


def test_ollama_ps_lists_a_model_held_by_both_backends_once_naming_each_pipeline(engine: Engine) -> None:
    engine.generate(PRIME_PROMPT, tier="code", max_new_tokens=2, backend="openvino")
    engine.generate(PRIME_PROMPT, tier="code", max_new_tokens=2, backend="llama.cpp")
    with TestClient(create_app(engine, ServerConfig()), base_url=LOCAL) as client:
        listed = client.get("/api/ps").json()["models"]
    model = engine.tier("code").model
    [held] = [m for m in listed if m["name"].startswith(model)]
    assert {p["backend"] for p in held["pipelines"]} == {"openvino", "llama.cpp"}
    assert held["backend"] == held["pipelines"][0]["backend"] and held["device"] == "CPU"


def test_structured_output_runs_on_openvino_and_asking_llama_cpp_for_it_is_refused(engine: Engine) -> None:
    schema = ResponseFormat("json_schema", {"type": "object", "properties": {"n": {"type": "integer"}}})
    result = engine.generate("Give n as JSON.", tier="code", max_new_tokens=24, response_format=schema)
    assert result.backend == "openvino"
    with pytest.raises(UserInputError, match="structured output"):
        engine.generate("Give n as JSON.", tier="code", response_format=schema, backend="llama.cpp")


def test_a_source_gguf_that_changed_is_not_run(
    tmp_path_factory: pytest.TempPathFactory, cache_store: ModelStore, smollm_cpu: Manifest, catalog: Catalog
) -> None:
    import shutil

    home = tmp_path_factory.mktemp("home")
    shutil.copytree(cache_store.path(smollm_cpu.name), home / "models" / smollm_cpu.name)
    gguf = source_gguf_path(smollm_cpu, catalog, cache_store.root)
    assert gguf is not None
    (home / "sources").mkdir()
    damaged = bytearray(gguf.read_bytes())
    damaged[-1] ^= 0xFF
    (home / "sources" / gguf.name).write_bytes(bytes(damaged))
    engine = Engine.from_settings(store=ModelStore(home), profile="tiny", inventory=discover(), remotes=())
    assert engine.generate(PRIME_PROMPT, tier="code", max_new_tokens=4).backend == "openvino"
    with pytest.raises(UserInputError, match="source GGUF"):
        engine.generate(PRIME_PROMPT, tier="code", max_new_tokens=4, backend="llama.cpp")
