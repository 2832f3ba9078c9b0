"""Synthetic GGUF models: a real model's metadata and tokenizer with another architecture's layer
shapes and random weights, for shapes too big to ship (speed and memory depend on shapes and tensor
types, not values). `python -m tests.synthetic_gguf SOURCE.gguf OUT.gguf --shape qwen2.5-3b`.

Two architectures: qwen2 (bias on q/k/v, tied embeddings; the Qwen2.5 family's published
shapes) and llama (no biases, a separate output head; DeepSeek-Coder's and CodeLlama's shapes),
each written over a source GGUF of the same architecture.
"""

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    architecture: str = "qwen2"

    @property
    def biases(self) -> bool:
        return self.architecture == "qwen2"

    @property
    def tied(self) -> bool:
        return self.architecture == "qwen2"

    def parameters(self, vocab: int) -> int:
        head = self.hidden // self.heads
        kv = self.kv_heads * head
        attention = self.hidden * (self.hidden + 2 * kv) + self.hidden * self.hidden
        attention += (self.hidden + 2 * kv) if self.biases else 0
        layer = attention + 3 * self.hidden * self.ffn + 2 * self.hidden
        head_weights = 0 if self.tied else vocab * self.hidden
        return vocab * self.hidden + self.layers * layer + self.hidden + head_weights


SHAPES = {
    "tiny": ModelShape(hidden=64, layers=2, heads=4, kv_heads=2, ffn=128),
    "qwen2.5-3b": ModelShape(hidden=2048, layers=36, heads=16, kv_heads=2, ffn=11008),
    "qwen2.5-7b": ModelShape(hidden=3584, layers=28, heads=28, kv_heads=4, ffn=18944),
    "qwen2.5-14b": ModelShape(hidden=5120, layers=48, heads=40, kv_heads=8, ffn=13824),
    "tiny-llama": ModelShape(hidden=128, layers=2, heads=4, kv_heads=2, ffn=256, architecture="llama"),
    "deepseek-coder-6.7b": ModelShape(
        hidden=4096, layers=32, heads=32, kv_heads=32, ffn=11008, architecture="llama"
    ),
    "codellama-70b": ModelShape(
        hidden=8192, layers=80, heads=64, kv_heads=8, ffn=28672, architecture="llama"
    ),
}


def write_synthetic_gguf(
    source: Path, out: Path, shape: ModelShape, quant: str = "Q8_0", seed: int = 0, layers: int | None = None
) -> int:
    """Write `out`: `source`'s metadata (tokenizer, chat template) with `shape`'s tensors of random
    values, matrices quantized to `quant`, norms and biases in float32; `layers` overrides the
    shape's layer count (a few real-shaped layers). Returns its weight count."""
    from gguf import GGUFReader, GGUFWriter

    from npu_engine.gguf_standin import copy_metadata

    reader = GGUFReader(source)
    architecture = str(reader.fields["general.architecture"].contents())
    if architecture != shape.architecture:
        raise ValueError(f"{source} is {architecture}, not {shape.architecture}")
    if layers is not None:
        shape = replace(shape, layers=layers)
    vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    head = shape.hidden // shape.heads
    overrides: dict[str, int] = {
        f"{architecture}.block_count": shape.layers,
        f"{architecture}.embedding_length": shape.hidden,
        f"{architecture}.feed_forward_length": shape.ffn,
        f"{architecture}.attention.head_count": shape.heads,
        f"{architecture}.attention.head_count_kv": shape.kv_heads,
        f"{architecture}.rope.dimension_count": head,
    }
    writer = GGUFWriter(str(out), architecture)
    # general.file_type is written with the new tensors, for their type.
    copy_metadata(reader, writer, overrides, skip=("general.file_type",))
    write_weights(writer, shape, vocab, quant, seed)
    return shape.parameters(vocab)


