"""`npu-convert export-ovms`: a stored model as an OpenVINO Model Server repository, in OVMS's
documented layout, that OpenVINO GenAI opens and answers from as the store's model does."""

import json
import shutil
from pathlib import Path

import pytest

from npu_engine.catalog import Catalog
from npu_engine.files import sha256_file
from npu_engine.manifest import Manifest
from npu_engine.ovms_export import OvmsRequest, export_ovms, llm_graph
from npu_engine.store import ModelStore
from tests.conftest import PRIME_PROMPT, QWEN
from tests.test_convert_cli import assert_user_error, run


def private_store(tmp_path: Path, cache_store: ModelStore, *manifests: Manifest) -> Path:
    """A store of its own holding copies of `manifests`' models, for tests that change files."""
    home = tmp_path / "home"
    for manifest in manifests:
        shutil.copytree(cache_store.path(manifest.name), ModelStore(home).path(manifest.name))
    return home


def greedy(folder: Path, prompt: str) -> str:
    import openvino_genai

    pipeline = openvino_genai.LLMPipeline(str(folder), "CPU")
    config = pipeline.get_generation_config()
    config.max_new_tokens = 48
    config.do_sample = False
    return str(pipeline.generate(prompt, config))


def test_repository_serves_the_stores_model(
    tmp_path: Path, cache_store: ModelStore, smollm_cpu: Manifest
) -> None:
    home = private_store(tmp_path, cache_store, smollm_cpu)
    repository = tmp_path / "ovms"
    result = run(home, "export-ovms", smollm_cpu.name, str(repository))
    assert result.returncode == 0, result.stderr
    assert "ovms --rest_port 8000 --config_path" in result.stdout
    config = json.loads((repository / "config.json").read_text())
    assert config == {
        "model_config_list": [{"config": {"name": smollm_cpu.name, "base_path": smollm_cpu.name}}]
    }
    folder = repository / smollm_cpu.name
    for entry in smollm_cpu.files:
        assert sha256_file(folder / entry.path) == entry.sha256, entry.path
    graph = (folder / "graph.pbtxt").read_text()
    assert 'calculator: "HttpLLMCalculator"' in graph
    assert 'models_path: "./"' in graph and 'device: "CPU"' in graph
    assert "tool_parser" not in graph  # SmolLM2 has no tool format of its own
    assert sorted(p.name for p in repository.iterdir()) == ["config.json", smollm_cpu.name]
    # OVMS runs the folder with OpenVINO GenAI: it answers as the store's copy does.
    assert greedy(folder, PRIME_PROMPT) == greedy(ModelStore(home).path(smollm_cpu.name), PRIME_PROMPT)


def test_config_keeps_other_servables_and_refuses_to_overwrite(
    tmp_path: Path, cache_store: ModelStore, smollm_cpu: Manifest
) -> None:
    home = private_store(tmp_path, cache_store, smollm_cpu)
    repository = tmp_path / "ovms"
    repository.mkdir()
    theirs = {"config": {"name": "team-model", "base_path": "/srv/models/team-model"}}
    (repository / "config.json").write_text(
        json.dumps({"model_config_list": [theirs], "monitoring": {"x": 1}})
    )
    assert run(home, "export-ovms", smollm_cpu.name, str(repository), "--servable", "fast").returncode == 0
    config = json.loads((repository / "config.json").read_text())
    assert config["model_config_list"] == [theirs, {"config": {"name": "fast", "base_path": "fast"}}]
    assert config["monitoring"] == {"x": 1}

    again = run(home, "export-ovms", smollm_cpu.name, str(repository), "--servable", "fast")
    assert_user_error(again, 4, "already exists: pass --force")
    (repository / "fast" / "stale.txt").write_text("left from before")
    forced = run(home, "export-ovms", smollm_cpu.name, str(repository), "--servable", "fast", "--force")
    assert forced.returncode == 0, forced.stderr
    assert not (repository / "fast" / "stale.txt").exists()
    assert len(json.loads((repository / "config.json").read_text())["model_config_list"]) == 2
    assert not [p for p in repository.iterdir() if p.name.startswith(".")]


