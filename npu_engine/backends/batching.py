"""Continuous batching on the CPU and GPU: many callers' requests decode together in one
openvino_genai.ContinuousBatchingPipeline, stepped by a worker thread while any are in flight."""

import itertools
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

from npu_engine.backends.openvino_genai import (
    BatchingLimits,
    ChatPrompting,
    PipelineSpec,
    count_tokens,
    generation_config,
)
from npu_engine.devices import GB
from npu_engine.generation import Message, RawGeneration, SamplingOptions, TextSink, finish_reason


class BatchingPipeline(ChatPrompting):
    """Thread-safe: every caller's `generate` joins the running batch."""

    concurrent = True

    def __init__(self, spec: PipelineSpec, limits: BatchingLimits) -> None:
        import openvino_genai

        started = time.monotonic()
        self._genai = openvino_genai
        scheduler = openvino_genai.SchedulerConfig()
        scheduler.max_num_seqs = limits.max_sequences
        scheduler.max_num_batched_tokens = limits.max_batched_tokens
        scheduler.cache_size = max(1, -(-limits.cache_bytes // GB))
        self.spec = spec
        self._pipe = openvino_genai.ContinuousBatchingPipeline(
            str(spec.model_path), scheduler, spec.device, spec.properties()
        )
        self._tokenizer = self._pipe.get_tokenizer()
        self._ids = itertools.count()
        self._lock = threading.Lock()  # the pipeline itself is not thread-safe
        self._inflight: dict[int, tuple[Any, queue.Queue[tuple[str, Any]]]] = {}
        self._worker: threading.Thread | None = None
        self.load_seconds = time.monotonic() - started

    def generate(
        self, messages: Sequence[Message], options: SamplingOptions, on_text: TextSink | None = None
    ) -> RawGeneration:
        prompt = self.chat_prompt(messages)
        prompt_tokens = count_tokens(self._tokenizer, prompt)
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        started = time.perf_counter()
        with self._lock:
            request_id = next(self._ids)
            handle = self._pipe.add_request(
                request_id, prompt, generation_config(self._genai, options, "plain")
            )
            self._inflight[request_id] = (handle, events)
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._step_loop, name="npu-engine-batching", daemon=True
                )
                self._worker.start()
        ids: list[int] = []
        heard = ""
        first: float | None = None
        cancelled = False
        while True:
            kind, value = events.get()
            if kind == "error":
                raise value
            if kind == "done":
                break
            if first is None:
                first = time.perf_counter()
            ids.extend(value)
            if on_text is not None and not cancelled:
                text = self._tokenizer.decode(ids, skip_special_tokens=True)
                if len(text) > len(heard) and not text.endswith("\ufffd"):
                    piece, heard = text[len(heard) :], text
                    if on_text(piece):
                        cancelled = True
                        handle.stop()
        finished = time.perf_counter()
        text = self._tokenizer.decode(ids, skip_special_tokens=True)
        if on_text is not None and not cancelled and len(text) > len(heard):
            on_text(text[len(heard) :])
        first = first or finished
        decode_seconds = finished - first
        per_token = 1000 * decode_seconds / max(len(ids) - 1, 1)
        return RawGeneration(
            text=text,
            input_tokens=prompt_tokens,
            output_tokens=len(ids),
            ttft_ms=1000 * (first - started),
            tpot_ms=per_token,
            tokens_per_second=1000 / per_token if per_token > 0 else 0.0,
            finish_reason=finish_reason(len(ids), options, cancelled),
        )

    def _step_loop(self) -> None:
        running = self._genai.GenerationStatus.RUNNING
        while True:
            with self._lock:
                if not self._inflight:
                    self._worker = None
                    return
                try:
                    self._pipe.step()
                except Exception as error:  # hand the failure to every waiting caller
                    for _, events in self._inflight.values():
                        events.put(("error", RuntimeError(f"continuous batching step failed: {error}")))
                    self._inflight.clear()
                    continue
                for request_id, (handle, events) in list(self._inflight.items()):
                    if handle.can_read():
                        for output in handle.read().values():
                            if output.generated_ids:
                                events.put(("ids", list(output.generated_ids)))
                    if handle.get_status() != running:
                        events.put(("done", None))
                        del self._inflight[request_id]
