"""npu-convert knows before it starts: the memory and disk a conversion needs, refused with both
numbers when they do not fit, `--dry-run` to ask, and estimates held to measured peaks."""

import json
from pathlib import Path

import pytest

from npu_engine.catalog import Catalog, PackagedFile
from npu_engine.conversion_needs import SystemMemory, conversion_needs
from npu_engine.convert import ConvertRequest
from npu_engine.errors import ConversionMemoryError
from npu_engine.gguf_file import read_gguf
from npu_engine.manifest import Manifest
from npu_engine.recipes import load_recipe_book
from npu_engine.store import ModelStore
from tests.conftest import PEAKS_FILE, QWEN_LARGE, make_converter
from tests.synthetic_gguf import SHAPES, write_synthetic_gguf
from tests.test_convert_cli import assert_user_error, run

GB = 1_000_000_000
# The estimate may be off by this much either way from a peak measured with wait4's rusage.
TOLERANCE = 0.25


def small_machine(total: int, available: int) -> SystemMemory:
    return SystemMemory(total=total, available=available)


def test_a_conversion_that_does_not_fit_in_memory_is_refused_before_any_work(
    tmp_path: Path, smollm_gguf: Path
) -> None:
    store = ModelStore(tmp_path / "home")
    converter = make_converter(store)
    converter.memory = lambda: small_machine(4 * GB, 300_000_000)
    with pytest.raises(
        ConversionMemoryError,
        match=r"cannot convert smollm2-135m-instruct[^:]*-int8: it needs about [\d.]+ [MG]B of memory at its "
        r"peak, more than is available now .*: 4\.0 GB in all, 300\.0 MB available",
    ):
        converter.convert(ConvertRequest(source=str(smollm_gguf)))
    assert store.manifests() == []
    assert store.debris() == []


def test_a_catalog_model_is_refused_before_its_download(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "home")
    converter = make_converter(store)
    converter.memory = lambda: small_machine(4 * GB, 3 * GB)
    with pytest.raises(ConversionMemoryError, match=r"more than this machine has: 4\.0 GB in all, 3\.0 GB"):
        converter.convert(ConvertRequest(source=f"pkg:{QWEN_LARGE}"))
    assert not (store.root / "sources").exists()  # nothing was downloaded or unpacked
    # Planned before the download on the bounded path its GGUF takes, mixed precision included.
    plan = converter.plan(ConvertRequest(source=f"pkg:{QWEN_LARGE}"))
    assert (plan.recipe.name, plan.recipe.path) == ("int4-asym-mixed", "gguf-direct")
    assert 4 * GB < plan.needs.peak_memory < 5 * GB


def test_estimates_grow_with_weights_recipe_and_source_format(catalog: Catalog) -> None:
    recipes = load_recipe_book()
    int8, mixed = recipes.get("int8"), recipes.get("int4-asym-mixed")
    small = conversion_needs(500_000_000, "gguf", int8)
    assert conversion_needs(1_500_000_000, "gguf", int8).peak_memory > small.peak_memory
    assert conversion_needs(500_000_000, "gguf", mixed).peak_memory > small.peak_memory
    assert conversion_needs(500_000_000, "gguf", int8).disk > conversion_needs(500_000_000, "hf", int8).disk
    assert small.output < small.disk
    # The plan's models at today's rate: none of 14B and 70B fit on the plan's 64 GB laptop.
    for model in ("qwen2.5-coder-14b-instruct", "codellama-70b-instruct"):
        weights = catalog.model(model).parameters
        assert conversion_needs(weights, "hf", recipes.get("int4-asym")).peak_memory > 64 * GB


