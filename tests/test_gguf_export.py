"""The bounded conversion path: a GGUF built into IR from its quantized tensors, one weight at a time.

Synthetic models (tests/synthetic_gguf.py) give the real architectures' layouts at tiny shapes;
the real SmolLM2 and Qwen files give the real tokenizers and tensor types."""

import dataclasses
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from npu_engine.backends.openvino_genai import OpenVinoPipeline
from npu_engine.backends.pipeline_spec import PipelineSpec
from npu_engine.conversion_needs import conversion_needs
from npu_engine.convert import ConvertRequest, conversion_path
from npu_engine.errors import ConversionError
from npu_engine.genai_graph import mend_for_npu
from npu_engine.generation import SamplingOptions
from npu_engine.gguf_export import export_ir_from_gguf, refusal
from npu_engine.gguf_file import read_gguf
from npu_engine.gguf_standin import needs_standin, write_standin
from npu_engine.gguf_weights import gguf_rows, matrices
from npu_engine.mixed_precision import int4_layers
from npu_engine.progress import SilentReporter
from npu_engine.recipes import load_recipe_book
from npu_engine.sources.gguf import resolve_gguf
from npu_engine.store import ModelStore
from tests.conftest import make_converter
from tests.synthetic_gguf import SHAPES, write_sentencepiece_gguf, write_synthetic_gguf
from tests.test_sources import ollama_store

GB = 1_000_000_000


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory, smollm_gguf: Path) -> Path:
    """DeepSeek-Coder's layout (llama: untied head, no biases, q/k rows interleaved in the file)
    at a tiny shape, in Q4_1: a type whose group minimum GenAI's reader rounds."""
    out = tmp_path_factory.mktemp("synthetic") / "tiny-llama.Q4_1.gguf"
    write_synthetic_gguf(smollm_gguf, out, SHAPES["tiny-llama"], "Q4_1")
    return out


@pytest.fixture(scope="module")
def tiny_qwen2(tmp_path_factory: pytest.TempPathFactory, qwen_gguf: Path) -> Path:
    """Qwen2.5's layout (biases on q/k/v, tied embeddings) at a tiny shape, in Q5_0, as most of
    the packaged Qwen2.5-Coder-0.5B's matrices are: a type GenAI's reader does not take, so the
    graph comes from a stand-in (gguf_standin)."""
    out = tmp_path_factory.mktemp("synthetic") / "tiny-qwen2.Q5_0.gguf"
    write_synthetic_gguf(qwen_gguf, out, SHAPES["tiny"], "Q5_0")
    return out


def constant_digests(folder: Path) -> Counter[str]:
    """The digests of the IR's compressed weights, scales and zero points (integer and 16-bit
    constants of more than 64 values), with their types and shapes."""
    import openvino as ov

    model = ov.Core().read_model(folder / "openvino_model.xml")
    found: Counter[str] = Counter()
    for node in model.get_ordered_ops():
        if node.get_type_name() != "Constant" or node.get_element_type() == ov.Type.f32:
            continue
        shape = list(node.get_shape())
        if int(np.prod(shape)) <= 64 or node.get_element_type() in (ov.Type.i64, ov.Type.i32):
            continue
        data = np.asarray(node.get_data()).tobytes()
        found[f"{node.get_element_type()}{shape}:{hashlib.sha256(data).hexdigest()}"] += 1
    return found


def dequantize_path(gguf: Path, output: Path, recipe: str) -> None:
    from npu_engine.export import dequantize_gguf, export_ir

    hf = output.with_name(output.name + ".hf")
    dequantize_gguf(read_gguf(gguf), hf)
    export_ir(hf, output, load_recipe_book().get(recipe), trust_remote_code=False)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "recipe"),
    [
        ("tiny_llama", "int8"),
        ("tiny_llama", "int4-sym-npu"),
        ("tiny_qwen2", "int4-asym"),
        ("tiny_qwen2", "int8"),
    ],
)
def test_the_bounded_path_writes_the_weights_the_dequantize_path_writes(
    request: pytest.FixtureRequest, tmp_path: Path, model: str, recipe: str
) -> None:
    """Same file, same data-free recipe: every compressed constant (integers, scales, zero points)
    is bit for bit what de-quantizing to float32 and NNCF on optimum's export make. Had the values
    come from GenAI's graph, Q4_1's rounded zero points would show."""
    gguf = request.getfixturevalue(model)
    bounded, dequantized = tmp_path / "bounded", tmp_path / "dequantized"
    stage = tmp_path / "stage"
    stage.mkdir()
    export_ir_from_gguf(read_gguf(gguf), bounded, load_recipe_book().get(recipe), stage)
    dequantize_path(gguf, dequantized, recipe)
    ours, theirs = constant_digests(bounded), constant_digests(dequantized)
    assert sum(ours.values()) > 10
    assert ours == theirs
    assert sorted(p.name for p in stage.iterdir()) == ["tokenizer"]  # GenAI's graph is gone


