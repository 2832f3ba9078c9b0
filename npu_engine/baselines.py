"""Baselines npu-bench runs beside the engine, on the same machine and the same weights:
llama.cpp (llama-cpp-python on the GGUF the IR was converted from) and Ollama when one answers."""

import contextlib
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from npu_engine.backends.pipeline_spec import Speculation
from npu_engine.backends.remote import OllamaBackend
from npu_engine.catalog import Catalog, PackagedFile
from npu_engine.errors import UserInputError
from npu_engine.generation import (
    GenerationMetrics,
    Message,
    RawGeneration,
    SamplingOptions,
    TextSink,
    finish_reason,
)
from npu_engine.gguf_source import source_gguf_path
from npu_engine.machine import cpu_threads
from npu_engine.manifest import Manifest
from npu_engine.progress import SilentReporter
from npu_engine.sources.packaged import ensure_packaged_file
from npu_engine.store import ModelStore

LOOKUP = Speculation()  # the same n-gram and draft length as the engine's untuned prompt lookup


def source_gguf(manifest: Manifest, catalog: Catalog, store: ModelStore) -> Path | None:
    """The GGUF file a conversion was made from, when there is one on this machine (a packaged
    model's is assembled again from its packages when it is gone)."""
    path = source_gguf_path(manifest, catalog, store.root)
    if path is not None and manifest.source.kind == "packaged" and not path.is_file():
        packaged = catalog.model(manifest.source.id.removeprefix("pkg:")).packaged
        if isinstance(packaged, PackagedFile):
            return ensure_packaged_file(packaged, store.root / "sources", SilentReporter())
    return path if path is not None and path.is_file() else None


class LlamaCppModel:
    """One GGUF loaded in llama.cpp, greedy like the engine: temperature 0, no repeat penalty.

    `keep_cache` keeps the KV cache between calls, as Ollama does: a prompt that starts with the
    previous call's tokens (the next turn of a chat) evaluates only what follows them. Off, every
    call evaluates its whole prompt."""

    def __init__(
        self,
        gguf: Path,
        context: int = 4096,
        threads: int | None = None,
        lookup: bool = False,
        keep_cache: bool = False,
    ):
        try:
            from llama_cpp import Llama
            from llama_cpp.llama_speculative import LlamaPromptLookupDecoding
        except ImportError:
            raise UserInputError(
                "the llama.cpp baseline needs llama-cpp-python: pip install 'npu-engine[bench]'"
            ) from None
        self.gguf = gguf
        self.threads = threads or cpu_threads()
        self.mode = "prompt_lookup" if lookup else "plain"
        self.keep_cache = keep_cache
        draft = LlamaPromptLookupDecoding(LOOKUP.ngram, LOOKUP.lookup_tokens) if lookup else None
        started = time.monotonic()
        self._llm: Any = Llama(
            model_path=str(gguf),
            n_ctx=context,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            draft_model=draft,
            logits_all=lookup,  # llama-cpp-python verifies drafted tokens against every position's logits
            seed=0,
            verbose=False,
        )
        self.load_seconds = time.monotonic() - started

    def generate(
        self, messages: Sequence[Message], options: SamplingOptions, on_text: TextSink | None = None
    ) -> RawGeneration:
        """Tokens/s counts decoding after the first token, as OpenVINO GenAI's throughput does."""
        if not self.keep_cache:
            self._llm.reset()  # every call evaluates its whole prompt, as the engine's does
        started = time.monotonic()
        first = last = started
        pieces: list[str] = []
        cancelled = False
        chunks = self._llm.create_chat_completion(
            messages=list(messages),
            max_tokens=options.max_new_tokens,
            temperature=options.temperature,
            top_p=options.top_p,
            top_k=0 if options.temperature > 0 else 1,
            min_p=0.0,
            repeat_penalty=1.0,
            stop=list(options.stop) or None,
            seed=options.seed if options.seed is not None else 0,
            stream=True,
        )
        with contextlib.closing(chunks):
            for chunk in chunks:
                text = chunk["choices"][0]["delta"].get("content") or ""
                if not text:
                    continue
                last = time.monotonic()
                if not pieces:
                    first = last
                pieces.append(text)
                if on_text is not None and on_text(text):
                    cancelled = True
                    break
        text = "".join(pieces)
        # Re-tokenizing greedy output gives back the tokens that produced it (streamed pieces can merge).
        output = len(self._llm.tokenize(text.encode(), add_bos=False, special=True)) if text else 0
        evaluated = int(self._llm.n_tokens)
        decode_seconds = max(last - first, 1e-9)
        tpot = decode_seconds * 1000 / (output - 1) if output > 1 else 0.0
        metrics = GenerationMetrics(
            ttft_ms=(first - started) * 1000,
            tpot_ms=tpot,
            tokens_per_second=1000 / tpot if tpot else 0.0,
            input_tokens=max(evaluated - output, 0),
            output_tokens=output,
        )
        return RawGeneration(text, finish_reason(output, options, cancelled), metrics)

    @property
    def quantization(self) -> str:
        """The GGUF's quantization as its file name gives it (Q4_K_M, Q8_0, F16...), else "GGUF"."""
        found = re.search(r"(?i)(?:^|[-._])((?:i?q\d[\w]*?)|f16|bf16|f32)$", self.gguf.stem)
        return f"GGUF {found.group(1).upper()}" if found else "GGUF"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._llm.close()


def ollama_available(backend: OllamaBackend, model: str) -> str | None:
    """None when `model` can answer at the backend; else why not, in words."""
    try:
        tags = httpx.get(f"{backend.base_url}/api/tags", timeout=2.0)
        tags.raise_for_status()
    except httpx.HTTPError as error:
        return f"no Ollama answers at {backend.base_url} ({type(error).__name__})"
    names = {entry.get("name", "") for entry in tags.json().get("models", [])}
    if model not in names and f"{model}:latest" not in names:
        return f"Ollama at {backend.base_url} has no {model} (ollama pull {model})"
    return None
