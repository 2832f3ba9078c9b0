"""The engine on real IR (SmolLM2): generation, streaming, chat, stops, seeds, concurrency, the
emulated NPU path, decoding modes, pipeline lifetimes, and every fallback step."""

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from npu_engine.backends.factory import OpenVinoPipelineFactory
from npu_engine.backends.openvino_genai import OpenVinoPipeline
from npu_engine.backends.pipeline_spec import LlamaCppSpec, PipelineSpec
from npu_engine.backends.remote import OllamaBackend
from npu_engine.catalog import load_catalog
from npu_engine.devices import Inventory, discover
from npu_engine.engine import Engine, GenerationResult
from npu_engine.errors import EngineBusyError, GenerationError, UserInputError
from npu_engine.manifest import Manifest
from npu_engine.pipelines import LLAMA_CPP, Pipeline
from npu_engine.scheduler import OLLAMA
from npu_engine.store import ModelStore
from npu_engine.targets import RemoteTarget
from tests.conftest import PRIME_PROMPT
from tests.fake_ollama import fake_ollama

SMOLLM = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def inventory() -> Inventory:
    return discover()


@pytest.fixture(scope="module")
def engine(cache_store: ModelStore, smollm_cpu: Manifest, inventory: Inventory) -> Engine:
    return Engine.from_settings(store=cache_store, profile="tiny", inventory=inventory, remotes=())


def ollama_remote(url: str) -> list[RemoteTarget]:
    return [
        RemoteTarget(OLLAMA, OllamaBackend(url), lambda model: "smollm2:135m" if model == SMOLLM else None)
    ]


