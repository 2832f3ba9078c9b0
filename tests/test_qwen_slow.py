"""Real coder model, end to end: Qwen2.5-Coder-0.5B from its packaged GGUF, converted with the CPU
and NPU default recipes, loaded by OpenVINO GenAI, and asked for a prime-number function that must
parse and be right."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from npu_engine.answers import extract_code, has_closed_block
from npu_engine.backends.openvino_genai import OpenVinoPipeline
from npu_engine.backends.pipeline_spec import PipelineSpec
from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.generation import SamplingOptions
from npu_engine.manifest import Manifest
from npu_engine.perplexity import greedy_margins
from npu_engine.store import ModelStore
from tests.conftest import PRIME_PROMPT

pytestmark = pytest.mark.slow

NUMBERS = [-7, 0, 1, 2, 3, 4, 9, 15, 17, 25, 29, 91, 97, 100, 7919]
PRIMES = {2, 3, 17, 29, 97, 7919}
HARNESS = """
import json, sys
namespace = {"__name__": "answer"}
exec(open(sys.argv[1]).read(), namespace)
candidates = [v for k, v in namespace.items() if callable(v) and "prime" in k.lower()]
print(json.dumps([bool(candidates[0](n)) for n in json.loads(sys.argv[2])]))
"""


def assert_correct_prime_function(answer: str, tmp_path: Path) -> None:
    code = extract_code(answer)
    ast.parse(code)
    script = tmp_path / "answer.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, "-c", HARNESS, str(script), json.dumps(NUMBERS)],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [n in PRIMES for n in NUMBERS]


def test_default_recipes(qwen_cpu: Manifest, qwen_npu: Manifest) -> None:
    assert (qwen_cpu.recipe.name, qwen_cpu.architecture) == ("int8", "qwen2")
    npu = qwen_npu.recipe
    assert (npu.name, npu.weight_format, npu.sym, npu.group_size, npu.ratio) == (
        "int4-sym-npu",
        "int4",
        True,
        128,
        1.0,
    )


def test_prime_on_cpu(cache_store: ModelStore, qwen_cpu: Manifest, tmp_path: Path) -> None:
    engine = Engine.from_settings(
        store=cache_store, profile="embedded", inventory=discover(), remotes=(), measurements=[]
    )
    result = engine.generate(PRIME_PROMPT, tier="code")
    assert (result.model, result.device) == (qwen_cpu.name, "CPU")
    assert_correct_prime_function(result.text, tmp_path)


def test_prime_on_emulated_npu(cache_store: ModelStore, qwen_npu: Manifest, tmp_path: Path) -> None:
    engine = Engine.from_settings(
        store=cache_store,
        profile="embedded",
        inventory=discover(),
        remotes=(),
        measurements=[],
        emulate_npu=True,
    )
    # NPUW on two cores decodes at about one token a second: stop once the function is written
    # (the explanation after it is what the answer's first 150 of ~390 tokens do not need).
    heard: list[str] = []

    def until_the_code_block(text: str) -> bool:
        heard.append(text)
        return has_closed_block("".join(heard))

    result = engine.generate(PRIME_PROMPT, tier="code", on_text=until_the_code_block)
    assert (result.model, result.device) == (qwen_npu.name, "NPU (emulated on CPU)")
    assert_correct_prime_function(result.text, tmp_path)


def test_tier_command_is_a_no_op_once_converted(cache_store: ModelStore, qwen_cpu: Manifest) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "npu_engine.convert_cli", "--quiet", "tier", "code", "--profile", "embedded"],
        capture_output=True,
        text=True,
        env={**os.environ, "NPU_ENGINE_HOME": str(cache_store.root)},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.strip()
        == f"{qwen_cpu.name}: already converted from the same source with recipe int8 (--force redoes it)"
    )


def test_rebuilt_tokenizer_matches_transformers_qwen2_converter(
    cache_store: ModelStore, qwen_cpu: Manifest
) -> None:
    """For qwen2 GGUFs transformers' converter is right; ours must agree with it token for token."""
    from transformers import AutoTokenizer

    gguf = cache_store.root / "sources" / "qwen2.5-coder-0.5b-instruct-awq-q4_k_m.gguf"
    reference = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ours = AutoTokenizer.from_pretrained(cache_store.path(qwen_cpu.name))
    corpus = [
        Path(__file__).read_text(),
        Path(ast.__file__).read_text()[:20000],
        "Ünïcödé 日本語 テスト 1234567890 <|im_start|>user\nhi<|im_end|>\n\t\t  trailing  ",
    ]
    for text in corpus:
        assert ours(text)["input_ids"] == reference(text)["input_ids"]
    assert ours.eos_token == "<|im_end|>"


NOISE = 0.1  # logits: how far below the best a token may sit and still count as a greedy choice


def test_speculative_and_prompt_lookup_stay_greedy(
    cache_store: ModelStore, qwen_cpu: Manifest, qwen_npu: Manifest
) -> None:
    """Speculative (drafted by a lower-precision copy: same tokenizer, as the 0.5B drafts for the
    1.5B) and prompt-lookup decoding verify several tokens per step, which can break an exact tie
    the other way than one-token decoding does. Scored by one full forward pass of the main model,
    every token they produce is its best token up to that noise, as plain decoding's are; a lost or
    repeated token would sit tens of logits below the best."""
    messages = [{"role": "user", "content": PRIME_PROMPT}]
    options = SamplingOptions(max_new_tokens=96)
    main = cache_store.path(qwen_cpu.name)
    plain_pipeline = OpenVinoPipeline(PipelineSpec(main, "CPU"))
    prompt = plain_pipeline.chat_prompt(messages)
    plain = plain_pipeline.generate(messages, options)
    draft = cache_store.path(qwen_npu.name)
    speculative = OpenVinoPipeline(PipelineSpec(main, "CPU", mode="speculative", draft_path=draft)).generate(
        messages, options
    )
    lookup = OpenVinoPipeline(PipelineSpec(main, "CPU", mode="prompt_lookup")).generate(messages, options)
    for result in (plain, speculative, lookup):
        assert max(greedy_margins(main, prompt, result.text)) <= NOISE, result.text
    assert (
        speculative.metrics.accepted_tokens is not None
        and speculative.metrics.accepted_tokens > speculative.metrics.output_tokens // 2
    )
    repeated = plain.text[:60] + plain.text[40:]
    assert max(greedy_margins(main, prompt, repeated)) > 50 * NOISE
