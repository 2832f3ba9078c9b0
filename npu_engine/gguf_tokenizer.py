"""Rebuild a Hugging Face tokenizer from a GGUF file's own tokenizer metadata.

transformers picks its GGUF tokenizer converter by model architecture, which is wrong for llama
architecture models that carry a GPT-2 style byte-level BPE vocabulary (SmolLM2, DeepSeek-Coder,
DeepSeek-R1-Distill-Llama, Llama 3): their eos becomes the bos token and the decoder mixes
SentencePiece and byte-level steps. Here the vocabulary type (`tokenizer.ggml.model`) and the
pre-tokenizer name (`tokenizer.ggml.pre`) decide, as they do in llama.cpp.
"""

from pathlib import Path
from typing import Any

from npu_engine.errors import SourceError
from npu_engine.gguf_file import GgufInfo

# llama.cpp's pre-tokenizer split patterns, by `tokenizer.ggml.pre`; applied before byte-level mapping.
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
DEEPSEEK_CODER_PATTERNS = (r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", r"[一-龥ࠀ-一가-퟿]+")

SPLIT_PATTERNS: dict[str, tuple[str, ...]] = {
    "llama3": (LLAMA3_PATTERN,),
    "llama-v3": (LLAMA3_PATTERN,),
    "llama-bpe": (LLAMA3_PATTERN,),
    "qwen2": (QWEN2_PATTERN,),
    "deepseek-r1-qwen": (QWEN2_PATTERN,),
    "deepseek-coder": DEEPSEEK_CODER_PATTERNS,
}
# Pre-tokenizers that are GPT-2's own regex, optionally after splitting digits one by one.
GPT2_STYLE = {"gpt-2": False, "gpt2": False, "default": False, "starcoder": False, "smollm": True}
INDIVIDUAL_DIGITS = {"deepseek-coder"}

CONTROL, USER_DEFINED = 3, 4


def write_tokenizer(info: GgufInfo, folder: Path, source_dir: Path, gguf_name: str) -> None:
    """Write tokenizer.json and tokenizer_config.json for `info` into `folder`."""
    metadata = info.metadata
    kind = metadata.get("tokenizer.ggml.model")
    if kind == "gpt2":
        tokenizer = _byte_level_tokenizer(info)
    elif kind == "llama":
        tokenizer = _sentencepiece_tokenizer(source_dir, gguf_name)
    else:
        raise SourceError(f"{info.path}: tokenizer type {kind!r} is not supported (supported: gpt2, llama)")
    tokens: list[str] = list(metadata["tokenizer.ggml.tokens"])

    def token(key: str) -> str | None:
        index = metadata.get(f"tokenizer.ggml.{key}")
        return tokens[int(index)] if index is not None and 0 <= int(index) < len(tokens) else None

    tokenizer.bos_token = token("bos_token_id")
    tokenizer.eos_token = token("eos_token_id")
    tokenizer.unk_token = token("unknown_token_id")
    tokenizer.pad_token = token("padding_token_id") or tokenizer.eos_token
    template = metadata.get("tokenizer.chat_template")
    if template:
        tokenizer.chat_template = str(template)
    tokenizer.save_pretrained(folder)


def _byte_level_tokenizer(info: GgufInfo) -> Any:
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from transformers import PreTrainedTokenizerFast

    metadata = info.metadata
    pre = str(metadata.get("tokenizer.ggml.pre", "default"))
    tokens: list[str] = list(metadata["tokenizer.ggml.tokens"])
    types: list[int] = [int(kind) for kind in metadata.get("tokenizer.ggml.token_type", [1] * len(tokens))]
    merges = [tuple(merge.split(" ", 1)) for merge in metadata.get("tokenizer.ggml.merges", [])]
    vocab = {text: index for index, text in enumerate(tokens)}

    backend = Tokenizer(models.BPE(vocab, merges, fuse_unk=False, byte_fallback=False))
    steps: list[Any] = []
    if pre in SPLIT_PATTERNS:
        steps += [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False)
            for pattern in SPLIT_PATTERNS[pre]
        ]
        if pre in INDIVIDUAL_DIGITS:
            steps.append(pre_tokenizers.Digits(individual_digits=True))
        steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False))
    elif pre in GPT2_STYLE:
        if GPT2_STYLE[pre]:
            steps.append(pre_tokenizers.Digits(individual_digits=True))
        steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=True))
    else:
        known = ", ".join(sorted([*SPLIT_PATTERNS, *GPT2_STYLE]))
        raise SourceError(f"{info.path}: GGUF pre-tokenizer {pre!r} is not supported (supported: {known})")
    backend.pre_tokenizer = pre_tokenizers.Sequence(steps)
    if pre in ("qwen2", "deepseek-r1-qwen"):
        backend.normalizer = normalizers.NFC()
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(
        [
            AddedToken(tokens[i], special=True, normalized=False)
            for i, kind in enumerate(types)
            if kind == CONTROL
        ]
    )
    backend.add_tokens(
        [
            AddedToken(tokens[i], special=False, normalized=False)
            for i, kind in enumerate(types)
            if kind == USER_DEFINED
        ]
    )
    bos_id = metadata.get("tokenizer.ggml.bos_token_id")
    if metadata.get("tokenizer.ggml.add_bos_token") and bos_id is not None:
        bos = tokens[int(bos_id)]
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, int(bos_id))]
        )
    return PreTrainedTokenizerFast(tokenizer_object=backend, clean_up_tokenization_spaces=False)


def _sentencepiece_tokenizer(source_dir: Path, gguf_name: str) -> Any:
    # SentencePiece vocabularies (CodeLlama) go through transformers' converter; write_tokenizer then
    # puts right the special tokens that converter gets wrong.
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source_dir, gguf_file=gguf_name)
