"""Does a GGUF file's metadata agree with its tensors? Checked before any heavy work.

transformers builds the model from the metadata and only then reads the tensors: a layer count of
1000 builds 1000 layers (it ran past 300 s), a head count of 0 divides by zero, and an eos id
outside the vocabulary, a NaN epsilon or an absurd context length convert "successfully" into a
model that cannot work. So each number conversion relies on is checked here against the tensors
it describes, the way llama.cpp checks tensor shapes when it loads a model.
"""

import itertools
import math
import re
from typing import Any

from npu_engine.errors import SourceError
from npu_engine.gguf_file import GgufInfo, GgufTensor

MIN_CONTEXT = 16
MAX_CONTEXT = 1 << 22  # 4M tokens: beyond every released model's trained context
MAX_LAYERS = 1024
LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(.+)")
# The tensors every layer of a llama-family decoder has; qwen2 adds biases on q, k and v.
LAYER_WEIGHTS = (
    "attn_norm.weight",
    "attn_q.weight",
    "attn_k.weight",
    "attn_v.weight",
    "attn_output.weight",
    "ffn_norm.weight",
    "ffn_gate.weight",
    "ffn_up.weight",
    "ffn_down.weight",
)
ATTENTION_BIASES = ("attn_q.bias", "attn_k.bias", "attn_v.bias")
BIASED_ARCHITECTURES = frozenset({"qwen2"})


def check_convertible(info: GgufInfo) -> None:
    """Raise SourceError naming the first key or tensor that contradicts the rest of the file."""
    problem = _problem(info)
    if problem:
        raise SourceError(f"{info.path}: {problem}")


def _problem(info: GgufInfo) -> str | None:
    for check in (_layout_problem, _shape_problem, _number_problem, _token_problem, _template_problem):
        try:
            problem = check(info)
        except _BadKey as error:
            return str(error)
        if problem:
            return problem
    return None


def _layout_problem(info: GgufInfo) -> str | None:
    """Tensors must tile the data section: a relabelled tensor type changes a tensor's byte size."""
    ordered = sorted(info.tensors, key=lambda tensor: tensor.offset)
    for tensor, following in itertools.pairwise(ordered):
        gap = following.offset - (tensor.offset + tensor.n_bytes)
        if not 0 <= gap < info.alignment:
            return (
                f"tensor {tensor.name} of type {tensor.type} and shape {list(tensor.shape)} should take "
                f"{tensor.n_bytes:,} bytes, but {following.name} starts {gap:+,} bytes after its end "
                "(a wrong tensor type or shape)"
            )
    return None


def _shape_problem(info: GgufInfo) -> str | None:
    arch = info.architecture
    meta = info.metadata
    tensors = {tensor.name: tensor for tensor in info.tensors}
    layers = _integer(meta, f"{arch}.block_count", 1, MAX_LAYERS)
    hidden = _integer(meta, f"{arch}.embedding_length", 1, 1 << 20)
    heads = _integer(meta, f"{arch}.attention.head_count", 1, 4096)
    kv_heads = _integer(meta, f"{arch}.attention.head_count_kv", 1, 4096, default=heads)
    feed_forward = _integer(meta, f"{arch}.feed_forward_length", 1, 1 << 22)
    if hidden % heads:
        return f"{arch}.embedding_length {hidden} is not a multiple of {arch}.attention.head_count {heads}"
    if heads % kv_heads:
        return f"{arch}.attention.head_count {heads} is not a multiple of head_count_kv {kv_heads}"
    head_dim = _integer(meta, f"{arch}.attention.key_length", 1, 1 << 16, default=hidden // heads)

    numbered = {int(match[1]) for name in tensors if (match := LAYER_TENSOR.fullmatch(name))}
    if numbered != set(range(layers)):
        found = f"blk.0 to blk.{max(numbered)}" if numbered else "none"
        return (
            f"{arch}.block_count says {layers} layers but the layer tensors are {found} "
            f"({len(numbered)} layers)"
        )
    vocabulary = len(meta.get("tokenizer.ggml.tokens") or ())
    expected: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (hidden, vocabulary),
        "output_norm.weight": (hidden,),
    }
    if "output.weight" in tensors:
        expected["output.weight"] = (hidden, vocabulary)
    for layer in range(layers):
        shapes = {
            "attn_norm.weight": (hidden,),
            "attn_q.weight": (hidden, heads * head_dim),
            "attn_k.weight": (hidden, kv_heads * head_dim),
            "attn_v.weight": (hidden, kv_heads * head_dim),
            "attn_output.weight": (heads * head_dim, hidden),
            "ffn_norm.weight": (hidden,),
            "ffn_gate.weight": (hidden, feed_forward),
            "ffn_up.weight": (hidden, feed_forward),
            "ffn_down.weight": (feed_forward, hidden),
        }
        biased = all(f"blk.{layer}.{bias}" in tensors for bias in ATTENTION_BIASES)
        if arch in BIASED_ARCHITECTURES and not biased:
            return (
                f"{arch} layers have q, k and v biases but blk.{layer} has none: is the architecture right?"
            )
        if arch not in BIASED_ARCHITECTURES and any(f"blk.{layer}.{b}" in tensors for b in ATTENTION_BIASES):
            return f"blk.{layer} has attention biases, which {arch} does not use: is the architecture right?"
        if biased and arch in BIASED_ARCHITECTURES:
            shapes |= {
                "attn_q.bias": (heads * head_dim,),
                "attn_k.bias": (kv_heads * head_dim,),
                "attn_v.bias": (kv_heads * head_dim,),
            }
        expected |= {f"blk.{layer}.{name}": shape for name, shape in shapes.items()}
    for name, shape in expected.items():
        problem = _tensor_problem(tensors.get(name), name, shape)
        if problem:
            return problem
    return None