def write_weights(writer: Any, shape: ModelShape, vocab: int, quant: str, seed: int) -> None:
    """`shape`'s tensors, random, into `writer` (with the file type they make), and close the file:
    matrices in `quant`, norms (ones) and biases in float32."""
    from gguf import GGMLQuantizationType, LlamaFileType
    from gguf.quants import quantize

    qtype = GGMLQuantizationType[quant]
    writer.add_file_type(int(LlamaFileType[f"MOSTLY_{quant}"]))
    rng = np.random.default_rng(seed)

    def matrix(name: str, rows: int, columns: int) -> None:
        values = rng.standard_normal((rows, columns), dtype=np.float32) * 0.02
        writer.add_tensor(name, quantize(values, qtype), raw_dtype=qtype)

    def vector(name: str, size: int, fill: float | None = None) -> None:
        if fill is not None:
            values = np.full(size, fill, np.float32)
        else:
            values = rng.standard_normal(size, np.float32) * 0.02
        writer.add_tensor(name, values)

    kv = shape.kv_heads * (shape.hidden // shape.heads)
    matrix("token_embd.weight", vocab, shape.hidden)
    vector("output_norm.weight", shape.hidden, 1.0)
    if not shape.tied:
        matrix("output.weight", vocab, shape.hidden)
    for layer in range(shape.layers):
        block = f"blk.{layer}"
        vector(f"{block}.attn_norm.weight", shape.hidden, 1.0)
        for part, rows in (("q", shape.hidden), ("k", kv), ("v", kv)):
            matrix(f"{block}.attn_{part}.weight", rows, shape.hidden)
            if shape.biases:
                vector(f"{block}.attn_{part}.bias", rows)
        matrix(f"{block}.attn_output.weight", shape.hidden, shape.hidden)
        vector(f"{block}.ffn_norm.weight", shape.hidden, 1.0)
        matrix(f"{block}.ffn_gate.weight", shape.ffn, shape.hidden)
        matrix(f"{block}.ffn_up.weight", shape.ffn, shape.hidden)
        matrix(f"{block}.ffn_down.weight", shape.hidden, shape.ffn)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# CodeLlama's chat template, as its GGUFs carry it.
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set messages = messages[1:] %}{% endif %}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' }}"
    "{% if loop.first and system is defined %}{{ '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' }}{% endif %}"
    "{{ message['content'] + ' [/INST]' }}{% else %}{{ ' ' + message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)
# The words of a small SentencePiece vocabulary, with their leading-space mark. As in a real
# SentencePiece BPE vocabulary, every prefix of a word is a piece too, scored higher the shorter
# it is (merged earlier); the characters alone come first.
SENTENCEPIECE_WORDS = (
    "\u2581def",
    "\u2581return",
    "\u2581add",
    "\u2581a",
    "\u2581b",
    "\u2581+",
    "\u2581print",
)
SENTENCEPIECE_CHARACTERS = (
    "\u2581",
    "(",
    ")",
    ":",
    ",",
    "+",
    "a",
    "b",
    "d",
    "e",
    "f",
    "i",
    "n",
    "p",
    "r",
    "t",
    "u",
)


def sentencepiece_pieces() -> list[str]:
    prefixes = {word[:end] for word in SENTENCEPIECE_WORDS for end in range(2, len(word) + 1)}
    return [
        *SENTENCEPIECE_CHARACTERS,
        *sorted(prefixes - set(SENTENCEPIECE_CHARACTERS), key=lambda p: (len(p), p)),
    ]


def write_sentencepiece_gguf(out: Path, shape: ModelShape, quant: str = "Q8_0", seed: int = 0) -> int:
    """A llama GGUF with a SentencePiece vocabulary (`tokenizer.ggml.model` llama, as CodeLlama's):
    <unk>, <s>, </s>, the 256 byte tokens, then `sentencepiece_pieces()` scored in order; random
    weights of `shape`. Written from scratch: no CodeLlama file is shipped. Returns its weights."""
    from gguf import GGUFWriter, TokenType

    pieces = sentencepiece_pieces()
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{byte:02X}>" for byte in range(256)), *pieces]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL, *([TokenType.BYTE] * 256)]
    types += [TokenType.NORMAL] * len(pieces)
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]
    writer = GGUFWriter(str(out), "llama")
    writer.add_name("synthetic-codellama")
    writer.add_context_length(4096)
    writer.add_embedding_length(shape.hidden)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_dimension_count(shape.hidden // shape.heads)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types([int(kind) for kind in types])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(LLAMA2_TEMPLATE)
    write_weights(writer, shape, len(tokens), quant, seed)
    return shape.parameters(len(tokens))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "source", type=Path, help="a GGUF of the shape's architecture: its metadata and tokenizer are copied"
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-3b")
    parser.add_argument("--quant", default="Q8_0", help="GGML type of the matrices (Q8_0, Q4_0, ...)")
    parser.add_argument("--layers", type=int, help="fewer layers than the shape has")
    args = parser.parse_args()
    weights = write_synthetic_gguf(args.source, args.out, SHAPES[args.shape], args.quant, layers=args.layers)
    print(f"{args.out}: {weights / 1e6:,.0f}M weights, {args.out.stat().st_size / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
