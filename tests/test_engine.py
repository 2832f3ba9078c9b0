"""The engine's Python API on real IR: SmolLM2 on the CPU and through the emulated NPU path."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from npu_engine.backends.openvino_genai import OpenVinoPipeline, PipelineSpec
from npu_engine.devices import Device, discover
from npu_engine.engine import Engine
from npu_engine.errors import ModelNotFoundError, UserInputError
from npu_engine.manifest import Manifest
from npu_engine.store import ModelStore
from tests.conftest import PRIME_PROMPT


@pytest.fixture(scope="module")
def cpu_only() -> list[Device]:
    return [device for device in discover() if device.kind == "cpu"]


def test_discovery_sees_the_cpu() -> None:
    devices = discover()
    assert devices[-1].kind == "cpu"
    assert devices[-1].memory_bytes > 1 << 30


def test_generate_on_cpu(cache_store: ModelStore, smollm_cpu: Manifest, cpu_only: list[Device]) -> None:
    engine = Engine(store=cache_store, profile="tiny", devices=cpu_only)
    result = engine.generate(PRIME_PROMPT, tier="code", max_new_tokens=40)
    assert (result.tier, result.model, result.device) == ("code", smollm_cpu.name, "CPU")
    assert result.text.strip()
    m = result.metrics
    assert m.output_tokens == 40 and result.finish_reason == "length"
    assert m.input_tokens > 10  # the chat template wrapped the prompt
    assert m.tokens_per_second > 0 and m.ttft_ms > 0 and m.load_seconds > 0
    again = engine.generate(PRIME_PROMPT, tier="code", max_new_tokens=40)
    assert again.text == result.text  # greedy is deterministic
    assert again.metrics.load_seconds == 0.0  # the pipeline stays loaded


def test_npu_placement_runs_on_the_npu_device_string(
    cache_store: ModelStore, smollm_npu: Manifest, smollm_cpu: Manifest, cpu_only: list[Device]
) -> None:
    engine = Engine(store=cache_store, profile="tiny", devices=cpu_only, emulate_npu=True)
    placement = engine.place("code")
    assert (placement.device.name, placement.manifest.name) == ("NPU", smollm_npu.name)
    result = engine.generate(PRIME_PROMPT, tier="code", max_new_tokens=24)
    assert result.device == "NPU (emulated on CPU)"
    assert result.metrics.output_tokens == 24
    # The same IR greedy-decoded on the plain CPU plugin gives the same tokens.
    on_cpu = OpenVinoPipeline(PipelineSpec(cache_store.path(smollm_npu.name), "CPU"))
    messages = [{"role": "user", "content": PRIME_PROMPT}]
    cpu_result = on_cpu.generate(messages, max_new_tokens=24, temperature=0.0, top_p=1.0, stop=(), seed=None)
    assert cpu_result.text == result.text


def test_chat_messages_and_stop_strings(
    cache_store: ModelStore, smollm_cpu: Manifest, cpu_only: list[Device]
) -> None:
    engine = Engine(store=cache_store, profile="tiny", devices=cpu_only)
    messages = [
        {"role": "system", "content": "You answer with one word."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    result = engine.generate(messages, tier="fast", max_new_tokens=30)
    assert "Paris" in result.text
    stopped = engine.generate(messages, tier="fast", max_new_tokens=30, stop=["Paris"])
    assert "Paris" not in stopped.text


def test_missing_tier_model_says_how_to_convert(tmp_path: Path, cpu_only: list[Device]) -> None:
    engine = Engine(store=ModelStore(tmp_path), profile="embedded", devices=cpu_only)
    with pytest.raises(ModelNotFoundError, match="npu-convert tier code --profile embedded"):
        engine.generate("hi", tier="code")
    with pytest.raises(UserInputError, match="max_new_tokens"):
        engine.generate("hi", tier="code", max_new_tokens=0)


def test_run_command_prints_tier_device_and_speed(cache_store: ModelStore, smollm_cpu: Manifest) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "npu_engine.engine_cli",
            "run",
            "--profile",
            "tiny",
            "--max-new-tokens",
            "16",
            PRIME_PROMPT,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "NPU_ENGINE_HOME": str(cache_store.root)},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    stats = result.stderr.strip().splitlines()[-1]
    assert f"tier code | model {smollm_cpu.name} | device CPU |" in stats
    assert " tokens/s |" in stats
