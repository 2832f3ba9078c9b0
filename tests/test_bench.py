"""npu-bench's speed runs at small scale on real IR, and the device profile it hands the scheduler."""

import json
import os
import subprocess
import sys
from pathlib import Path

from npu_engine.bench import bench_prompts, measure_speed, to_measurements
from npu_engine.bench_run import bench_engines
from npu_engine.catalog import Catalog
from npu_engine.device_profile import DeviceProfile, profile_path, read_profile, write_profile
from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.manifest import Manifest
from npu_engine.scheduler import Measurement
from npu_engine.store import ModelStore


def test_prompt_set_covers_the_kinds() -> None:
    kinds = {p.kind for p in bench_prompts()}
    assert {"snippet", "long", "explain", "review", "edit"} <= kinds
    assert {p.kind for p in bench_prompts(["edit"])} == {"edit"}
    lengths = sorted(len(p.prompt) for p in bench_prompts())
    assert lengths[0] < 150 and lengths[-1] > 2500  # ~30-token and ~750-token prompts


def test_speed_figures_are_consistent(cache_store: ModelStore, smollm_cpu: Manifest) -> None:
    engine = Engine.from_settings(
        store=cache_store, profile="tiny", inventory=discover(), remotes=(), measurements=[]
    )
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
        "code",
        "cpu",
        summary.tokens_per_second.mean,
        summary.ttft_ms.mean,
        "plain",
        "openvino",
        summary.prompt_tokens_per_second.mean,
    )
    assert measurement.prompt_tokens_per_second > 0


def test_llama_cpp_speed_is_measured_on_prompts_evaluated_whole(
    cache_store: ModelStore, smollm_cpu: Manifest, catalog: Catalog
) -> None:
    """The bench's engines evaluate every prompt whole: a prompt read back from the KV cache (the
    warm-up's, the previous run's) says nothing about prefill speed."""
    engine = bench_engines(cache_store, catalog)(discover(), profile="tiny")
    long = bench_prompts(["long"])[0]
    summary = measure_speed(engine, "code", "plain", [long], runs=2, max_new_tokens=8, backend="llama.cpp")
    assert summary.backend == "llama.cpp" and summary.runs == 2
    [measurement] = to_measurements([summary])
    assert measurement.backend == "llama.cpp" and measurement.prompt_tokens_per_second > 0
    again = engine.generate(long.prompt, tier="code", max_new_tokens=2, backend="llama.cpp")
    assert again.metrics.cached_tokens == 0


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
    engine = Engine.from_settings(store=store, profile="tiny", inventory=discover(), remotes=())
    assert engine.measurements == list(measured)
    assert engine.decoding_for("large", "cpu", has_draft=True) == "speculative"
    assert engine.decoding_for("large", "cpu", has_draft=False) == "plain"


