"""npu-bench's speed runs at small scale on real IR, and the device profile it hands the scheduler."""

import json
import os
import subprocess
import sys
from pathlib import Path

from npu_engine.bench import bench_prompts, measure_speed, to_measurements
from npu_engine.device_profile import DeviceProfile, profile_path, read_profile, write_profile
from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.manifest import Manifest
from npu_engine.scheduler import Measurement
from npu_engine.store import ModelStore


def test_prompt_set_covers_the_kinds() -> None:
    kinds = {p.kind for p in bench_prompts()}
    assert {"snippet", "long", "explain", "review", "edit"} <= kinds
    assert [p.kind for p in bench_prompts(["edit"])] == ["edit"]


def test_speed_figures_are_consistent(cache_store: ModelStore, smollm_cpu: Manifest) -> None:
    engine = Engine(store=cache_store, profile="tiny", inventory=discover(), remotes={}, measurements=[])
    summary = measure_speed(engine, "code", "plain", bench_prompts(["snippet"]), runs=2, max_new_tokens=16)
    assert (summary.model, summary.device, summary.runs) == (smollm_cpu.name, "CPU", 4)
    assert summary.output_tokens <= 4 * 16
    assert summary.tokens_per_second.mean > 0 and summary.ttft_ms.mean > 0
    # tokens/s and ms/token are two views of one measurement
    assert (
        abs(summary.tokens_per_second.mean - 1000 / summary.tpot_ms.mean) / summary.tokens_per_second.mean
        < 0.35
    )
    [measurement] = to_measurements([summary])
    assert measurement == Measurement(
        "code", "cpu", summary.tokens_per_second.mean, summary.ttft_ms.mean, "plain"
    )


def test_the_profile_written_is_the_one_the_engine_reads(tmp_path: Path, cache_store: ModelStore) -> None:
    measured = (
        Measurement("large", "cpu", 50.0, 90.0, "plain"),
        Measurement("large", "cpu", 80.0, 95.0, "speculative"),
    )
    write_profile(profile_path(tmp_path), DeviceProfile("test box", "2026-11-24T00:00:00+00:00", measured))
    assert read_profile(profile_path(tmp_path)) == DeviceProfile(
        "test box", "2026-11-24T00:00:00+00:00", measured
    )
    store = ModelStore(tmp_path)
    engine = Engine(store=store, profile="tiny", inventory=discover(), remotes={})
    assert engine.measurements == list(measured)
    cpu = engine.inventory.of_kind("cpu")[0]
    assert engine._fastest_mode("large", cpu, has_draft=True) == "speculative"
    assert engine._fastest_mode("large", cpu, has_draft=False) == "plain"


def test_bench_command_writes_results(tmp_path: Path, cache_store: ModelStore, smollm_cpu: Manifest) -> None:
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    os.symlink(cache_store.path(smollm_cpu.name), home / "models" / smollm_cpu.name)
    env = {**os.environ, "NPU_ENGINE_HOME": str(home)}
    command = [
        sys.executable,
        "-m",
        "npu_engine.bench_cli",
        "speed",
        "--profile",
        "tiny",
        "--kinds",
        "snippet",
    ]
    command += ["--runs", "1", "--max-new-tokens", "8", "--out", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("| tier | model | device | mode |")
    data = json.loads((tmp_path / "out" / "speed.json").read_text())
    [row] = data["results"]
    assert set(row) >= {
        "tier",
        "device",
        "mode",
        "model",
        "runs",
        "tokens_per_second",
        "ttft_ms",
        "load_seconds",
    }
    profile = read_profile(profile_path(home))
    assert profile is not None and profile.measurements[0].tier == "code"
    bad = subprocess.run(
        [*command[:6], "--tiers", "huge"], capture_output=True, text=True, env=env, timeout=60
    )
    assert (
        bad.returncode == 2
        and bad.stderr.strip() == "error: unknown tier 'huge' (known: fast, code, large, review)"
    )
