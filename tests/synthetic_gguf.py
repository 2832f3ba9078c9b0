"""Synthetic GGUF models: a real model's metadata and tokenizer with another architecture's layer
shapes and random weights, for shapes too big to ship (speed and memory depend on shapes and tensor
types, not values). `python -m tests.synthetic_gguf SOURCE.gguf OUT.gguf --shape qwen2.5-3b`.

Only the qwen2 architecture (bias on q/k/v, tied embeddings) is written; its shapes are the
published configs of the Qwen2.5 family.
"""

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Qwen2Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int

    def parameters(self, vocab: int) -> int:
        head = self.hidden // self.heads
        kv = self.kv_heads * head
        attention = self.hidden * (self.hidden + 2 * kv) + (self.hidden + 2 * kv) + self.hidden * self.hidden
        layer = attention + 3 * self.hidden * self.ffn + 2 * self.hidden
        return vocab * self.hidden + self.layers * layer + self.hidden


SHAPES = {
    "tiny": Qwen2Shape(hidden=64, layers=2, heads=4, kv_heads=2, ffn=128),
    "qwen2.5-3b": Qwen2Shape(hidden=2048, layers=36, heads=16, kv_heads=2, ffn=11008),
    "qwen2.5-7b": Qwen2Shape(hidden=3584, layers=28, heads=28, kv_heads=4, ffn=18944),
}


def write_synthetic_gguf(
    source: Path, out: Path, shape: Qwen2Shape, quant: str = "Q8_0", seed: int = 0
) -> int:
    """Write `out`: `source`'s metadata (tokenizer, chat template) with `shape`'s tensors of random
    values, matrices quantized to `quant`, norms and biases in float32. Returns its weight count."""
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
    from gguf.quants import quantize

    reader = GGUFReader(source)
    architecture = str(reader.fields["general.architecture"].contents())
    if architecture != "qwen2":
        raise ValueError(f"{source} is {architecture}, not qwen2")
    vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    overrides: dict[str, int] = {
        "qwen2.block_count": shape.layers,
        "qwen2.embedding_length": shape.hidden,
        "qwen2.feed_forward_length": shape.ffn,
        "qwen2.attention.head_count": shape.heads,
        "qwen2.attention.head_count_kv": shape.kv_heads,
    }
    writer = GGUFWriter(str(out), architecture)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value: Any = overrides.get(key, field.contents())
        if key == "general.file_type":
            continue
        vtype = field.types[0]
        sub = field.types[1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, vtype, sub_type=sub)
    qtype = GGMLQuantizationType[quant]
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

    head = shape.hidden // shape.heads
    kv = shape.kv_heads * head
    matrix("token_embd.weight", vocab, shape.hidden)
    vector("output_norm.weight", shape.hidden, 1.0)
    for layer in range(shape.layers):
        block = f"blk.{layer}"
        vector(f"{block}.attn_norm.weight", shape.hidden, 1.0)
        for part, rows in (("q", shape.hidden), ("k", kv), ("v", kv)):
            matrix(f"{block}.attn_{part}.weight", rows, shape.hidden)
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
    return shape.parameters(vocab)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a qwen2 GGUF whose metadata and tokenizer are copied")
    parser.add_argument("out", type=Path)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-3b")
    parser.add_argument("--quant", default="Q8_0", help="GGML type of the matrices (Q8_0, Q4_0, ...)")
    args = parser.parse_args()
    weights = write_synthetic_gguf(args.source, args.out, SHAPES[args.shape], args.quant)
    print(f"{args.out}: {weights / 1e6:,.0f}M weights, {args.out.stat().st_size / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
