"""The operations the engine declares for npu-bench (one named model on one named device, its load
time, the tier specs, the devices, unloading), on real SmolLM2 IR."""

from pathlib import Path

import pytest

from npu_engine.bench import measure_load
from npu_engine.catalog import load_catalog
from npu_engine.devices import Inventory, discover
from npu_engine.engine import Engine
from npu_engine.errors import UserInputError
from npu_engine.manifest import Manifest
from npu_engine.store import ModelStore
from tests.conftest import PRIME_PROMPT


@pytest.fixture(scope="module")
def inventory() -> Inventory:
    return discover()


def test_one_model_on_one_device_answers_as_its_tier_does(
    cache_store: ModelStore, smollm_cpu: Manifest, inventory: Inventory
) -> None:
    engine = Engine.from_settings(
        store=cache_store, profile="tiny", inventory=inventory, remotes=(), measurements=[]
    )
    heard: list[str] = []
    result = engine.generate_on(smollm_cpu.name, "CPU", PRIME_PROMPT, max_new_tokens=12, on_text=heard.append)
    assert (result.tier, result.model, result.device, result.decoding) == (
        "-",
        smollm_cpu.name,
        "CPU",
        "plain",
    )
    assert result.metrics.output_tokens == 12 and result.metrics.load_seconds > 0 and result.fallback == ()
    assert "".join(heard) == result.text
    tier = engine.generate(PRIME_PROMPT, tier="code", max_new_tokens=12, decoding="plain", backend="openvino")
    assert tier.model == smollm_cpu.name and tier.text == result.text  # greedy, same IR, same device
    # Loaded through the pool: a second call reuses the pipeline, and unload drops it.
    assert engine.generate_on(smollm_cpu.name, "CPU", "hi", max_new_tokens=2).metrics.load_seconds == 0.0
    assert engine.unload(smollm_cpu.name) == [(smollm_cpu.name, "CPU", "plain")]
    assert engine.unload() == []
    with pytest.raises(UserInputError, match="no device 'GPU.7' here"):
        engine.generate_on(smollm_cpu.name, "GPU.7", "hi")
    with pytest.raises(UserInputError, match="max_new_tokens"):
        engine.generate_on(smollm_cpu.name, "CPU", "hi", max_new_tokens=0)


def test_load_seconds_opens_outside_the_pool_with_the_cache_given(
    tmp_path: Path, cache_store: ModelStore, smollm_cpu: Manifest, inventory: Inventory
) -> None:
    engine = Engine.from_settings(
        store=cache_store, profile="tiny", inventory=inventory, remotes=(), measurements=[]
    )
    cache = tmp_path / "compiled"
    cache.mkdir()
    assert engine.load_seconds(smollm_cpu.name, "CPU", cache) > 0
    assert list(cache.glob("*.blob"))  # the cold load filled the folder it was given
    assert engine.unload() == []  # nothing was left in the pool
    load = measure_load(engine, smollm_cpu.name, "CPU")
    assert (load.model, load.device) == (smollm_cpu.name, "CPU")
    assert load.cold_seconds > 0 and load.warm_seconds > 0


def test_tiers_and_devices_as_the_bench_sees_them(
    tmp_path: Path, cache_store: ModelStore, inventory: Inventory
) -> None:
    engine = Engine.from_settings(store=ModelStore(tmp_path), profile="tiny", inventory=inventory, remotes=())
    assert engine.tier("large") == load_catalog().profile("tiny").tier("large")
    with pytest.raises(UserInputError, match="has no tier 'huge'"):
        engine.tier("huge")
    assert engine.device_of_kind("cpu") == inventory.of_kind("cpu")[0].name
    if inventory.of_kind("npu"):
        pytest.skip("an NPU is here: the emulated one is never made")
    assert not engine.emulates_npu
    with pytest.raises(UserInputError, match="no NPU here"):
        engine.device_of_kind("npu")
    emulating = Engine.from_settings(
        store=ModelStore(tmp_path), profile="tiny", inventory=inventory, remotes=(), emulate_npu=True
    )
    assert emulating.emulates_npu and emulating.device_of_kind("npu") == "NPU"