def test_bad_requests_are_one_line_and_write_nothing(
    tmp_path: Path, cache_store: ModelStore, smollm_cpu: Manifest
) -> None:
    home = private_store(tmp_path, cache_store, smollm_cpu)
    repository = tmp_path / "ovms"
    assert_user_error(run(home, "export-ovms", "nope", str(repository)), 4, "no model named 'nope'")
    npu = run(home, "export-ovms", smollm_cpu.name, str(repository), "--device", "NPU")
    assert_user_error(npu, 2, "the NPU needs a model converted for it")
    repository.mkdir()
    (repository / "config.json").write_text("{not json")
    assert_user_error(run(home, "export-ovms", smollm_cpu.name, str(repository)), 2, "is not a readable OVMS")
    assert sorted(p.name for p in repository.iterdir()) == ["config.json"]
    as_config = run(
        home, "export-ovms", smollm_cpu.name, str(repository), "--servable", "config.json", "--force"
    )
    assert_user_error(as_config, 2, "cannot name a servable folder")
    assert (repository / "config.json").read_text() == "{not json"
    (repository / "config.json").write_text(json.dumps({"model_config_list": [{"config": None}]}))
    assert run(home, "export-ovms", smollm_cpu.name, str(repository), "--device", "cpu").returncode == 0
    shutil.rmtree(repository / smollm_cpu.name)
    (repository / "config.json").unlink()
    # A model whose files no longer match its manifest is not exported.
    weights = ModelStore(home).path(smollm_cpu.name) / "openvino_model.bin"
    with weights.open("r+b") as stream:
        stream.seek(1000)
        stream.write(b"\x00\x01\x02\x03")
    assert_user_error(
        run(home, "export-ovms", smollm_cpu.name, str(repository)), 4, "does not match its manifest"
    )
    assert list(repository.iterdir()) == []


def test_embedding_model_gets_the_embeddings_graph(
    tmp_path: Path, cache_store: ModelStore, minilm_cpu: Manifest
) -> None:
    import numpy as np
    import openvino_genai

    home = private_store(tmp_path, cache_store, minilm_cpu)
    repository = tmp_path / "ovms"
    assert run(home, "export-ovms", minilm_cpu.name, str(repository)).returncode == 0
    graph = (repository / minilm_cpu.name / "graph.pbtxt").read_text()
    assert 'calculator: "EmbeddingsCalculatorOV"' in graph
    assert "pooling: MEAN," in graph and "normalize_embeddings: true," in graph
    config = openvino_genai.TextEmbeddingPipeline.Config()
    config.pooling_type = openvino_genai.TextEmbeddingPipeline.PoolingType.MEAN
    config.normalize = True
    vector = openvino_genai.TextEmbeddingPipeline(
        str(repository / minilm_cpu.name), "CPU", config
    ).embed_query("def add(a, b): return a + b")
    assert np.isclose(np.linalg.norm(np.asarray(vector)), 1.0, atol=1e-3)


def test_qwen_graph_names_its_tool_parser_the_npu_its_prompt_limit_and_the_draft(catalog: Catalog) -> None:
    family = catalog.model(QWEN).family
    graph = llm_graph("NPU", family, 2048, draft=True)
    assert 'tool_parser: "hermes3"' in graph and "reasoning_parser" not in graph
    assert """plugin_config: '{"DEVICE_PROPERTIES": {"NPU": {"MAX_PROMPT_LEN": 2048}}}'""" in graph
    assert 'draft_models_path: "./draft"' in graph and 'draft_device: "NPU"' in graph
    reasoning = catalog.model("deepseek-r1-distill-qwen-1.5b").family
    assert 'reasoning_parser: "qwen3"' in llm_graph("CPU", reasoning, 1024, draft=False)


def test_draft_is_copied_beside_the_model(
    tmp_path: Path, cache_store: ModelStore, smollm_cpu: Manifest, minilm_cpu: Manifest
) -> None:
    home = private_store(tmp_path, cache_store, smollm_cpu, minilm_cpu)
    store = ModelStore(home)
    with pytest.raises(Exception, match="is an embedding model: it cannot draft"):
        export_ovms(store, OvmsRequest(smollm_cpu.name, tmp_path / "r", draft=minilm_cpu.name), None)
    done = export_ovms(store, OvmsRequest(smollm_cpu.name, tmp_path / "r", draft=smollm_cpu.name), None)
    assert (done.folder / "draft" / "openvino_model.xml").is_file()
    assert 'draft_models_path: "./draft"' in done.graph.read_text()