class FailingOn:
    """A pipeline factory that fails to compile on one device, as a broken driver would."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.calls: list[str] = []
        self._real = OpenVinoPipelineFactory()

    def __call__(self, spec: PipelineSpec | LlamaCppSpec) -> Pipeline:
        device = spec.device if isinstance(spec, PipelineSpec) else "CPU"  # llama.cpp runs on the CPU
        self.calls.append(device)
        if device == self.device:
            raise RuntimeError(f"Exception from src/inference: {self.device} compile failed")
        return self._real(spec)


def test_discovery_sees_the_cpu(inventory: Inventory) -> None:
    assert inventory.devices[-1].kind == "cpu"
    assert inventory.memory_bytes > 1 << 30


def test_generate_on_cpu(engine: Engine, smollm_cpu: Manifest) -> None:
    result = engine.generate(PRIME_PROMPT, tier="code", max_new_tokens=40)
    assert (result.tier, result.model, result.device, result.decoding) == (
        "code",
        smollm_cpu.name,
        "CPU",
        "plain",
    )
    assert result.text.strip() and result.fallback == ()
    m = result.metrics
    assert m.output_tokens == 40 and result.finish_reason == "length"
    assert m.input_tokens > 10  # the chat template wrapped the prompt
    assert m.tokens_per_second > 0 and m.ttft_ms > 0
    again = engine.generate(PRIME_PROMPT, tier="code", max_new_tokens=40)
    assert again.text == result.text  # greedy is deterministic
    assert again.metrics.load_seconds == 0.0  # the pipeline stays loaded


def test_compiled_models_are_cached_in_the_store(
    tmp_path: Path, smollm_cpu: Manifest, cache_store: ModelStore
) -> None:
    store = ModelStore(tmp_path)
    store.models_dir.mkdir(parents=True)
    (store.models_dir / smollm_cpu.name).symlink_to(cache_store.path(smollm_cpu.name))
    first = Engine.from_settings(store=store, profile="tiny", inventory=discover(), remotes=()).generate(
        "hi", max_new_tokens=2
    )
    compiled = store.compiled_cache(smollm_cpu.name)
    assert compiled is not None and list(compiled.glob("*.blob"))  # the next start imports, not compiles
    second = Engine.from_settings(store=store, profile="tiny", inventory=discover(), remotes=()).generate(
        "hi", max_new_tokens=2
    )
    assert second.text == first.text
    per_model, _ = store.cache_usage()
    assert per_model[smollm_cpu.name] > 1_000_000, per_model
    assert store.prune_cache() == 0  # it belongs to a model in the store
    store.remove(smollm_cpu.name)
    assert not compiled.exists()  # removed with its model
    assert cache_store.path(smollm_cpu.name).is_dir()  # the linked original is untouched


def test_chat_messages_and_stop_strings(engine: Engine) -> None:
    messages = [
        {"role": "system", "content": "You answer with one word."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    result = engine.generate(messages, tier="fast", max_new_tokens=30)
    assert "Paris" in result.text and result.finish_reason == "stop"
    stopped = engine.generate(messages, tier="fast", max_new_tokens=30, stop=["Paris"])
    assert "Paris" not in stopped.text


def test_seeded_sampling_is_reproducible(engine: Engine) -> None:
    def sample(seed: int) -> str:
        return engine.generate(
            "Tell me a story.", max_new_tokens=30, temperature=1.0, top_p=0.95, seed=seed
        ).text

    assert sample(7) == sample(7)
    assert len({sample(7), sample(8), sample(9)}) > 1


def test_streaming_yields_the_text_then_the_result(engine: Engine) -> None:
    chunks = list(engine.stream(PRIME_PROMPT, max_new_tokens=20))
    result = chunks.pop().result
    pieces = [chunk.text for chunk in chunks if chunk.result is None]
    assert isinstance(result, GenerationResult)
    assert len(pieces) > 3 and len(pieces) == len(chunks) and all(isinstance(p, str) for p in pieces)
    assert "".join(str(p) for p in pieces) == result.text


def test_a_sink_that_asks_to_stop_cancels_within_a_token(engine: Engine) -> None:
    seen: list[str] = []
    result = engine.generate(
        PRIME_PROMPT, max_new_tokens=200, on_text=lambda text: seen.append(text) or len(seen) >= 3
    )
    assert result.finish_reason == "cancelled"
    # The streamer hands over text at word boundaries, so a piece may hold a few tokens; what
    # follows the stop request is at most a token or two.
    heard = "".join(seen)
    assert result.text.startswith(heard) and len(result.text) - len(heard) <= 12
    assert result.metrics.output_tokens < 20


@pytest.fixture(scope="module")
def batching(cache_store: ModelStore, smollm_cpu: Manifest, inventory: Inventory) -> Engine:
    return Engine.from_settings(
        store=cache_store, profile="tiny", inventory=inventory, remotes=(), continuous_batching=True
    )


def test_eight_threads_get_their_own_answers(batching: Engine) -> None:
    engine = batching
    words = ["apple", "banana", "cherry", "grape", "lemon", "mango", "orange", "peach"]
    prompts = {word: f"Repeat this word exactly once and nothing else: {word}" for word in words}
    alone = {word: engine.generate(prompt, max_new_tokens=16).text for word, prompt in prompts.items()}
    together: dict[str, str] = {}
    barrier = threading.Barrier(len(words))

    def ask(word: str) -> None:
        barrier.wait()
        together[word] = engine.generate(prompts[word], max_new_tokens=16).text

    threads = [threading.Thread(target=ask, args=(word,)) for word in words]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(together) == sorted(words)
    for word in words:
        # Batched numerics may flip a near-tie token early (on an AVX2-only EPYC, "lemon" turned from
        # "I'm going to repeat..." into "I'm going to make a lemon-lime soda" right after the words
        # every answer shares), so answers are not compared by prefix; but an answer never names
        # another prompt's word that its lone answer did not: nothing was mixed up in the batch.
        assert together[word].strip(), word
        for other in words:
            if other != word and other not in alone[word].lower():
                assert other not in together[word].lower(), (word, together[word], other)


def test_batched_greedy_matches_the_single_request_pipeline(
    batching: Engine, cache_store: ModelStore
) -> None:
    """Continuous batching (paged attention) and LLMPipeline (SDPA) are OpenVINO's two attention
    paths; alone in the batch, a request decodes to the same greedy text on both."""
    batched = batching.generate(PRIME_PROMPT, max_new_tokens=48)
    single = OpenVinoPipeline(PipelineSpec(cache_store.path(batched.model), "CPU"))
    assert (
        single.generate([{"role": "user", "content": PRIME_PROMPT}], result_options(48)).text == batched.text
    )


def test_bounded_queue_refuses_the_excess(
    cache_store: ModelStore, smollm_cpu: Manifest, inventory: Inventory
) -> None:
    engine = Engine.from_settings(
        store=cache_store, profile="tiny", inventory=inventory, remotes=(), max_waiting=2
    )
    engine.generate("hi", max_new_tokens=1)  # loaded, so the queue is about generation, not loading
    release, holding = threading.Event(), threading.Event()

    def hold(_text: str) -> bool:
        holding.set()
        release.wait(30)
        return False

    first = threading.Thread(
        target=engine.generate, args=("hi",), kwargs={"max_new_tokens": 3, "on_text": hold}
    )
    first.start()
    assert holding.wait(30)
    second = threading.Thread(target=engine.generate, args=("hi",), kwargs={"max_new_tokens": 3})
    second.start()
    while engine.queue_depth() < 2:
        threading.Event().wait(0.01)
    with pytest.raises(EngineBusyError, match="2 requests queued"):
        engine.generate("hi", max_new_tokens=3)
    release.set()
    first.join()
    second.join()
    assert engine.queue_depth() == 0


def test_npu_placement_runs_on_the_npu_device_string(
    cache_store: ModelStore, smollm_npu: Manifest, smollm_cpu: Manifest, inventory: Inventory
) -> None:
    engine = Engine.from_settings(
        store=cache_store, profile="tiny", inventory=inventory, remotes=(), emulate_npu=True
    )
    assert engine.chain("fast")[0].name == "NPU"
    result = engine.generate(PRIME_PROMPT, tier="fast", max_new_tokens=24)
    assert (result.device, result.model) == ("NPU (emulated on CPU)", smollm_npu.name)
    assert result.metrics.output_tokens == 24
    # The same IR greedy-decoded by the plain CPU plugin gives the same text.
    on_cpu = OpenVinoPipeline(PipelineSpec(cache_store.path(smollm_npu.name), "CPU"))
    assert (
        on_cpu.generate([{"role": "user", "content": PRIME_PROMPT}], result_options(24)).text == result.text
    )


def result_options(max_new_tokens: int) -> Any:
    from npu_engine.generation import SamplingOptions

    return SamplingOptions(max_new_tokens=max_new_tokens)


def test_a_prompt_too_long_for_the_npu_moves_to_the_cpu(
    cache_store: ModelStore, smollm_npu: Manifest, smollm_cpu: Manifest, inventory: Inventory
) -> None:
    engine = Engine.from_settings(
        store=cache_store, profile="tiny", inventory=inventory, remotes=(), emulate_npu=True
    )
    long_prompt = "Summarize this log:\n" + "\n".join(
        f"line {i}: request served in {i % 97} ms" for i in range(200)
    )
    result = engine.generate(long_prompt, tier="fast", max_new_tokens=8)
    assert result.device == "CPU"
    assert result.metrics.input_tokens > 1024
    [step] = result.fallback
    assert step.target == "NPU" and "exceeds the NPU's static shape (1024 prompt" in step.reason


def test_a_device_that_fails_hands_over_and_is_remembered(
    cache_store: ModelStore, smollm_npu: Manifest, smollm_cpu: Manifest, inventory: Inventory
) -> None:
    factory = FailingOn("NPU")
    engine = Engine.from_settings(
        store=cache_store,
        profile="tiny",
        inventory=inventory,
        remotes=(),
        emulate_npu=True,
        pipeline_factory=factory,
    )
    first = engine.generate("hi", tier="fast", max_new_tokens=4)
    assert first.device == "CPU"
    assert first.fallback[0].target == "NPU" and "NPU compile failed" in first.fallback[0].reason
    second = engine.generate("hi", tier="fast", max_new_tokens=4)
    assert second.fallback[0].reason.startswith("skipped: failed")
    assert factory.calls.count("NPU") == 1  # the failure was not paid twice


def test_no_local_model_goes_to_ollama(tmp_path: Path, inventory: Inventory) -> None:
    with fake_ollama({"smollm2:135m": "def add(a, b): return a + b"}) as (url, seen):
        engine = Engine.from_settings(
            store=ModelStore(tmp_path), profile="tiny", inventory=inventory, remotes=ollama_remote(url)
        )
        chunks = list(engine.stream("Write add", tier="code", max_new_tokens=50, temperature=0.2, seed=3))
    result = chunks.pop().result
    pieces = [chunk.text for chunk in chunks]
    assert isinstance(result, GenerationResult)
    assert "".join(str(p) for p in pieces) == result.text == "def add(a, b): return a + b"
    assert (result.device, result.model) == ("ollama", "ollama:smollm2:135m")
    assert result.metrics.output_tokens == 7 and result.metrics.input_tokens == 12
    assert [s.target for s in result.fallback] == ["CPU"]
    assert (
        "not converted for CPU (npu-convert tier code --profile tiny --device cpu, from registry packages"
        in result.fallback[0].reason
    )
    assert seen[0]["messages"] == [{"role": "user", "content": "Write add"}]
    assert seen[0]["options"] == {"num_predict": 50, "temperature": 0.2, "top_p": 1.0, "seed": 3}
    assert seen[0]["stream"] is True


def test_a_failure_mid_answer_is_not_handed_over(tmp_path: Path, inventory: Inventory) -> None:
    with fake_ollama({"smollm2:135m": "one two three four five"}, fail_after=2) as (url, _seen):
        remotes = [
            *ollama_remote(url),
            RemoteTarget("openai", OllamaBackend(url), lambda _model: "smollm2:135m"),
        ]
        engine = Engine.from_settings(
            store=ModelStore(tmp_path), profile="tiny", inventory=inventory, remotes=remotes
        )
        pieces: list[str] = []
        with pytest.raises(GenerationError, match="ollama failed mid-answer for tier 'code'.*runner process"):
            engine.generate("count", tier="code", on_text=pieces.append)
    # What the caller heard is the start of one answer, not two answers spliced together.
    assert "".join(pieces) == "one two"


def test_unreachable_ollama_names_the_host(tmp_path: Path, inventory: Inventory) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    engine = Engine.from_settings(
        store=ModelStore(tmp_path),
        profile="tiny",
        inventory=inventory,
        remotes=ollama_remote(f"http://127.0.0.1:{port}"),
    )
    with pytest.raises(GenerationError, match=f"cannot reach Ollama at http://127.0.0.1:{port}"):
        engine.generate("hi", tier="code")


def test_ollama_without_the_model(tmp_path: Path, inventory: Inventory) -> None:
    with fake_ollama({}) as (url, _seen):
        engine = Engine.from_settings(
            store=ModelStore(tmp_path), profile="tiny", inventory=inventory, remotes=ollama_remote(url)
        )
        with pytest.raises(GenerationError, match="answered 404: model 'smollm2:135m' not found"):
            engine.generate("hi", tier="code")


def test_speculative_and_prompt_lookup_match_plain_greedy(engine: Engine) -> None:
    code = "\n".join(f"def f{i}(x):\n    return x * {i} + {i * i}\n" for i in range(12))
    prompt = f"Rename every function fN to g_N in this code and return all of it:\n{code}"
    plain = engine.generate(prompt, tier="large", max_new_tokens=60, decoding="plain")
    speculative = engine.generate(prompt, tier="large", max_new_tokens=60, decoding="speculative")
    lookup = engine.generate(prompt, tier="large", max_new_tokens=60, decoding="prompt_lookup")
    assert (speculative.decoding, lookup.decoding) == ("speculative", "prompt_lookup")
    assert speculative.text == plain.text
    assert lookup.text == plain.text
    assert plain.metrics.accepted_tokens is None
    # The draft is the main model itself here, so it is right nearly every time; the answer repeats
    # the prompt's code, so lookup finds most tokens in it.
    assert speculative.metrics.accepted_tokens is not None
    assert speculative.metrics.accepted_tokens >= speculative.metrics.output_tokens // 2
    assert lookup.metrics.accepted_tokens is not None and lookup.metrics.accepted_tokens > 0


def test_speculative_needs_a_draft(engine: Engine) -> None:
    with pytest.raises(UserInputError, match="speculative decoding needs a converted draft model"):
        engine.generate("hi", tier="code", decoding="speculative")


def test_idle_pipelines_unload_after_keep_alive(
    cache_store: ModelStore, smollm_cpu: Manifest, inventory: Inventory
) -> None:
    now = [1000.0]
    engine = Engine.from_settings(
        store=cache_store,
        profile="tiny",
        inventory=inventory,
        remotes=(),
        keep_alive_seconds=60,
        clock=lambda: now[0],
    )
    engine.generate("hi", max_new_tokens=2)
    assert len(engine.loaded()) == 1
    now[0] += 61
    assert engine.unload_idle() == [(smollm_cpu.name, "CPU", LLAMA_CPP)]  # the CPU default, unmeasured
    assert engine.generate("hi", max_new_tokens=2).metrics.load_seconds > 0


def test_loading_past_the_budget_unloads_the_least_recently_used(
    cache_store: ModelStore, smollm_cpu: Manifest, inventory: Inventory
) -> None:
    kv = load_catalog().model(SMOLLM).kv_bytes_per_token * 4096
    budget = int((smollm_cpu.size + kv) * 1.5)  # room for one pipeline at a time
    engine = Engine.from_settings(
        store=cache_store, profile="tiny", inventory=inventory, remotes=(), memory_budget=budget
    )
    engine.generate("hi", tier="fast", max_new_tokens=2)
    assert engine.loaded() == [(smollm_cpu.name, "CPU", LLAMA_CPP)]
    engine.generate("hi", tier="fast", max_new_tokens=2, decoding="prompt_lookup")  # a second pipeline
    assert engine.loaded() == [(smollm_cpu.name, "CPU", "prompt_lookup")]


def test_missing_tier_model_says_how_to_convert(tmp_path: Path, inventory: Inventory) -> None:
    engine = Engine.from_settings(
        store=ModelStore(tmp_path), profile="embedded", inventory=inventory, remotes=()
    )
    with pytest.raises(GenerationError, match="npu-convert tier code --profile embedded --device cpu"):
        engine.generate("hi", tier="code")
    with pytest.raises(UserInputError, match="max_new_tokens"):
        engine.generate("hi", tier="code", max_new_tokens=0)


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NPU_ENGINE_HOME": str(home), "OLLAMA_HOST": "127.0.0.1:9"}
    return subprocess.run(
        [sys.executable, "-m", "npu_engine.engine_cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_run_command_streams_and_prints_tier_device_and_speed(
    cache_store: ModelStore, smollm_cpu: Manifest
) -> None:
    result = run_cli(cache_store.root, "run", "--profile", "tiny", "--max-new-tokens", "16", PRIME_PROMPT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    stats = result.stderr.strip().splitlines()[-1]
    assert f"tier code | model {smollm_cpu.name} | device CPU | llama.cpp | plain |" in stats
    assert " tokens/s |" in stats


def test_chat_command_keeps_the_conversation(cache_store: ModelStore, smollm_cpu: Manifest) -> None:
    env = {**os.environ, "NPU_ENGINE_HOME": str(cache_store.root)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "npu_engine.engine_cli",
            "chat",
            "--profile",
            "tiny",
            "--max-new-tokens",
            "12",
        ],
        input="My name is Ada.\nWhat is my name?\n\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("[tier code |") == 2
    assert result.stdout.count(">>> ") == 3


def test_plan_command_for_an_inventory_file(tmp_path: Path) -> None:
    machines = Path(__file__).resolve().parents[1] / "models" / "machines"
    result = run_cli(
        tmp_path, "plan", "--profile", "plan", "--inventory", str(machines / "core-ultra-64gb.json")
    )
    assert result.returncode == 0, result.stderr
    assert "fast    deepseek-r1-distill-qwen-1.5b on NPU" in result.stdout
    bad = run_cli(tmp_path, "plan", "--inventory", str(tmp_path / "none.json"))
    assert bad.returncode == 2 and bad.stderr.startswith("error: cannot read inventory")


def test_engine_errors_are_one_line(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "run", "--profile", "embedded", "hi")
    assert result.returncode == 9
    assert "Traceback" not in result.stderr
    first, error = result.stderr.strip().splitlines()
    assert first == "[profile embedded: named with --profile]"
    assert error.startswith("error: no device or fallback could answer tier 'code'")