def test_dry_run_prints_the_needs_and_converts_nothing(tmp_path: Path, smollm_gguf: Path) -> None:
    home = tmp_path / "home"
    result = run(home, "convert", str(smollm_gguf), "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("smollm2-135m-instruct.q4-1-int8: "), lines
    assert "135M weights, GGUF), recipe int8 for CPU" in lines[0], lines
    assert lines[1].startswith("  memory at the peak: about ") and "available)" in lines[1], lines
    assert lines[2].startswith("  disk at the peak: about ") and "the model keeps about" in lines[2], lines
    assert lines[-1] == "  fits", lines
    assert ModelStore(home).manifests() == []


def test_dry_run_of_a_tier_too_big_for_any_laptop_exits_5(tmp_path: Path) -> None:
    result = run(tmp_path / "home", "tier", "review", "--profile", "plan", "--dry-run")
    assert result.returncode == 5, result.stderr
    assert result.stdout.startswith("codellama-70b-instruct-"), result.stdout
    assert "68,977M weights, HF" in result.stdout
    assert "  does not fit: it needs about " in result.stdout, result.stdout
    assert not (tmp_path / "home" / "sources").exists()


def test_refusal_from_the_command_line_is_one_line_with_both_numbers(tmp_path: Path) -> None:
    # The 70B would need hundreds of GB: refused before any download is tried (no hub here).
    result = run(tmp_path / "home", "convert", "hf:codellama/CodeLlama-70b-Instruct-hf")
    assert_user_error(result, 5, "of memory at its peak, more than this machine has")


@pytest.mark.slow
def test_estimates_are_within_a_quarter_of_measured_peaks(
    cache_store: ModelStore,
    catalog: Catalog,
    smollm_cpu: Manifest,
    smollm_npu: Manifest,
    qwen_cpu: Manifest,
    qwen_npu: Manifest,
    qwen_large_cpu: Manifest,
    minilm_cpu: Manifest,
) -> None:
    """Each session conversion ran in its own process (tests/conftest.py: convert_measured)."""
    peaks = json.loads((cache_store.root / PEAKS_FILE).read_text("utf-8"))
    report = []
    for manifest in (smollm_cpu, smollm_npu, qwen_cpu, qwen_npu, qwen_large_cpu, minilm_cpu):
        packaged = catalog.model(manifest.model).packaged
        source_format = "gguf" if isinstance(packaged, PackagedFile) else "hf"
        size, types = 0, frozenset[str]()
        if isinstance(packaged, PackagedFile):
            size = packaged.size
            types = read_gguf(cache_store.root / "sources" / packaged.file).tensor_types
        estimate = conversion_needs(
            manifest.parameters, source_format, manifest.recipe, size, types
        ).peak_memory
        measured = peaks[manifest.name]["peak_bytes"]
        report.append(
            f"{manifest.name} ({manifest.recipe.path or 'before paths were recorded'}): "
            f"estimate {estimate / GB:.2f} GB, measured {measured / GB:.2f} GB"
        )
        assert abs(estimate - measured) <= TOLERANCE * measured, "\n".join(report)


@pytest.mark.slow
def test_a_synthetic_model_is_planned_from_its_shape(
    tmp_path: Path, cache_store: ModelStore, qwen_cpu: Manifest
) -> None:
    """The helper that writes the 3B-shaped model of the README's table, at a tiny shape: the weight
    count the planner reads from the file is the shape's, and the file passes the GGUF checks."""
    source = cache_store.root / "sources" / "qwen2.5-coder-0.5b-instruct-awq-q4_k_m.gguf"
    out = tmp_path / "tiny-qwen2.gguf"
    weights = write_synthetic_gguf(source, out, SHAPES["tiny"])
    result = run(tmp_path / "home", "convert", str(out), "--device", "npu", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"({weights / 1e6:,.0f}M weights, GGUF), recipe int4-sym-npu for NPU" in result.stdout


def test_a_refusal_names_the_pre_converted_ir_the_catalog_knows(tmp_path: Path) -> None:
    converter = make_converter(ModelStore(tmp_path / "home"))
    converter.memory = lambda: small_machine(64 * GB, 60 * GB)  # the plan's laptop
    with pytest.raises(ConversionMemoryError) as refused:
        converter.convert_tier("plan", "large", "cpu", None, False)
    message = str(refused.value)
    assert "cannot convert qwen2.5-coder-14b-instruct-int4-asym-mixed: it needs about 117" in message
    assert message.endswith("npu-convert hf:OpenVINO/Qwen2.5-Coder-14B-Instruct-int4-ov"), message
    plan = converter.plan_tier("plan", "large", "cpu", None)[0]
    assert plan.preconverted == ("OpenVINO/Qwen2.5-Coder-14B-Instruct-int4-ov",)
