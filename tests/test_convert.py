"""npu-convert on the real SmolLM2-135M: every source kind, the manifest, re-runs, --force, a full disk."""

import json
import shutil
from pathlib import Path

import pytest

from npu_engine.convert import ConvertRequest, describe
from npu_engine.demands import manifest_for
from npu_engine.errors import DiskSpaceError, ModelExistsError
from npu_engine.manifest import Manifest, verify_files
from npu_engine.recipes import Recipe, load_recipe_book
from npu_engine.store import ModelStore
from tests.conftest import make_converter
from tests.test_sources import ollama_store

SMOLLM_SHA = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def test_packaged_conversion_has_a_complete_manifest(smollm_cpu: Manifest, cache_store: ModelStore) -> None:
    m = smollm_cpu
    assert (m.name, m.model, m.device) == ("smollm2-135m-instruct-int8", "smollm2-135m-instruct", "cpu")
    assert (m.source.kind, m.source.id, m.source.digest) == (
        "packaged",
        "pkg:smollm2-135m-instruct",
        f"sha256:{SMOLLM_SHA}",
    )
    assert m.recipe.name == "int8"  # the CPU default for a model under 1B weights
    assert (m.architecture, m.parameters, m.context_length) == ("llama", 134515008, 8192)
    names = {entry.path for entry in m.files}
    expected = {
        "openvino_model.xml",
        "openvino_model.bin",
        "openvino_tokenizer.xml",
        "openvino_detokenizer.xml",
    }
    assert expected <= names
    assert (
        "chat_template.jinja" in names
        or "<|im_start|>" in (cache_store.path(m.name) / "tokenizer_config.json").read_text()
    )
    assert {"openvino", "nncf", "optimum-intel", "transformers"} <= set(m.tool_versions)
    assert verify_files(cache_store.path(m.name), m) == []
    on_disk = json.loads((cache_store.path(m.name) / "manifest.json").read_text())
    assert Recipe.from_dict(on_disk["recipe"]) == m.recipe


def test_the_npu_recipe_is_recorded(smollm_npu: Manifest) -> None:
    recipe = smollm_npu.recipe
    assert (recipe.weight_format, recipe.sym, recipe.group_size, recipe.ratio) == ("int4", True, 128, 1.0)
    assert smollm_npu.device == "npu"
    assert recipe.path == "gguf-direct"  # GenAI's graph, mended for the NPU (genai_graph)


def test_rerun_is_a_no_op(smollm_cpu: Manifest, cache_store: ModelStore) -> None:
    before = (cache_store.path(smollm_cpu.name) / "openvino_model.bin").stat().st_mtime_ns
    result = make_converter(cache_store).convert(ConvertRequest(source="pkg:smollm2-135m-instruct"))
    assert result.already_done
    assert "already converted" in describe(result)
    assert (cache_store.path(smollm_cpu.name) / "openvino_model.bin").stat().st_mtime_ns == before


def test_gguf_file_name_clash_and_force(tmp_path: Path, smollm_gguf: Path) -> None:
    store = ModelStore(tmp_path / "home")
    converter = make_converter(store)
    first = converter.convert(ConvertRequest(source=str(smollm_gguf), recipe="fp16", name="smol"))
    assert (first.manifest.source.kind, first.manifest.recipe.name) == ("gguf", "fp16")
    with pytest.raises(ModelExistsError, match="model 'smol' already exists .*use --force"):
        converter.convert(ConvertRequest(source=str(smollm_gguf), recipe="int8", name="smol"))
    assert store.get("smol").recipe.name == "fp16"
    replaced = converter.convert(
        ConvertRequest(source=str(smollm_gguf), recipe="int8", name="smol", force=True)
    )
    assert not replaced.already_done
    assert store.get("smol").recipe.name == "int8"
    assert verify_files(store.path("smol"), store.get("smol")) == []
    assert store.debris() == []


def test_hf_folder_conversion(tmp_path: Path, smollm_hf_folder: Path) -> None:
    store = ModelStore(tmp_path / "home")
    result = make_converter(store).convert(ConvertRequest(source=str(smollm_hf_folder), recipe="int8"))
    assert result.manifest.name == "hf-smollm2-int8"
    assert (result.manifest.source.kind, result.manifest.architecture) == ("hf-folder", "llama")
    assert verify_files(result.path, result.manifest) == []


def test_ollama_store_conversion(tmp_path: Path, smollm_gguf: Path) -> None:
    ollama = ollama_store(tmp_path / "ollama", smollm_gguf)
    store = ModelStore(tmp_path / "home")
    result = make_converter(store, ollama).convert(
        ConvertRequest(source="ollama:smollm2:135m", recipe="int8")
    )
    m = result.manifest
    # Named as the catalog names the model whose Ollama tag it is, so that its tiers find it.
    assert (m.name, m.model) == ("smollm2-135m-instruct-int8", "smollm2-135m-instruct")
    assert (m.source.kind, m.source.digest) == ("ollama", f"sha256:{SMOLLM_SHA}")
    assert manifest_for([m], "smollm2-135m-instruct", "cpu", load_recipe_book()) == m
    assert verify_files(result.path, m) == []


def test_full_disk_is_refused_before_any_work(tmp_path: Path, smollm_gguf: Path) -> None:
    store = ModelStore(tmp_path / "home", disk_free=lambda _path: 50_000_000)
    with pytest.raises(DiskSpaceError, match=r"not enough disk space .*[MG]B needed, 50\.0 MB free"):
        make_converter(store).convert(ConvertRequest(source=str(smollm_gguf)))
    assert store.manifests() == []
    assert store.debris() == []


def test_copied_model_verifies_and_tampering_is_found(
    tmp_path: Path, smollm_cpu: Manifest, cache_store: ModelStore
) -> None:
    store = ModelStore(tmp_path / "home")
    shutil.copytree(cache_store.path(smollm_cpu.name), store.path(smollm_cpu.name))
    assert verify_files(store.path(smollm_cpu.name), store.get(smollm_cpu.name)) == []
    with (store.path(smollm_cpu.name) / "openvino_model.bin").open("r+b") as blob:
        blob.seek(1000)
        byte = blob.read(1)
        blob.seek(1000)
        blob.write(bytes([byte[0] ^ 0xFF]))
    (store.path(smollm_cpu.name) / "stray.txt").write_text("x")
    problems = verify_files(store.path(smollm_cpu.name), store.get(smollm_cpu.name))
    assert problems == ["stray.txt: not in the manifest", "openvino_model.bin: sha256 differs"]
