"""Running a converted model's source GGUF with llama.cpp (llama-cpp-python): the engine's other
CPU runtime, chosen where it measures faster (see Planner.backend).

Both runtimes see the same prompt text: chat messages (and the tools they declare) are rendered by
the converted model's own chat template, through its OpenVINO tokenizer, then tokenized by
llama.cpp. A GGUF takes no structured output here: the planner sends constrained requests to
OpenVINO.

Prefix reuse keeps answers identical. The KV cache stays from one request to the next, so the next
turn of an agent, or the next keystroke of autocomplete, re-reads only what changed. But a prompt
token's KV entry depends (in the last bits) on the batch it was evaluated in: reusing whatever
prefix matched changed 1 greedy answer in 6 on Qwen2.5-Coder-0.5B. So every prompt is evaluated in
chunks aligned to multiples of `spec.chunk` positions, and only whole chunks of the previous
*prompt* are reused (never the tokens generated one by one after it): the chunks evaluated after
them are then the very batches a cold evaluation would run, and the answer is the cold answer.
"""

import codecs
import ctypes
import time
from collections.abc import Sequence
from typing import Any

from npu_engine.backends.genai_config import ChatPrompting, Constraint, Ends
from npu_engine.backends.pipeline_spec import LlamaCppSpec
from npu_engine.errors import UserInputError
from npu_engine.generation import (
    GenerationMetrics,
    Prompt,
    RawGeneration,
    SamplingOptions,
    TextSink,
    finish_reason,
)


class StopScan:
    """Finds the first stop string in text that arrives piece by piece; `ready` is the text that
    can be released, holding back a tail that may be the start of a stop string."""

    def __init__(self, stops: Sequence[str], include: bool) -> None:
        self._stops = [s for s in stops if s]
        self._include = include
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self.text = ""
        self.stopped = False
        self._released = 0

    def add(self, piece: str) -> str:
        """Append `piece`; returns the text newly released (all of it up to a stop, once found)."""
        start = max(0, len(self.text) - self._hold)
        self.text += piece
        found = [(at, s) for s in self._stops if (at := self.text.find(s, start)) >= 0]
        if found:
            at, stop = min(found)
            self.text = self.text[: at + len(stop)] if self._include else self.text[:at]
            self.stopped = True
            return self._release(len(self.text))
        return self._release(len(self.text) - self._hold)

    def flush(self) -> str:
        return self._release(len(self.text))

    def _release(self, upto: int) -> str:
        if upto <= self._released:
            return ""
        piece, self._released = self.text[self._released : upto], upto
        return piece


