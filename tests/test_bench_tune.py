"""`npu-bench tune`: CPU runtime settings measured on real runtimes (OpenVINO on SmolLM2's IR,
llama.cpp on its source GGUF), kept only when they answer as the defaults do, written into the
device profile and opened by the engine's loader."""

from pathlib import Path

import openvino_genai
import pytest

from npu_engine.backends.factory import OpenVinoPipelineFactory
from npu_engine.backends.genai_config import generation_config
from npu_engine.backends.pipeline_spec import CpuSettings, PipelineSpec, Speculation
from npu_engine.bench import bench_prompts
from npu_engine.bench_cli import main as bench_main
from npu_engine.bench_tune import keep_tuned, tune, tune_table
from npu_engine.catalog import Catalog
from npu_engine.device_profile import DeviceProfile, TunedSettings, profile_path, read_profile, write_profile
from npu_engine.generation import SamplingOptions
from npu_engine.manifest import Manifest
from npu_engine.pipelines import PipelinePool
from npu_engine.recipes import load_recipe_book
from npu_engine.scheduler import Measurement
from npu_engine.store import ModelStore
from npu_engine.targets import PipelineLoader


def test_speculation_settings_reach_the_generation_config() -> None:
    options = SamplingOptions(max_new_tokens=8)
    confident = generation_config(
        openvino_genai, options, "speculative", speculation=Speculation(confidence=0.4)
    )
    assert confident.assistant_confidence_threshold == pytest.approx(0.4)
    drafted = generation_config(
        openvino_genai, options, "speculative", speculation=Speculation(draft_tokens=8)
    )
    assert drafted.num_assistant_tokens == 8
    looked = generation_config(
        openvino_genai, options, "prompt_lookup", speculation=Speculation(lookup_tokens=3, ngram=2)
    )
    assert looked.num_assistant_tokens == 3 and looked.max_ngram_size == 2
    assert CpuSettings(threads=1, kv_precision="f16").properties() == {
        "INFERENCE_NUM_THREADS": 1,
        "KV_CACHE_PRECISION": "f16",
    }
    assert PipelineSpec(Path("m"), "GPU", cpu=CpuSettings(threads=1)).properties() == {}


def test_tune_keeps_only_settings_that_answer_as_the_defaults_and_the_loader_opens_them(
    cache_store: ModelStore, smollm_cpu: Manifest, catalog: Catalog, tmp_path: Path
) -> None:
    said: list[str] = []
    prompts = bench_prompts()[:2]
    result = tune(
        catalog.profile("tiny"),
        catalog,
        cache_store,
        load_recipe_book(),
        prompts,
        OpenVinoPipelineFactory(),
        said.append,
        max_new_tokens=16,
        threads=2,
    )
    [kept] = result.tuned  # every tier of the profile runs the one SmolLM2 conversion
    assert kept.model == smollm_cpu.name and kept.device == "CPU" and kept.why
    trials = result.trials
    reference = trials[0]
    assert reference.setting == "defaults" and reference.identical == reference.prompts == 2
    assert reference.tokens_per_second > 0
    modes = {(t.backend, t.mode) for t in trials}
    # the large tier drafts with SmolLM2 itself; its GGUF is in the store's sources
    assert modes == {
        ("openvino", "plain"),
        ("openvino", "speculative"),
        ("openvino", "prompt_lookup"),
        ("llama.cpp", "plain"),
    }
    assert any("INFERENCE_NUM_THREADS=1" in t.setting for t in trials)
    assert all(t.answers_as_defaults for t in trials if t.kept)
    assert all(0 <= t.identical <= t.prompts for t in trials)
    cpu_kept = [t for t in trials if t.kept and t.mode == "plain" and t.backend == "openvino"]
    # CPU settings are kept only after a second measurement beside the defaults measured again
    chosen = [f"{kept.cpu.describe()} (again)"] if kept.cpu != CpuSettings() else []
    assert [t.setting for t in cpu_kept] == chosen
    assert len(said) == len(trials)
    assert "| defaults |" in tune_table(result)

    path = profile_path(tmp_path)
    measured = (Measurement("code", "cpu", 30.0, 90.0),)
    write_profile(
        path, DeviceProfile("box", "2026-12-01T00:00:00+00:00", measured, (TunedSettings("other", "CPU"),))
    )
    written = keep_tuned(path, "box", result)
    assert read_profile(path) == written
    assert written.measurements == measured and written.tuned_for("other", "CPU") is not None
    assert written.tuned_for(smollm_cpu.name, "CPU") == kept

    pool = PipelinePool(OpenVinoPipelineFactory(), 8 * 2**30, 60.0, 2)
    tuned = TunedSettings(
        smollm_cpu.name, "CPU", CpuSettings(threads=1), Speculation(ngram=2), llama_threads=1
    )
    loader = PipelineLoader(cache_store, pool, tuned=[tuned])
    spec = loader.spec(smollm_cpu, "CPU", "prompt_lookup")
    assert spec.cpu == CpuSettings(threads=1) and spec.speculation.ngram == 2
    assert spec.properties()["INFERENCE_NUM_THREADS"] == 1
    assert (
        PipelineLoader(cache_store, pool)
        .spec(smollm_cpu, "CPU")
        .properties()
        .keys()
        .isdisjoint({"INFERENCE_NUM_THREADS", "PERFORMANCE_HINT"})
    )
    gguf = loader.source_gguf(smollm_cpu, catalog)
    assert gguf is not None and loader.llama_cpp_spec(smollm_cpu, gguf, 4096).threads == 1


def test_tune_on_the_command_line_refuses_an_empty_prompt_set_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert bench_main(["tune", "--kinds", "no-such-kind"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "at least one prompt" in err[0]
