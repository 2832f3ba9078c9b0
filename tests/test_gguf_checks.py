"""GGUF metadata that contradicts the tensors is refused in one line before any heavy work.

Each case is the real SmolLM2 GGUF with one value changed, as the adversarial probe of issue 10
made them: today they give tracebacks, hang (block_count 1000) or convert with exit 0."""

import math
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from npu_engine.errors import SourceError
from npu_engine.gguf_checks import check_convertible
from npu_engine.gguf_file import read_gguf
from npu_engine.progress import SilentReporter
from npu_engine.sources.gguf import resolve_gguf
from tests import gguf_bytes as g
from tests.test_convert_cli import assert_store_clean, assert_user_error, run

Edit = Callable[[list[g.Kv]], list[g.Kv]]
BROKEN_TEMPLATE = "{% for message in messages %}{{ message['content'] }"

# (case, metadata edit, tensor retypes, what the one line says)
CASES: list[tuple[str, Edit, dict[str, int], str]] = [
    ("block-count-0", g.replace("llama.block_count", g.u32("llama.block_count", 0)), {}, "block_count is 0"),
    (
        "block-count-1000",
        g.replace("llama.block_count", g.u32("llama.block_count", 1000)),
        {},
        "block_count says 1000 layers but the layer tensors are blk.0 to blk.29",
    ),
    (
        "head-count-0",
        g.replace("llama.attention.head_count", g.u32("llama.attention.head_count", 0)),
        {},
        "head_count is 0",
    ),
    (
        "embedding-length-1",
        g.replace("llama.embedding_length", g.u32("llama.embedding_length", 1)),
        {},
        "embedding_length 1 is not a multiple of",
    ),
    (
        "embedding-length-wrong",
        g.replace("llama.embedding_length", g.u32("llama.embedding_length", 288)),
        {},
        "has shape [576, 49152] but the metadata implies [288, 49152]",
    ),
    (
        "context-0xffffffff",
        g.replace("llama.context_length", g.u32("llama.context_length", 0xFFFFFFFF)),
        {},
        "context_length is 4,294,967,295, outside",
    ),
    (
        "eos-4e9",
        g.replace("tokenizer.ggml.eos_token_id", g.u32("tokenizer.ggml.eos_token_id", 4_000_000_000)),
        {},
        "eos_token_id is 4000000000, outside the vocabulary of 49152 tokens",
    ),
    (
        "bos-4e9",
        g.replace("tokenizer.ggml.bos_token_id", g.u32("tokenizer.ggml.bos_token_id", 4_000_000_000)),
        {},
        "bos_token_id is 4000000000, outside the vocabulary",
    ),
    (
        "rms-eps-nan",
        g.replace(
            "llama.attention.layer_norm_rms_epsilon",
            g.f32("llama.attention.layer_norm_rms_epsilon", math.nan),
        ),
        {},
        "layer_norm_rms_epsilon is nan",
    ),
    (
        "architecture-relabelled",
        g.rename_architecture("llama", "qwen2", keys_too=False),
        {},
        "qwen2.block_count is missing",
    ),
    (
        "architecture-and-keys-relabelled",
        g.rename_architecture("llama", "qwen2", keys_too=True),
        {},
        "qwen2 layers have q, k and v biases but blk.0 has none",
    ),
    (
        "tensor-type-relabelled",
        lambda kvs: kvs,
        {"blk.3.attn_q.weight": g.Q8_0_TYPE},
        "blk.3.attn_q.weight of type Q8_0",
    ),
    (
        "chat-template-broken",
        g.replace("tokenizer.chat_template", g.text("tokenizer.chat_template", BROKEN_TEMPLATE)),
        {},
        "tokenizer.chat_template does not compile",
    ),
]


def corrupted(smollm_gguf: Path, folder: Path, case: str) -> tuple[Path, str]:
    _, edit, retype, message = next(entry for entry in CASES if entry[0] == case)
    return g.rewrite(smollm_gguf, folder / f"{case}.gguf", edit, retype), message


def test_the_real_gguf_passes(smollm_gguf: Path) -> None:
    check_convertible(read_gguf(smollm_gguf))


def test_an_unedited_rewrite_passes(smollm_gguf: Path, tmp_path: Path) -> None:
    """The corrupting helper itself changes nothing else: a copy without edits is accepted."""
    check_convertible(read_gguf(g.rewrite(smollm_gguf, tmp_path / "copy.gguf")))


@pytest.mark.parametrize("case", [entry[0] for entry in CASES])
def test_corrupted_metadata_is_refused(smollm_gguf: Path, tmp_path: Path, case: str) -> None:
    path, message = corrupted(smollm_gguf, tmp_path, case)
    started = time.monotonic()
    with pytest.raises(SourceError, match=None) as caught:
        resolve_gguf(path, SilentReporter())
    assert message in str(caught.value) and str(path) in str(caught.value)
    assert time.monotonic() - started < 30  # refused before any heavy work (it takes ~1 s)


@pytest.mark.parametrize("case", ["block-count-1000", "eos-4e9", "chat-template-broken", "head-count-0"])
def test_corrupted_gguf_is_one_line_from_the_cli(smollm_gguf: Path, tmp_path: Path, case: str) -> None:
    home = tmp_path / "home"
    path, message = corrupted(smollm_gguf, tmp_path, case)
    assert_user_error(run(home, str(path)), 3, message)
    assert_store_clean(home)


def test_the_tiny_synthetic_model_is_consistent(tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(g.tiny_llama())
    check_convertible(read_gguf(path))