class LlamaCppPipeline(ChatPrompting):
    """One GGUF loaded in llama.cpp. Not re-entrant: callers serialize their calls."""

    concurrent = False
    backend = "llama.cpp"

    def __init__(self, spec: LlamaCppSpec) -> None:
        try:
            import llama_cpp
        except ImportError:
            raise UserInputError(
                "the llama.cpp runtime needs llama-cpp-python: pip install 'npu-engine[llama-cpp]'"
            ) from None
        import openvino_genai

        started = time.monotonic()
        self.spec = spec
        self._genai = openvino_genai
        self._tokenizer = openvino_genai.Tokenizer(str(spec.tokenizer_path))
        self._llama_cpp = llama_cpp
        self._llm: Any = llama_cpp.Llama(
            model_path=str(spec.gguf_path),
            n_ctx=spec.context,
            n_threads=spec.threads,
            n_threads_batch=spec.threads,
            n_batch=spec.chunk,
            n_ubatch=spec.chunk,
            seed=0,
            verbose=False,
        )
        self._evaluated: list[int] = []  # the last prompt, whose whole chunks the KV cache holds
        self.load_seconds = time.monotonic() - started

    def tokens(self, prompt: Prompt, tools: Sequence[dict[str, Any]] = ()) -> list[int]:
        """The prompt's llama.cpp tokens: its text as the chat template renders it, with the model's
        BOS once (a template that writes BOS itself gets no second one)."""
        ids: list[int] = self._llm.tokenize(
            self.chat_prompt(prompt, tools).encode(), add_bos=True, special=True
        )
        bos = self._llm.token_bos()
        if len(ids) > 1 and ids[0] == ids[1] == bos:
            ids = ids[1:]
        return ids

    def count_prompt_tokens(self, prompt: Prompt, tools: Sequence[dict[str, Any]] = ()) -> int:
        return len(self.tokens(prompt, tools))

    def generate(
        self,
        prompt: Prompt,
        options: SamplingOptions,
        on_text: TextSink | None = None,
        tools: Sequence[dict[str, Any]] = (),
        constraint: Constraint | None = None,
    ) -> RawGeneration:
        if constraint is not None:
            raise ValueError("the llama.cpp runtime takes no structured output: plan it on OpenVINO")
        tokens = self.tokens(prompt, tools)
        ends = self.ends(prompt) or Ends(frozenset(), ())
        scan = StopScan((*options.stop, *ends.strings), options.include_stop)
        room = min(options.max_new_tokens, self.spec.context - len(tokens))
        cached = self._keep_prefix(tokens)
        if options.seed is not None:
            self._llm.set_seed(options.seed)
        greedy = options.temperature <= 0
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = self._llm._model.vocab
        started = time.monotonic()
        first = last = started
        produced = 0
        cancelled = False
        for token in self._llm.generate(
            tokens,
            top_k=1 if greedy else 0,
            top_p=1.0 if greedy else options.top_p,
            min_p=0.0,
            temp=0.0 if greedy else options.temperature,
            repeat_penalty=1.0,
        ):
            last = time.monotonic()
            if produced == 0:
                first = last
            if self._llama_cpp.llama_vocab_is_eog(vocab, token):
                break
            produced += 1
            ready = "" if token in ends.token_ids else scan.add(decoder.decode(self._piece(token)))
            if ready and on_text is not None and on_text(ready):
                cancelled = True
                break
            if token in ends.token_ids or scan.stopped or produced >= room:
                break
        rest = scan.add(decoder.decode(b"", final=True)) + scan.flush() if not scan.stopped else ""
        if rest and not cancelled and on_text is not None and on_text(rest):
            cancelled = True
        self._evaluated = tokens
        tpot = (last - first) * 1000 / (produced - 1) if produced > 1 else 0.0
        metrics = GenerationMetrics(
            ttft_ms=(first - started) * 1000,
            tpot_ms=tpot,
            tokens_per_second=1000 / tpot if tpot else 0.0,
            input_tokens=len(tokens),
            output_tokens=produced,
            cached_tokens=cached,
        )
        return RawGeneration(scan.text, finish_reason(produced, options, cancelled), metrics)

    def reused_tokens(self, prompt: Prompt, tools: Sequence[dict[str, Any]] = ()) -> int:
        return self._reusable(self.tokens(prompt, tools))

    def _reusable(self, tokens: list[int]) -> int:
        """The whole chunks of the last prompt that `tokens` starts with (at least one token is
        always evaluated, for its logits)."""
        shared = 0
        if self.spec.reuse_prefix:
            for a, b in zip(self._evaluated, tokens, strict=False):
                if a != b:
                    break
                shared += 1
        chunk = self.spec.chunk
        return min(shared, len(self._evaluated) // chunk * chunk, len(tokens) - 1) // chunk * chunk

    def _keep_prefix(self, tokens: list[int]) -> int:
        """Keep what `_reusable` finds in the KV cache; what follows it is dropped. Returns how many."""
        keep = self._reusable(tokens)
        # llama-cpp-python reuses the first n_tokens it holds and evaluates the rest in n_batch steps.
        self._llm.n_tokens = keep
        return keep

    def _piece(self, token: int) -> bytes:
        """The token's bytes (special tokens none); llama-cpp-python's own helper truncates long ones."""
        size = 256
        while True:
            buffer = ctypes.create_string_buffer(size)
            n = self._llama_cpp.llama_token_to_piece(self._llm._model.vocab, token, buffer, size, 0, False)
            if n >= 0:
                return buffer.raw[:n]
            size = -n

    def _encode(self, text: str) -> Sequence[int]:
        ids: list[int] = self._llm.tokenize(text.encode(), add_bos=False, special=True)
        return ids

    def close(self) -> None:
        self._llm.close()