def _tensor_problem(tensor: GgufTensor | None, name: str, shape: tuple[int, ...]) -> str | None:
    if tensor is None:
        return f"tensor {name} is missing"
    if tensor.shape != shape:
        return f"tensor {name} has shape {list(tensor.shape)} but the metadata implies {list(shape)}"
    return None


def _number_problem(info: GgufInfo) -> str | None:
    arch = info.architecture
    meta = info.metadata
    _integer(meta, f"{arch}.context_length", MIN_CONTEXT, MAX_CONTEXT)
    for key, required in (
        (f"{arch}.attention.layer_norm_rms_epsilon", True),
        (f"{arch}.rope.freq_base", False),
    ):
        if key not in meta and not required:
            continue
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{key} is {_shown(value)}, not a number"
        limit = 1.0 if "epsilon" in key else 1e12
        if not (math.isfinite(value) and 0 < value < limit):
            return f"{key} is {value}, outside (0, {limit:g})"
    return None


def _token_problem(info: GgufInfo) -> str | None:
    meta = info.metadata
    tokens = meta.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens:
        return "tokenizer.ggml.tokens is missing or empty"
    types = meta.get("tokenizer.ggml.token_type")
    if types is not None and (not isinstance(types, list) or len(types) != len(tokens)):
        return f"tokenizer.ggml.token_type does not have one entry per token ({len(tokens)})"
    for key in sorted(meta):
        if key.startswith("tokenizer.ggml.") and key.endswith("_token_id"):
            value = meta[key]
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(tokens):
                return f"{key} is {_shown(value)}, outside the vocabulary of {len(tokens)} tokens"
    return None


def _template_problem(info: GgufInfo) -> str | None:
    template = info.metadata.get("tokenizer.chat_template")
    if template is None:
        return None
    if not isinstance(template, str):
        return "tokenizer.chat_template is not text"
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    # The environment transformers renders chat templates with; compiling is enough to catch syntax.
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    try:
        environment.parse(template)
    except TemplateError as error:
        line = getattr(error, "lineno", None)
        where = f" (line {line})" if line else ""
        return f"tokenizer.chat_template does not compile{where}: {' '.join(str(error).split())[:200]}"
    return None


class _BadKey(Exception):
    """A required key is missing, of the wrong type or out of range."""


def _integer(meta: dict[str, Any], key: str, low: int, high: int, default: int | None = None) -> int:
    value = meta.get(key, default)
    if value is None:
        raise _BadKey(f"GGUF key {key} is missing")
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadKey(f"GGUF key {key} is {_shown(value)}, not an integer")
    if not low <= value <= high:
        raise _BadKey(f"GGUF key {key} is {value:,}, outside [{low:,}, {high:,}]")
    return value


def _shown(value: Any) -> str:
    return repr(value)[:60]
