"""Pre-converted OpenVINO IR, laid out as OpenVINO's `<model>-int8-ov` hub repos are: stored as it
is (no re-conversion), its recipe read from the IR, its catalog model found, and it answers as the
model it was made from."""

import json
import shutil
from pathlib import Path

import pytest

from npu_engine.convert import ConvertRequest
from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.manifest import MANIFEST_NAME, Manifest, verify_files
from npu_engine.store import ModelStore
from tests.conftest import PRIME_PROMPT, make_converter
from tests.test_convert_cli import assert_user_error, run

pytestmark = pytest.mark.slow


@pytest.fixture
def ir_repo(tmp_path: Path, cache_store: ModelStore, qwen_cpu: Manifest) -> Path:
    """qwen_cpu's files without our manifest: what a hub repo of pre-converted IR holds."""
    repo = tmp_path / "Qwen2.5-Coder-0.5B-Instruct-int8-ov"
    shutil.copytree(cache_store.path(qwen_cpu.name), repo, ignore=shutil.ignore_patterns(MANIFEST_NAME))
    return repo


def test_an_ir_folder_is_stored_as_it_is_and_answers_the_same(
    tmp_path: Path, ir_repo: Path, cache_store: ModelStore, qwen_cpu: Manifest
) -> None:
    store = ModelStore(tmp_path / "home")
    result = make_converter(store).convert(ConvertRequest(source=str(ir_repo)))
    m = result.manifest
    assert (m.model, m.source.kind, m.device) == ("qwen2.5-coder-0.5b-instruct", "ir-folder", "cpu")
    assert m.recipe.name == "ov-int8-asym-cw" and m.recipe.weight_format == "int8" and not m.recipe.sym
    assert m.recipe.devices == ("cpu", "gpu")
    assert m.name == "qwen2.5-coder-0.5b-instruct-ov-int8-asym-cw"
    # The very files, not a re-conversion.
    original = {entry.path: entry.sha256 for entry in qwen_cpu.files}
    assert {entry.path: entry.sha256 for entry in m.files} == original
    # Counted from the IR's weight constants (zero points included), against the source GGUF's count.
    assert abs(m.parameters - qwen_cpu.parameters) < 0.05 * qwen_cpu.parameters, m.parameters
    assert verify_files(result.path, m) == []
    again = make_converter(store).convert(ConvertRequest(source=str(ir_repo)))
    assert again.already_done
    # The embedded profile's code tier finds it as its model.
    engine = Engine.from_settings(store=store, profile="embedded", inventory=discover(), remotes=())
    imported = engine.generate(PRIME_PROMPT, tier="code", max_new_tokens=48)
    assert imported.model == m.name
    reference = Engine.from_settings(store=cache_store, profile="embedded", inventory=discover(), remotes=())
    assert imported.text == reference.generate_on(qwen_cpu.name, "CPU", PRIME_PROMPT, max_new_tokens=48).text


def test_what_an_ir_cannot_do_is_one_line(tmp_path: Path, ir_repo: Path) -> None:
    home, repo = tmp_path / "home", str(ir_repo)
    assert_user_error(run(home, "convert", repo, "--device", "npu"), 2, "the NPU needs symmetric INT4")
    assert_user_error(run(home, "convert", repo, "--recipe", "int4-asym"), 2, "--recipe does not apply")
    (ir_repo / "openvino_detokenizer.xml").unlink()
    assert_user_error(run(home, "convert", repo), 3, "holds OpenVINO IR but not openvino_detokenizer.xml")
    assert ModelStore(home).manifests() == []


def test_the_recipe_of_a_symmetric_int4_ir_is_read_from_its_runtime_info(
    tmp_path: Path, cache_store: ModelStore, qwen_npu: Manifest
) -> None:
    repo = tmp_path / "qwen2.5-coder-0.5b-instruct-int4-ov"
    shutil.copytree(cache_store.path(qwen_npu.name), repo, ignore=shutil.ignore_patterns(MANIFEST_NAME))
    result = run(tmp_path / "home", "convert", str(repo), "--device", "npu", "--dry-run")
    assert result.returncode == 0, result.stderr
    expected = f"{qwen_npu.recipe.group_size}" if qwen_npu.recipe.group_size > 0 else "cw"
    assert f"recipe ov-int4-sym-{'g' if expected != 'cw' else ''}{expected} for NPU" in result.stdout
    assert json.loads((repo / "config.json").read_text())["model_type"] == "qwen2"