def test_rows_are_read_exactly_from_the_file(tiny_llama: Path) -> None:
    """gguf's own de-quantizer on the file's blocks, q/k rows reordered as GenAI lays them out:
    the q projection read in two blocks is the whole one read at once, and agrees with the
    transformers-free reference, row by row."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    info = read_gguf(tiny_llama)
    by_name = {m.tensor.name: m for m in matrices(info)}
    q = by_name["blk.0.attn_q.weight"]
    assert q.permute == 128 // 4
    with gguf_rows(info) as rows:
        whole = rows.rows(q, 0, q.rows)
        halves = np.concatenate([rows.rows(q, 0, 50), rows.rows(q, 50, q.rows)])
        raw = np.memmap(tiny_llama, dtype=np.uint8, mode="r")
        size = q.tensor.n_bytes
        file_order = dequantize(
            np.asarray(raw[q.tensor.offset : q.tensor.offset + size]).reshape(q.rows, -1),
            GGMLQuantizationType.Q4_1,
        )
    assert np.array_equal(whole, halves)
    head = q.permute
    # Row r < head/2 of a head is the file's row 2r of it; the second half takes the odd rows.
    assert np.array_equal(whole[0], file_order[0])
    assert np.array_equal(whole[1], file_order[2])
    assert np.array_equal(whole[head // 2], file_order[1])
    assert np.array_equal(whole[head + 1], file_order[head + 2])


def test_a_file_that_does_not_hold_the_graphs_weights_is_refused(
    tmp_path: Path, tiny_llama: Path, smollm_gguf: Path
) -> None:
    import openvino as ov

    from npu_engine.gguf_export import build_graph, write_configs
    from npu_engine.requantize import ExactWeight, plan_weights

    write_configs(read_gguf(tiny_llama), tmp_path / "ir", tmp_path / "scratch")
    graph = build_graph(read_gguf(tiny_llama), tmp_path / "graph", tmp_path / "ir")
    other = tmp_path / "other.gguf"
    write_synthetic_gguf(smollm_gguf, other, SHAPES["tiny-llama"], "Q4_1", seed=1)
    model = ov.Core().read_model(graph / "openvino_model.xml")
    info = read_gguf(other)
    with gguf_rows(info) as rows, pytest.raises(ConversionError, match="no matrix of the file matches a"):
        exact = [
            ExactWeight(m.tensor.name, (m.rows, m.columns), lambda a, b, m=m: rows.rows(m, a, b))
            for m in matrices(info)
        ]
        plan_weights(model, load_recipe_book().get("int8"), exact)
    # The right file with one matrix too many: a weight the converter would not have re-compressed.
    own = read_gguf(tiny_llama)
    with gguf_rows(own) as rows, gguf_rows(info) as others:
        exact = [
            ExactWeight(m.tensor.name, (m.rows, m.columns), lambda a, b, m=m: rows.rows(m, a, b))
            for m in matrices(own)
        ]
        extra = matrices(info)[1]
        exact.append(
            ExactWeight(
                "blk.9.extra.weight", (extra.rows, extra.columns), lambda a, b: others.rows(extra, a, b)
            )
        )
        with pytest.raises(ConversionError, match="does not read blk.9.extra.weight of the file"):
            plan_weights(model, load_recipe_book().get("int8"), exact)


def test_mixed_precision_gives_int4_to_the_least_sensitive_layers_first() -> None:
    sizes = [10, 10, 10, 10, 60]
    scores = [5.0, 1.0, 4.0, 2.0, 3.0]
    # Ascending: 1 (10), 3 (20), 4 (80: reaches 0.8, stops). NNCF stops at the first layer that
    # would take the INT4 share to the ratio, it does not skip it for a smaller one.
    assert int4_layers(sizes, scores, 0.8) == {1, 3}
    assert int4_layers(sizes, scores, 0.95) == {1, 2, 3, 4}
    assert int4_layers(sizes, scores, 0.05) == set()


@pytest.mark.slow
def test_a_mixed_recipe_keeps_about_a_fifth_of_the_layers_at_int8(tmp_path: Path, tiny_qwen2: Path) -> None:
    import openvino as ov

    stage = tmp_path / "stage"
    stage.mkdir()
    recipe = load_recipe_book().get("int4-asym-mixed")
    export_ir_from_gguf(read_gguf(tiny_qwen2), tmp_path / "ir", recipe, stage)
    model = ov.Core().read_model(tmp_path / "ir" / "openvino_model.xml")
    weights: Counter[str] = Counter()
    for node in model.get_ordered_ops():
        if node.get_type_name() == "Constant" and node.get_friendly_name().startswith("blk."):
            weights[str(node.get_element_type())] += int(np.prod(list(node.get_shape())))
    int4, int8 = weights["<Type: 'uint4_t'>"], weights["<Type: 'uint8_t'>"]
    assert int4 > 0 and int8 > 0
    assert 0.6 <= int4 / (int4 + int8) < 0.8


def test_which_sources_take_the_bounded_path(tiny_llama: Path, qwen_gguf: Path) -> None:
    recipes = load_recipe_book()
    reporter = SilentReporter()
    llama = resolve_gguf(tiny_llama, reporter)
    on_cpu = ConvertRequest(source=str(tiny_llama))
    assert conversion_path(llama, recipes.get("int8"), on_cpu) == "gguf-direct"
    assert conversion_path(llama, recipes.get("int4-asym-mixed"), on_cpu) == "gguf-direct"
    assert conversion_path(llama, recipes.get("int4-asym-awq"), on_cpu) == "dequantized"
    assert refusal(read_gguf(tiny_llama), recipes.get("int4-asym-gptq")) is not None
    # The packaged Qwen2.5-Coder-0.5B holds Q5_0 tensors, which GenAI's reader refuses: a stand-in
    # with Q8_0 in their place gives it the graph.
    qwen = read_gguf(qwen_gguf)
    assert needs_standin(qwen) and refusal(qwen, recipes.get("int8")) is None
    odd = dataclasses.replace(qwen, tensor_types=qwen.tensor_types | {"Q9_9"})
    assert refusal(odd, recipes.get("int8")) == "OpenVINO GenAI does not read Q9_9 tensors"


def test_ollama_models_convert_on_the_bounded_path(tmp_path: Path, tiny_llama: Path) -> None:
    """deepseek-coder:6.7b-instruct's layout (llama) from an Ollama store, for the CPU and the NPU,
    both on the bounded path; the NPU's compiles and decodes on the emulated NPU (NPUW)."""
    ollama = ollama_store(tmp_path / "ollama", tiny_llama, name="deepseek-coder", tag="6.7b-instruct")
    store = ModelStore(tmp_path / "home")
    converter = make_converter(store, ollama)
    for device in ("cpu", "npu"):
        request = ConvertRequest(source="ollama:deepseek-coder:6.7b-instruct", device=device)
        manifest = converter.convert(request).manifest
        assert manifest.recipe.path == "gguf-direct"
        assert manifest.source.kind == "ollama"
        assert (store.path(manifest.name) / "openvino_model.xml").is_file()
    names = sorted(m.name for m in store.manifests())
    assert names == ["deepseek-coder-6.7b-instruct-int4-sym-npu", "deepseek-coder-6.7b-instruct-int8"]
    assert store.debris() == []
    npu = OpenVinoPipeline(PipelineSpec(store.path(names[0]), "NPU", max_prompt_len=64, emulate_npu=True))
    answer = npu.generate([{"role": "user", "content": "hello"}], SamplingOptions(max_new_tokens=4))
    assert answer.metrics.output_tokens == 4


