"""Continuous batching on the CPU and GPU: many callers' requests decode together in one
openvino_genai.ContinuousBatchingPipeline, stepped by a worker thread while any are in flight."""

import itertools
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

from npu_engine.backends.genai_config import (
    ChatPrompting,
    Constraint,
    count_tokens,
    generation_config,
    grammar_refused,
)
from npu_engine.backends.pipeline_spec import BatchingLimits, PipelineSpec
from npu_engine.devices import GB
from npu_engine.generation import (
    GenerationMetrics,
    Prompt,
    RawGeneration,
    SamplingOptions,
    TextSink,
    finish_reason,
)


class BatchingPipeline(ChatPrompting):
    """Thread-safe: every caller's `generate` joins the running batch.

    OpenVINO GenAI 2026.4's ContinuousBatchingPipeline keeps about two vocabulary-sized float
    vectors per finished request (0.4 MB for SmolLM2, 1.2 MB for Qwen2.5), for its whole life
    (LLMPipeline does not). So after `limits.recycle_after` requests the pipeline is reopened, from
    the compiled-model cache, the next time no request is in flight: new requests wait for the
    batch to drain, then for the reopening.
    """

    concurrent = True

    def __init__(self, spec: PipelineSpec, limits: BatchingLimits) -> None:
        import openvino_genai

        started = time.monotonic()
        self._genai = openvino_genai
        self.spec = spec
        self.limits = limits
        self._pipe = self._open()
        self._tokenizer = self._pipe.get_tokenizer()
        self._ids = itertools.count()
        self._lock = threading.Lock()  # the pipeline itself is not thread-safe
        self._drained = threading.Condition(self._lock)
        self._inflight: dict[int, tuple[Any, queue.Queue[tuple[str, Any]]]] = {}
        self._worker: threading.Thread | None = None
        self._admitted = 0  # requests since the pipeline was (re)opened
        self.reopened = 0
        self.load_seconds = time.monotonic() - started

    def _open(self) -> Any:
        scheduler = self._genai.SchedulerConfig()
        scheduler.max_num_seqs = self.limits.max_sequences
        scheduler.max_num_batched_tokens = self.limits.max_batched_tokens
        scheduler.cache_size = max(1, -(-self.limits.cache_bytes // GB))
        return self._genai.ContinuousBatchingPipeline(
            str(self.spec.model_path), scheduler, self.spec.device, self.spec.properties()
        )

    def _admit(self) -> None:
        """Called holding the lock: reopen the pipeline when it has served its share and is idle."""
        if self._admitted < self.limits.recycle_after:
            return
        while self._inflight or self._worker is not None:
            self._drained.wait()
        if self._admitted >= self.limits.recycle_after:
            self._pipe = None
            self._pipe = self._open()
            self._admitted = 0
            self.reopened += 1

    def generate(
        self,
        prompt: Prompt,
        options: SamplingOptions,
        on_text: TextSink | None = None,
        tools: Sequence[dict[str, Any]] = (),
        constraint: Constraint | None = None,
    ) -> RawGeneration:
        rendered = self.chat_prompt(prompt, tools)
        prompt_tokens = count_tokens(self._tokenizer, rendered)
        config = generation_config(self._genai, options, "plain", constraint, self.ends(prompt))
        config.apply_chat_template = False  # the text is rendered already
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        started = time.perf_counter()
        with self._lock:
            self._admit()
            self._admitted += 1
            request_id = next(self._ids)
            handle = self._pipe.add_request(request_id, rendered, config)
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
            if kind == "error":  # a schema the grammar backend refused at its first step is ours
                raise grammar_refused(value, constraint) or value
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
        answer = self._tokenizer.decode(ids, skip_special_tokens=True)
        if on_text is not None and not cancelled and len(answer) > len(heard):
            on_text(answer[len(heard) :])
        first = first or finished
        decode_seconds = finished - first
        per_token = 1000 * decode_seconds / max(len(ids) - 1, 1)
        metrics = GenerationMetrics(
            ttft_ms=1000 * (first - started),
            tpot_ms=per_token,
            tokens_per_second=1000 / per_token if per_token > 0 else 0.0,
            input_tokens=prompt_tokens,
            output_tokens=len(ids),
        )
        return RawGeneration(answer, finish_reason(len(ids), options, cancelled), metrics)

    def _step_loop(self) -> None:
        running = self._genai.GenerationStatus.RUNNING
        while True:
            with self._lock:
                # A stopped request keeps its KV-cache blocks until the next step frees them.
                if not self._inflight and not self._pipe.has_non_finished_requests():
                    self._worker = None
                    self._drained.notify_all()
                    return
                try:
                    self._pipe.step()
                except Exception as error:  # hand the failure to every waiting caller
                    for _, events in self._inflight.values():
                        events.put(("error", RuntimeError(f"continuous batching step failed: {error}")))
                    self._inflight.clear()
                    # The failed step's requests stay inside the pipeline, which would fail (or
                    # spin) on every later step: the next request reopens it first (see _admit).
                    self._admitted = self.limits.recycle_after
                    self._worker = None
                    self._drained.notify_all()
                    return
                for request_id, (handle, events) in list(self._inflight.items()):
                    if handle.can_read():
                        for output in handle.read().values():
                            if output.generated_ids:
                                events.put(("ids", list(output.generated_ids)))
                    if handle.get_status() != running:
                        events.put(("done", None))
                        del self._inflight[request_id]
