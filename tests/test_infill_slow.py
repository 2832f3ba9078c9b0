"""Fill-in-the-middle on the real coder model (Qwen2.5-Coder-0.5B, `embedded` profile): a function
with its body cut out comes back filled so that the file parses and passes its test; Continue's two
autocomplete request shapes, sent as Continue sends them, get an infill and not prose; the end
rules stop an infill early; and npu-bench's autocomplete row."""

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import openai
import pytest

from npu_engine.backends.openvino_genai import OpenVinoPipeline
from npu_engine.backends.pipeline_spec import PipelineSpec
from npu_engine.bench_autocomplete import autocomplete_cases, autocomplete_table, measure_autocomplete
from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.generation import RawPrompt, SamplingOptions
from npu_engine.manifest import Manifest
from npu_engine.server.app import create_app
from npu_engine.server.config import ServerConfig
from npu_engine.store import ModelStore
from tests.test_server import ServerThread

pytestmark = pytest.mark.slow

# A function with its body cut out: the cursor on the body's first line, at its indentation.
BEFORE = '''import math


def is_prime(n: int) -> bool:
    """Whether n is a prime number."""
    '''
AFTER = """


def primes_below(limit: int) -> list[int]:
    return [n for n in range(limit) if is_prime(n)]


assert primes_below(30) == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]
assert not is_prime(-7) and not is_prime(1) and is_prime(7919) and not is_prime(7917)
print("ok")
"""
# Continue's stop words for Qwen2.5-Coder's FIM template, then its common stops (getStopTokens.ts).
CONTINUE_STOPS = [
    "<|endoftext|>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<|im_start|>",
    "<|im_end|>",
    "/src/",
    "#- coding: utf-8",
    "```",
]
CONTINUE_MAX_TOKENS = 4096  # Continue's default maxTokens, sent as num_predict / max_tokens


@pytest.fixture(scope="module")
def engine(cache_store: ModelStore, qwen_cpu: Manifest) -> Engine:
    return Engine.from_settings(store=cache_store, profile="embedded", inventory=discover(), remotes=())


@pytest.fixture(scope="module")
def served(engine: Engine) -> Iterator[ServerThread]:
    with ServerThread(create_app(engine, ServerConfig())) as server:
        yield server


def assert_runs(code: str, tmp_path: Path) -> None:
    ast.parse(code)
    script = tmp_path / "filled.py"
    script.write_text(code)
    run = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )
    assert run.returncode == 0 and run.stdout.strip() == "ok", code + run.stderr


def assert_infill(infill: str) -> None:
    """Code that goes in the gap, not an assistant's prose about it."""
    assert infill.strip() and "```" not in infill and "Here" not in infill, infill


def test_the_openai_client_fills_a_function_body(served: ServerThread, tmp_path: Path) -> None:
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)
    completion = client.completions.create(model="code", prompt=BEFORE, suffix=AFTER, max_tokens=128)
    infill = completion.choices[0].text
    assert_infill(infill)
    assert_runs(BEFORE + infill + AFTER, tmp_path)
    assert completion.choices[0].finish_reason == "stop"
    streamed = client.completions.create(
        model="code", prompt=BEFORE, suffix=AFTER, max_tokens=128, stream=True
    )
    assert "".join(chunk.choices[0].text for chunk in streamed) == infill


def test_continues_ollama_shape_gets_an_infill(served: ServerThread, tmp_path: Path) -> None:
    """Ollama.ts `_streamFim`: /api/generate with the prefix, `suffix` and `raw: true`, streamed."""
    body = {
        "model": "code",
        "prompt": BEFORE,
        "suffix": AFTER,
        "raw": True,
        "options": {"temperature": 0.01, "num_predict": CONTINUE_MAX_TOKENS, "stop": CONTINUE_STOPS},
        "keep_alive": 1800,
        "stream": True,
    }
    with httpx.stream("POST", f"{served.url}/api/generate", json=body, timeout=300) as answer:
        assert answer.status_code == 200
        lines = [json.loads(line) for line in answer.iter_lines() if line.strip()]
    infill = "".join(line.get("response", "") for line in lines)
    assert lines[-1]["done"] and lines[-1]["eval_count"] < 128 and "context" not in lines[-1]
    assert_infill(infill)
    assert_runs(BEFORE + infill + AFTER, tmp_path)


def test_continues_openai_shape_gets_an_infill(served: ServerThread, tmp_path: Path) -> None:
    """OpenAI.ts `_legacystreamComplete`: the FIM prompt written out, raw, on /v1/completions."""
    body = {
        "model": "code",
        "max_tokens": CONTINUE_MAX_TOKENS,
        "temperature": 0.01,
        "stop": CONTINUE_STOPS,
        "prompt": f"<|fim_prefix|>{BEFORE}<|fim_suffix|>{AFTER}<|fim_middle|>",
        "stream": True,
    }
    pieces = []
    with httpx.stream("POST", f"{served.url}/v1/completions", json=body, timeout=300) as answer:
        assert answer.status_code == 200
        for line in answer.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                pieces.append(json.loads(line[6:])["choices"][0])
    infill = "".join(piece["text"] for piece in pieces)
    assert pieces[-1]["finish_reason"] == "stop"
    assert_infill(infill)
    assert_runs(BEFORE + infill + AFTER, tmp_path)


def test_the_indentation_rule_ends_an_infill_early(
    engine: Engine, cache_store: ModelStore, qwen_cpu: Manifest
) -> None:
    """The cursor in a method at the end of a file: the model goes on to the next method (less
    indented), which the rule cuts, where the pipeline alone would write on to the token limit."""
    before = "class Stack:\n    def __init__(self):\n        self.items = []\n\n"
    before += "    def push(self, item):\n        "
    result = engine.complete(before, suffix="", max_new_tokens=64)
    family = engine.family("code")
    assert family.infill is not None
    pipeline = OpenVinoPipeline(PipelineSpec(cache_store.path(qwen_cpu.name), "CPU"))
    prompt = RawPrompt(family.infill.prompt(before, ""), family.infill.stop)
    alone = pipeline.generate(prompt, SamplingOptions(max_new_tokens=64))
    assert result.finish_reason == "stop" and result.metrics.output_tokens < alone.metrics.output_tokens
    assert alone.text.startswith(result.text) and len(alone.text) > len(result.text)
    cut = alone.text[len(result.text) :]
    assert cut.lstrip("\n")[:1] == " " and not cut.lstrip("\n").startswith(" " * 8)  # dedented
    assert result.text.strip() and not result.text.strip().startswith("def ")


def test_the_autocomplete_bench_row(engine: Engine) -> None:
    cases = autocomplete_cases()
    assert len(cases) == 3 and all(c.prefix and c.suffix and c.middle for c in cases)
    # The row's arithmetic on a shorter cut of the first case: the full cases are npu-bench's to run.
    short = replace(cases[0], prefix=cases[0].prefix[-700:], suffix=cases[0].suffix[:300])
    row = measure_autocomplete(engine, "code", [short], runs=2, max_new_tokens=32)
    assert row.requests == 2 and 150 < row.input_tokens < 400 and 0 < row.output_tokens <= 32
    assert row.ttft_ms.mean > 0 and row.first_text_ms.mean <= row.total_ms.mean
    assert row.first_line_matches in (0, 2)  # greedy: both runs answer alike
    assert min(row.total_ms.median, row.ttft_ms.median) > 0
    assert f"| {row.total_ms.median:.0f} ({row.total_ms.mean:.0f} ± " in autocomplete_table([row])