def test_the_mends_make_genais_graph_compile_for_the_npu_and_change_nothing_on_the_cpu(
    tmp_path: Path, tiny_qwen2: Path
) -> None:
    """Mended for the NPU (genai_graph), GenAI's graph computes the same logits on the CPU to the
    bit; that the emulated NPU compiles it is test_ollama_models_convert_on_the_bounded_path's."""
    import openvino as ov

    from npu_engine.gguf_export import build_graph, write_configs

    stage = tmp_path / "stage"
    write_configs(read_gguf(tiny_qwen2), tmp_path / "tokenizer", stage)
    standin = tmp_path / "standin" / tiny_qwen2.name
    standin.parent.mkdir()
    write_standin(read_gguf(tiny_qwen2), standin)
    graph = build_graph(read_gguf(standin), tmp_path / "genai", tmp_path / "tokenizer")
    core = ov.Core()
    built = core.read_model(graph / "openvino_model.xml")
    mended = core.read_model(graph / "openvino_model.xml")
    done = mend_for_npu(mended)
    assert (done.broadcasts, done.states) == (2 * SHAPES["tiny"].layers, SHAPES["tiny"].layers)
    assert sorted(v.get_info().variable_id for v in mended.get_variables())[:2] == [
        "past_key_values.0.keypresent.0.key",
        "past_key_values.0.valuepresent.0.value",
    ]
    ids = np.array([[1, 5, 9, 2, 7, 3]], dtype=np.int64)
    inputs = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "position_ids": np.arange(ids.shape[1], dtype=np.int64)[None, :],
        "beam_idx": np.zeros(1, dtype=np.int32),
    }
    logits = [
        core.compile_model(m, "CPU").create_infer_request().infer(inputs)["logits"] for m in (built, mended)
    ]
    assert np.array_equal(logits[0], logits[1])


