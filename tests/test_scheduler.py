"""The scheduler's decisions over machines described in files: no hardware, no models loaded."""

from importlib import resources
from pathlib import Path

import pytest

from npu_engine.catalog import load_catalog
from npu_engine.demands import tier_demands
from npu_engine.devices import GB, Inventory, read_inventory
from npu_engine.errors import UserInputError
from npu_engine.manifest import FileEntry, Manifest, SourceInfo
from npu_engine.recipes import load_recipe_book
from npu_engine.scheduler import Measurement, Plan, default_budget, plan

MACHINES = resources.files("npu_engine.data.models.machines")


def machine(name: str) -> Inventory:
    with resources.as_file(MACHINES.joinpath(f"{name}.json")) as path:
        return read_inventory(path)


def plan_for(
    machine_name: str,
    profile: str = "plan",
    manifests: list[Manifest] | None = None,
    measured: list[Measurement] | None = None,
) -> Plan:
    inventory = machine(machine_name)
    catalog = load_catalog()
    demands = tier_demands(catalog.profile(profile), catalog, manifests or [], load_recipe_book())
    return plan(inventory, demands, default_budget(inventory), measured)


def fake_manifest(model: str, recipe: str, size_gb: float) -> Manifest:
    """A manifest as the store would list it; the scheduler reads only names, recipes and sizes."""
    recipe_obj = load_recipe_book().get(recipe)
    return Manifest(
        name=f"{model}-{recipe}",
        model=model,
        source=SourceInfo("packaged", f"pkg:{model}", "sha256:" + "0" * 64),
        recipe=recipe_obj,
        device=recipe_obj.devices[0],
        parameters=1,
        architecture="qwen2",
        context_length=32768,
        files=(FileEntry("openvino_model.bin", "0" * 64, int(size_gb * GB)),),
        tool_versions={},
        created="2026-01-01T00:00:00+00:00",
    )


# machine, profile, tier -> (device, resident); None device = fits nowhere
CASES = [
    ("cpu-only-24gb", "plan", "fast", "CPU", True),
    ("cpu-only-24gb", "plan", "code", "CPU", True),
    ("cpu-only-24gb", "plan", "large", "CPU", False),
    ("cpu-only-24gb", "plan", "review", None, False),
    ("core-ultra-64gb", "plan", "fast", "NPU", True),
    ("core-ultra-64gb", "plan", "code", "GPU", True),
    ("core-ultra-64gb", "plan", "large", "GPU", True),
    ("core-ultra-64gb", "plan", "review", "GPU", False),
    ("core-ultra-16gb", "plan", "fast", "NPU", True),
    ("core-ultra-16gb", "plan", "code", "GPU", False),
    ("core-ultra-16gb", "plan", "large", None, False),
    ("desktop-arc-a770", "plan", "fast", "GPU.0", True),
    ("desktop-arc-a770", "plan", "code", "GPU.0", True),
    ("desktop-arc-a770", "plan", "large", "CPU", True),
    ("desktop-arc-a770", "plan", "review", None, False),
    ("core-ultra-64gb", "embedded", "fast", "NPU", True),
    ("core-ultra-64gb", "embedded", "code", "GPU", True),
    ("core-ultra-64gb", "embedded", "large", "GPU", True),
]


@pytest.mark.parametrize(("machine_name", "profile", "tier", "device", "resident"), CASES)
def test_placements(machine_name: str, profile: str, tier: str, device: str | None, resident: bool) -> None:
    placement = plan_for(machine_name, profile).placement(tier)
    assert (placement.device, placement.resident) == (device, resident), placement.reason


def test_sixteen_gb_laptop_explains_what_does_not_fit() -> None:
    result = plan_for("core-ultra-16gb")
    large = result.placement("large")
    assert large.reason.startswith("fits nowhere: needs 9.8 GB (weights + KV cache at 8192 tokens)")
    assert large.fallback == ("ollama",)
    assert result.system_used <= result.system_budget == 8 * GB


def test_fallback_chains_end_with_ollama() -> None:
    result = plan_for("core-ultra-64gb")
    assert result.placement("fast").fallback == ("GPU", "CPU", "ollama")
    # The NPU already hosts the fast tier's model, so it is no fallback for code.
    assert result.placement("code").fallback == ("CPU", "ollama")


def test_every_tier_fits_together_in_the_budget() -> None:
    for name in ("cpu-only-24gb", "core-ultra-64gb", "core-ultra-16gb", "desktop-arc-a770"):
        result = plan_for(name)
        assert result.system_used <= result.system_budget
        resident = sum(
            p.memory_bytes for p in result.placements if p.resident and p.device in ("CPU", "GPU", "NPU")
        )
        assert resident == result.system_used


def test_measured_speed_overturns_the_preference() -> None:
    measured = [Measurement("fast", "cpu", 40.0, 120.0), Measurement("fast", "npu", 21.0, 900.0)]
    fast = plan_for("core-ultra-64gb", measured=measured).placement("fast")
    assert fast.device == "CPU"
    assert "measured fastest here: 40.0 tokens/s (vs 21.0 on NPU)" in fast.reason
    assert plan_for("core-ultra-64gb", measured=measured).measured


def test_npu_hosts_one_model() -> None:
    measured = [Measurement("code", "npu", 30.0, 200.0), Measurement("code", "gpu", 10.0, 200.0)]
    code = plan_for("core-ultra-64gb", measured=measured).placement("code")
    assert code.device == "GPU"
    assert "NPU: already hosts deepseek-r1-distill-qwen-1.5b (one request at a time)" in code.reason


def test_npu_needs_a_symmetric_int4_conversion() -> None:
    manifests = [
        fake_manifest("qwen2.5-coder-0.5b-instruct", "int8", 0.65),
        fake_manifest("qwen2.5-coder-1.5b-instruct", "int4-asym-awq", 1.1),
    ]
    result = plan_for("core-ultra-64gb", "embedded", manifests)
    fast = result.placement("fast")
    assert fast.device == "GPU"
    assert "NPU: not converted for it (npu-convert tier fast --device npu)" in fast.reason
    with_npu = [*manifests, fake_manifest("qwen2.5-coder-0.5b-instruct", "int4-sym-npu-awq", 0.48)]
    assert plan_for("core-ultra-64gb", "embedded", with_npu).placement("fast").device == "NPU"


def test_a_model_serving_two_tiers_is_counted_once() -> None:
    manifests = [
        fake_manifest("qwen2.5-coder-0.5b-instruct", "int8", 0.65),
        fake_manifest("qwen2.5-coder-1.5b-instruct", "int4-asym-awq", 1.1),
    ]
    result = plan_for("cpu-only-24gb", "embedded", manifests)
    fast, code = result.placement("fast"), result.placement("code")
    assert fast.device == code.device == "CPU"
    assert "shares the model loaded for tier fast" in code.reason
    others = result.placement("large").memory_bytes + result.placement("embed").memory_bytes
    assert result.system_used == fast.memory_bytes + others


def test_explain_mentions_every_tier() -> None:
    text = plan_for("core-ultra-64gb").explain()
    assert text.startswith("Plan for Core Ultra laptop: 48-TOPS NPU, Arc iGPU, 64 GB RAM")
    for tier in ("fast", "code", "large", "review"):
        assert f"  {tier}" in text


def test_bad_inventory_files(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="cannot read inventory"):
        read_inventory(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"memory_gb": 8, "devices": [{"name": "TPU", "kind": "tpu"}]}')
    with pytest.raises(UserInputError, match="device kind 'tpu' is not one of npu, gpu, cpu"):
        read_inventory(bad)
