"""Tiers placed on a remote OpenAI-compatible server by configuration (remote-tiers.json): read,
planned like a device by measured speed, answered by a real server (llama.cpp's, on 127.0.0.1),
measured by npu-bench, shown by `npu-engine plan`."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from npu_engine.bench import bench_prompts, measure_speed, to_measurements
from npu_engine.catalog import TIERS, load_catalog
from npu_engine.devices import Device, discover
from npu_engine.engine import Engine
from npu_engine.errors import UserInputError
from npu_engine.manifest import Manifest
from npu_engine.planner import Planner
from npu_engine.recipes import load_recipe_book
from npu_engine.remote_tiers import RemoteTier, read_remote_tiers, remote_tiers_path
from npu_engine.scheduler import Measurement, default_budget
from npu_engine.store import ModelStore
from tests.conftest import SMOLLM
from tests.test_scheduler import fake_manifest, machine

TEAM = RemoteTier("code", "team", "http://127.0.0.1:9/v1", "smollm2")


def write_tiers(home: Path, tiers: object) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = remote_tiers_path(home)
    path.write_text(json.dumps(tiers) if not isinstance(tiers, str) else tiers)
    return path


def test_the_file_names_server_url_model_and_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert read_remote_tiers(remote_tiers_path(tmp_path), TIERS) == ()
    entry = {"server": "team", "url": "https://ovms.lan/v1", "model": "m", "api_key_env": "TEAM_KEY"}
    path = write_tiers(tmp_path, {"tiers": {"review": entry}})
    (tier,) = read_remote_tiers(path, TIERS)
    assert tier == RemoteTier("review", "team", "https://ovms.lan/v1", "m", "TEAM_KEY")
    assert tier.api_key() is None
    monkeypatch.setenv("TEAM_KEY", "s3cret")
    assert tier.api_key() == "s3cret"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not readable JSON"),
        ({"review": {}}, 'expected {"tiers"'),
        ({"tiers": {"huge": {"server": "s", "url": "http://x", "model": "m"}}}, "'huge' is not a tier"),
        ({"tiers": {"code": {"server": "s", "model": "m"}}}, "tier 'code' needs url"),
        ({"tiers": {"code": {"server": "s", "url": "ftp://x", "model": "m"}}}, r"is not http\(s\)"),
        ({"tiers": {"code": {"server": "s", "url": "http://x", "model": 3}}}, "object of non-empty strings"),
        ({"tiers": {"code": {"server": "CPU", "url": "http://x", "model": "m"}}}, "server 'CPU' must be"),
        ({"tiers": {"code": {"server": "llama.cpp", "url": "http://x", "model": "m"}}}, "server 'llama.cpp'"),
        ({"tiers": {"code": {"server": "GPU.1", "url": "http://x", "model": "m"}}}, "server 'GPU.1'"),
        ({"tiers": {"code": {"server": "é quipe", "url": "http://x", "model": "m"}}}, "must be letters"),
        (
            {"tiers": {"code": {"server": "s", "url": "http://x", "model": "m", "key": "k"}}},
            "unknown fields key",
        ),
    ],
)
def test_a_bad_file_is_named_with_what_is_wrong(tmp_path: Path, content: object, message: str) -> None:
    path = write_tiers(tmp_path, content)
    with pytest.raises(UserInputError, match=message) as raised:
        read_remote_tiers(path, TIERS)
    assert str(path) in str(raised.value)


def planner(measurements: list[Measurement] | None = None) -> Planner:
    inventory = machine("cpu-only-24gb")
    catalog = load_catalog()
    return Planner(
        catalog.profile("tiny"),
        catalog,
        load_recipe_book(),
        inventory,
        default_budget(inventory),
        measurements or [],
        [TEAM],
    )


def test_planned_first_where_the_model_is_not_converted_or_not_measured() -> None:
    placed = planner().plan([]).placement("code")
    assert (placed.serves, placed.remote_first) == ("team", True)
    assert "not converted for CPU here" in placed.reason
    assert placed.fallback[0] == "CPU"
    assert "code    smollm2-135m-instruct on team (remote)" in planner().plan([]).explain()
    converted = [fake_manifest(SMOLLM, "int8", 0.2)]
    placed = planner().plan(converted).placement("code")
    assert placed.remote_first and "not measured against CPU" in placed.reason
    targets = planner().targets("code", converted)
    assert targets[0] == TEAM and isinstance(targets[1], Device) and targets[1].kind == "cpu"
    # Only the tier the file names has a server.
    assert planner().plan(converted).placement("fast").remote is None


def test_measured_speed_orders_the_server_and_the_device() -> None:
    converted = [fake_manifest(SMOLLM, "int8", 0.2)]
    local, remote = (
        Measurement("code", "cpu", 60.0, 90.0),
        Measurement("code", "remote", 25.0, 300.0, backend="team"),
    )
    placed = planner([local, remote]).plan(converted).placement("code")
    assert (placed.serves, placed.remote_first) == ("CPU", False)
    assert "measured 25.0 tokens/s on team vs 60.0 on CPU" in placed.reason
    assert placed.fallback[: placed.fallback.index("team") + 1][-1] == "team"
    targets = planner([local, remote]).targets("code", converted)
    assert targets[-1] == TEAM
    faster = Measurement("code", "remote", 120.0, 80.0, backend="team")
    assert planner([local, faster]).plan(converted).placement("code").remote_first
    # A measurement of another server does not count for this one.
    other = Measurement("code", "remote", 500.0, 10.0, backend="elsewhere")
    assert not planner([local, remote, other]).plan(converted).placement("code").remote_first
    # The server's figure orders it against the device; it never stands for a device's speed.
    cpu_only = planner([remote]).plan(converted)
    assert not cpu_only.measured and "REMOTE" not in cpu_only.placement("code").reason


def served_home(tmp_path: Path, llama_server: str, cache_store: ModelStore, *manifests: Manifest) -> Path:
    home = tmp_path / "home"
    for manifest in manifests:
        shutil.copytree(cache_store.path(manifest.name), ModelStore(home).path(manifest.name))
    entry = {"server": "team", "url": f"{llama_server}/v1", "model": "smollm2"}
    write_tiers(home, {"tiers": {"code": entry}})
    return home


def test_the_server_answers_its_tier_and_npu_bench_measures_it(
    tmp_path: Path, llama_server: str, cache_store: ModelStore, smollm_cpu: Manifest
) -> None:
    # Nothing converted: the server answers the tier at once, no fallback step before it.
    home = served_home(tmp_path, llama_server, cache_store)
    empty = Engine.from_settings(
        "tiny", store=ModelStore(home), inventory=discover(), remotes=(), measurements=[]
    )
    result = empty.generate("What is the capital of France?", tier="code", max_new_tokens=12)
    assert (result.device, result.model, result.backend, result.fallback) == (
        "team",
        "team:smollm2",
        "team",
        (),
    )
    assert result.text.strip()
    with pytest.raises(UserInputError, match="tier 'fast' has no remote server"):
        empty.generate("hi", tier="fast", backend="remote")

    # Converted here and measured faster here: the CPU answers, the server stays in the chain;
    # a request may still ask for either.
    home = served_home(tmp_path / "b", llama_server, cache_store, smollm_cpu)
    local = Measurement("code", "cpu", 500.0, 10.0, backend="openvino")
    remote = Measurement("code", "remote", 20.0, 300.0, backend="team")
    engine = Engine.from_settings(
        "tiny", store=ModelStore(home), inventory=discover(), remotes=(), measurements=[local, remote]
    )
    assert [target.name for target in engine.chain("code")] == ["CPU", "team"]
    assert engine.generate("Say hi.", tier="code", max_new_tokens=8).device == "CPU"
    asked = engine.generate("Say hi.", tier="code", max_new_tokens=8, backend="remote")
    assert asked.device == "team" and [step.target for step in asked.fallback] == ["CPU"]
    summary = measure_speed(engine, "code", "plain", bench_prompts()[:1], 1, 16, "remote")
    (measured,) = to_measurements([summary])
    assert (measured.tier, measured.device, measured.backend) == ("code", "remote", "team")
    assert measured.tokens_per_second > 0 and measured.ttft_ms > 0


def test_npu_engine_plan_shows_the_server_and_refuses_a_bad_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    entry = {"server": "team-ovms", "url": "http://127.0.0.1:9/v1", "model": "qwen2.5-coder-14b"}
    write_tiers(home, {"tiers": {"review": entry}})
    env = {**os.environ, "NPU_ENGINE_HOME": str(home)}
    command = [sys.executable, "-m", "npu_engine.engine_cli", "plan", "--profile", "tiny"]
    shown = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert shown.returncode == 0, shown.stderr
    review = shown.stdout.split("\n  review")[1].split("\n  embed")[0]
    assert review.startswith("  smollm2-135m-instruct on team-ovms (remote): NOT CONVERTED here, answered by")
    assert "why: " in review and "Remote tier: team-ovms first" in review
    write_tiers(home, {"tiers": {"review": {"server": "team-ovms"}}})
    refused = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"error: {remote_tiers_path(home)}: tier 'review' needs url, model"
    ]