def test_the_bounded_estimate_fits_the_plans_models_on_the_plans_laptop() -> None:
    recipes = load_recipe_book()
    mixed = recipes.get("int4-asym-mixed")
    direct = mixed.__class__(**{**mixed.__dict__, "path": "gguf-direct"})
    # Ollama's files: deepseek-coder:6.7b-instruct Q4_0 3.8 GB, qwen2.5-coder:14b Q4_K_M 9.0 GB.
    assert conversion_needs(6_740_000_000, "gguf", direct, 3_830_000_000).peak_memory < 16 * GB
    assert conversion_needs(14_770_000_000, "gguf", direct, 8_990_000_000).peak_memory < 64 * GB
    float_path = mixed.__class__(**{**mixed.__dict__, "path": "dequantized"})
    dequantized = conversion_needs(14_770_000_000, "gguf", float_path, 8_990_000_000)
    assert dequantized.peak_memory > 64 * GB


def test_a_sentencepiece_vocabulary_converts_and_tokenizes_as_its_gguf_says(tmp_path: Path) -> None:
    """CodeLlama's tokenizer path (`tokenizer.ggml.model` llama): a synthetic SentencePiece GGUF
    converts, and both the Hugging Face tokenizer rebuilt from the file and the OpenVINO one made
    from it give llama.cpp's ids for the same file: <s> first, words with their space mark, byte
    fallback for the newline; the text comes back intact."""
    import openvino_genai
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    gguf = tmp_path / "synthetic-codellama.Q8_0.gguf"
    write_sentencepiece_gguf(gguf, SHAPES["tiny-llama"])
    store = ModelStore(tmp_path / "home")
    result = make_converter(store).convert(ConvertRequest(source=str(gguf)))
    assert result.manifest.recipe.path == "gguf-direct"
    text = "def add(a, b):\n    return a + b"
    expected = Llama(str(gguf), vocab_only=True, verbose=False).tokenize(text.encode(), add_bos=True)
    hf = AutoTokenizer.from_pretrained(result.path)
    assert hf(text)["input_ids"] == expected
    pieces = hf.convert_ids_to_tokens(expected)
    assert pieces[:3] == ["<s>", "\u2581def", "\u2581add"] and "<0x0A>" in pieces, pieces
    tokenizer = openvino_genai.Tokenizer(str(result.path))
    ids = np.asarray(tokenizer.encode(text).input_ids.data)[0].tolist()
    assert ids == expected
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert prompt == "<s>[INST] hi [/INST]"
    pipeline = openvino_genai.LLMPipeline(str(result.path), "CPU")
    config = openvino_genai.GenerationConfig(max_new_tokens=4, min_new_tokens=4, do_sample=False)
    answer = pipeline.generate(["def add"], config)  # random weights: any four tokens
    assert answer.perf_metrics.get_num_generated_tokens() == 4


def test_dequantize_asks_for_the_float_path(tmp_path: Path, tiny_llama: Path) -> None:
    converter = make_converter(ModelStore(tmp_path / "home"))
    request = ConvertRequest(source=str(tiny_llama), dequantize=True)
    assert converter.plan(request).recipe.path == "dequantized"
    assert converter.plan(ConvertRequest(source=str(tiny_llama))).recipe.path == "gguf-direct"
