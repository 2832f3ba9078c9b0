"""Fuzz target for the GGUF reader and its metadata checks: any bytes either parse or raise
SourceError/UserInputError, never anything else and never a hang.

Run briefly in CI (a few seconds); for a longer hunt:
`HYPOTHESIS_PROFILE=fuzz pytest tests/test_gguf_fuzz.py`.
The seeds are a small consistent llama GGUF, the corruptions of issue 10 applied to it, and the
header shapes that hang gguf's own reader (an array count far beyond the file)."""

import contextlib
import math
import os
import struct
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from npu_engine.errors import SourceError, UserInputError
from npu_engine.gguf_checks import check_convertible
from npu_engine.gguf_file import read_gguf
from tests import gguf_bytes as g

settings.register_profile(
    "ci", max_examples=100, deadline=5000, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile(
    "fuzz", max_examples=5000, deadline=5000, suppress_health_check=[HealthCheck.too_slow]
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")

TINY = g.tiny_llama()


def header(kv_count: int, tensor_count: int = 0, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, tensor_count, kv_count)


SEEDS = [
    TINY,
    g.tiny_llama(g.replace("llama.block_count", g.u32("llama.block_count", 0))),
    g.tiny_llama(g.replace("llama.block_count", g.u32("llama.block_count", 1000))),
    g.tiny_llama(g.replace("llama.attention.head_count", g.u32("llama.attention.head_count", 0))),
    g.tiny_llama(g.replace("llama.embedding_length", g.u32("llama.embedding_length", 1))),
    g.tiny_llama(g.replace("llama.context_length", g.u32("llama.context_length", 0xFFFFFFFF))),
    g.tiny_llama(
        g.replace("tokenizer.ggml.eos_token_id", g.u32("tokenizer.ggml.eos_token_id", 4_000_000_000))
    ),
    g.tiny_llama(
        g.replace(
            "llama.attention.layer_norm_rms_epsilon",
            g.f32("llama.attention.layer_norm_rms_epsilon", math.nan),
        )
    ),
    g.tiny_llama(g.rename_architecture("llama", "qwen2", keys_too=True)),
    g.tiny_llama(g.replace("tokenizer.chat_template", g.text("tokenizer.chat_template", "{% if %}"))),
    g.tiny_llama(g.replace("llama.block_count", g.text("llama.block_count", "two"))),
    g.tiny_llama(g.replace("tokenizer.ggml.tokens", None)),
    # An array claiming 2**62 one-byte items: gguf's reader loops on it for ever.
    header(1) + g.string("k") + struct.pack("<IIQ", g.ARRAY, 0, 1 << 62),
    # An array of arrays of arrays...: recursion.
    header(1) + g.string("k") + struct.pack("<I", g.ARRAY) + struct.pack("<IQ", g.ARRAY, 1) * 5000,
    header(1 << 60),
    header(0, 1 << 60),
    header(0, version=1),
    header(0, 1) + g.string("t") + struct.pack("<I", 1 << 31),
    b"GGUF",
    b"GGUF\x03\x00\x00\x00",
]


def check(blob: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.gguf"
        path.write_bytes(blob)
        with contextlib.suppress(SourceError, UserInputError):
            check_convertible(read_gguf(path))


def mutate(blob: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    data = bytearray(blob)
    for position, value in edits:
        data[position % len(data)] = value
    return bytes(data[:cut] if cut is not None else data)


def with_seeds(test):  # type: ignore[no-untyped-def]
    for seed in SEEDS:
        test = example(seed)(test)
    return test


@settings(settings.get_profile(PROFILE))
@given(st.binary(max_size=4096).map(lambda tail: b"GGUF" + tail))
@with_seeds
def test_any_bytes_after_the_magic(blob: bytes) -> None:
    check(blob)


@settings(settings.get_profile(PROFILE))
@given(
    st.sampled_from(SEEDS[:12]),
    st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=8),
    st.one_of(st.none(), st.integers(0, len(TINY))),
)
def test_mutated_models(seed: bytes, edits: list[tuple[int, int]], cut: int | None) -> None:
    check(mutate(seed, edits, cut))
