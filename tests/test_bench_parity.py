"""The quality comparison measures the weights, not the prompt: for a bench task, the tokens the
engine's OpenVINO pipeline reads are the tokens llama.cpp's baseline evaluated (the same chat
template, no system prompt added on either side), and both decode greedily to the model's end of
turn. Real runtimes on the packaged Qwen2.5-Coder models."""

from pathlib import Path

import pytest

from npu_engine.backends.genai_config import chat_prompt
from npu_engine.baselines import LlamaCppModel
from npu_engine.catalog import Catalog
from npu_engine.coding_tasks import load_tasks
from npu_engine.generation import SamplingOptions
from npu_engine.manifest import Manifest
from npu_engine.store import ModelStore
from tests.conftest import QWEN_LARGE, packaged_gguf

pytestmark = pytest.mark.slow


def _evaluated_by_llama_cpp(gguf: Path, messages: list[dict[str, str]]) -> list[int]:
    """The prompt tokens llama.cpp's baseline evaluated: after one greedy token, its KV cache holds
    the prompt and nothing else."""
    llama = LlamaCppModel(gguf, context=4096)
    try:
        llama.generate(messages, SamplingOptions(max_new_tokens=1))
        return [int(t) for t in llama._llm.input_ids[: llama._llm.n_tokens]]
    finally:
        llama.close()


def _read_by_openvino(model: Path, messages: list[dict[str, str]]) -> list[int]:
    import openvino_genai

    tokenizer = openvino_genai.Tokenizer(str(model))
    text = chat_prompt(openvino_genai, tokenizer, messages)
    # GenAI encodes a rendered chat template without adding special tokens (the template has them).
    return [int(t) for t in tokenizer.encode(text, add_special_tokens=False).input_ids.data[0]]


@pytest.mark.parametrize("which", ["code", "large"])
def test_the_engine_and_the_llama_cpp_baseline_read_the_same_prompt_tokens(
    which: str,
    cache_store: ModelStore,
    catalog: Catalog,
    qwen_gguf: Path,
    qwen_cpu: Manifest,
    qwen_large_cpu: Manifest,
) -> None:
    manifest, gguf = (
        (qwen_cpu, qwen_gguf)
        if which == "code"
        else (qwen_large_cpu, packaged_gguf(cache_store, catalog, QWEN_LARGE))
    )
    tasks = {t.language: t for t in reversed(load_tasks())}  # one task per language
    for task in tasks.values():
        messages = [{"role": "user", "content": task.request()}]
        ours = _read_by_openvino(cache_store.path(manifest.name), messages)
        theirs = _evaluated_by_llama_cpp(gguf, messages)
        assert ours == theirs, task.id
        # Qwen's template adds its default system turn when none is given, the same on both sides.
        assert len(ours) > len(task.request()) // 8