def test_quick_run_writes_every_figure_consistently(
    tmp_path: Path, cache_store: ModelStore, smollm_cpu: Manifest, smollm_gguf: Path
) -> None:
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    os.symlink(cache_store.path(smollm_cpu.name), home / "models" / smollm_cpu.name)
    os.symlink(smollm_gguf.parent, home / "sources")
    env = {**os.environ, "NPU_ENGINE_HOME": str(home), "OLLAMA_HOST": "127.0.0.1:9"}
    command = [sys.executable, "-m", "npu_engine.bench_cli", "run", "--quick", "--out", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        "| tier | model | device | backend | mode | tokens/s | llama.cpp tokens/s |"
    )
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == {
        "results.json",
        "summary.md",
        "tokens_per_second.png",
        "concurrency.png",
    }
    data = json.loads((out / "results.json").read_text())
    assert data["machine"]["cpu_threads"] >= 1 and data["machine"]["versions"]["openvino"]
    assert data["bandwidth_gb_per_second"] > 0
    assert data["npu_claim"].startswith("No NPU on this machine")
    ours, llama = (
        next(s for s in data["speed"] if s["system"] == name) for name in ("npu-engine", "llama.cpp")
    )
    # The engine measured on each CPU backend; the device profile records both, prefill too.
    assert {s["backend"] for s in data["speed"] if s["system"] == "npu-engine"} == {"openvino", "llama.cpp"}
    written = json.loads((home / "device-profile.json").read_text())["measurements"]
    assert {m["backend"] for m in written} == {"openvino", "llama.cpp"}
    assert all(m["prompt_tokens_per_second"] > 0 for m in written)
    for row in (ours, llama):
        assert (row["tier"], row["mode"], row["runs"]) == ("code", "plain", 1)
        assert 0 < row["output_tokens"] <= 16 and row["input_tokens"] > 0
        assert row["ttft_ms"]["mean"] > 0 and row["peak_rss_bytes"] > 0
        # tokens/s and ms/token are two views of one measurement
        assert abs(row["tokens_per_second"]["mean"] * row["tpot_ms"]["mean"] / 1000 - 1) < 0.05
        # prompt tokens/s is the prompt over the first-token time
        prompt_rate = row["input_tokens"] * 1000 / row["ttft_ms"]["mean"]
        assert abs(row["prompt_tokens_per_second"]["mean"] / prompt_rate - 1) < 1e-6
    assert ours["model"] == smollm_cpu.name and llama["model"] == smollm_gguf.name
    assert ours["ceiling_tokens_per_second"] > 0 and llama["ceiling_tokens_per_second"] is None
    for point in data["concurrency"]:
        assert point["completed"] + point["busy"] == point["requests"] and point["completed"] >= 1
        assert 0 < point["latency_p50_ms"] <= point["latency_p95_ms"] <= point["seconds"] * 1000 + 1
        assert point["tokens_per_second"] * point["seconds"] <= point["requests"] * 16 + 1e-6
    assert [p["requests"] for p in data["concurrency"]] == [1, 2]
    [load] = data["load"]
    assert load["cold_seconds"] > 0 and load["warm_seconds"] > 0
    # The engine's answers on each CPU backend: OpenVINO on the IR, llama.cpp on its source GGUF.
    systems = {(q["system"], q["backend"]): q for q in data["quality"]}
    assert set(systems) == {("npu-engine", "openvino"), ("npu-engine", "llama.cpp")}
    for q in systems.values():
        assert q["tasks"] == 4 and {o["language"] for o in q["outcomes"]} == {
            "python",
            "javascript",
            "sql",
            "shell",
        }
        assert q["pass_at_1"] == q["passed"] / q["tasks"] == sum(o["passed"] for o in q["outcomes"]) / 4
    assert any("Ollama baseline skipped" in note for note in data["notes"])
    # The profile written is the one the scheduler then reads.
    profile = read_profile(profile_path(home))
    assert profile is not None
    on_llama = next(s for s in data["speed"] if s["system"] == "npu-engine" and s["backend"] == "llama.cpp")
    assert profile.measurements == tuple(
        Measurement(
            "code",
            "cpu",
            row["tokens_per_second"]["mean"],
            row["ttft_ms"]["mean"],
            "plain",
            row["backend"],
            row["prompt_tokens_per_second"]["mean"],
            systems[("npu-engine", row["backend"])]["pass_at_1"],
            # One task per language: each language's rate is whether its task passed.
            tuple(
                (o["language"], float(o["passed"]))
                for o in sorted(
                    systems[("npu-engine", row["backend"])]["outcomes"], key=lambda o: o["language"]
                )
            ),
        )
        for row in (ours, on_llama)
    )
    engine = Engine.from_settings(store=ModelStore(home), profile="tiny", inventory=discover(), remotes=())
    assert engine.measurements == list(profile.measurements)
    summary = (out / "summary.md").read_text()
    assert "## Quality" in summary and "## Concurrency" in summary and "cannot be checked here" in summary


def test_bench_command_rejects_bad_input_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "NPU_ENGINE_HOME": str(tmp_path)}
    for extra, message in [
        (["--tiers", "huge"], "error: unknown tier 'huge' (known: fast, code, large, review)"),
        (["--modes", "turbo"], "error: unknown mode 'turbo' (known: plain, speculative, prompt_lookup)"),
        (
            ["--profile", "tiny", "--tiers", "code", "--concurrency", "0"],
            "error: --concurrency takes positive numbers, e.g. 1,2,4,8",
        ),
    ]:
        bad = subprocess.run(
            [sys.executable, "-m", "npu_engine.bench_cli", "run", *extra],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert (bad.returncode, bad.stderr.strip()) == (2, message)


def test_quality_per_recipe(
    tmp_path: Path, cache_store: ModelStore, smollm_cpu: Manifest, smollm_npu: Manifest
) -> None:
    env = {**os.environ, "NPU_ENGINE_HOME": str(cache_store.root)}
    command = [sys.executable, "-m", "npu_engine.bench_cli", "quality", "smollm2-135m-instruct"]
    result = subprocess.run(
        [*command, "--recipes", "int8,int4-sym-npu", "--languages", "sql", "--out", str(tmp_path / "q")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "q" / "results.json").read_text())
    assert [(q["recipe"], q["tasks"]) for q in data["quality"]] == [("int8", 6), ("int4-sym-npu", 6)]
    assert "| npu-engine | openvino | - | smollm2-135m-instruct-int8 | int8 |" in result.stdout
    missing = subprocess.run(
        [*command, "--recipes", "fp16"], capture_output=True, text=True, env=env, timeout=60
    )
    assert missing.returncode == 2 and missing.stderr.startswith("error: unknown converted recipe 'fp16'")
