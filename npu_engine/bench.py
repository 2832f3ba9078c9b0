"""npu-bench's measurements: throughput (warm-up, then N runs of a fixed prompt set) for the engine
and its baselines, latency under concurrency, load times, and pass@1 on the coding tasks. Every
figure comes from a real run; emulated devices are labelled and never count as speed figures."""

import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, TypeVar, get_args

from npu_engine.answers import has_closed_block
from npu_engine.backends.pipeline_spec import Backend
from npu_engine.coding_tasks import CodingTask, TaskOutcome, score_task
from npu_engine.data import read_lines
from npu_engine.engine import Engine
from npu_engine.errors import EngineBusyError
from npu_engine.generation import GenerationMetrics, Message, RawGeneration, SamplingOptions, TextSink
from npu_engine.machine import peak_memory
from npu_engine.request import BackendChoice, Decoding, GenerationResult
from npu_engine.scheduler import REMOTE, Measurement

QUALITY_MAX_NEW_TOKENS = 512
_R = TypeVar("_R")


@dataclass(frozen=True)
class BenchPrompt:
    id: str
    kind: str
    prompt: str


@dataclass(frozen=True)
class Spread:
    """Mean, standard deviation and median (p50) of a figure over repeated measurements."""

    mean: float
    std: float
    median: float

    @classmethod
    def of(cls, values: Sequence[float]) -> "Spread":
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(statistics.fmean(values), spread, statistics.median(values))

    def __str__(self) -> str:
        return f"{self.mean:.1f} ± {self.std:.1f}"


@dataclass(frozen=True)
class SpeedSummary:
    system: str  # "npu-engine", "llama.cpp" or "ollama"
    tier: str
    device: str
    mode: str
    model: str
    runs: int
    input_tokens: int
    output_tokens: int
    tokens_per_second: Spread
    prompt_tokens_per_second: Spread
    ttft_ms: Spread
    tpot_ms: Spread
    load_seconds: float
    peak_rss_bytes: int
    emulated: bool
    ceiling_tokens_per_second: float | None = None  # memory-bandwidth limit of plain decoding
    backend: str = "openvino"  # the engine's backend that ran it (openvino, llama.cpp)


def summarize(
    system: str,
    tier: str,
    device: str,
    mode: str,
    model: str,
    runs: Sequence[GenerationMetrics],
    load_seconds: float,
    peak_rss_bytes: int,
    backend: str = "openvino",
) -> SpeedSummary:
    """The runs' spread; prompt tokens/s from the runs whose prompt was evaluated whole (a prompt
    read back from the KV cache says nothing about prefill speed), all runs when none was."""
    cold = [r for r in runs if r.cached_tokens == 0] or list(runs)
    return SpeedSummary(
        system=system,
        tier=tier,
        device=device,
        mode=mode,
        model=model,
        runs=len(runs),
        input_tokens=sum(r.input_tokens for r in runs),
        output_tokens=sum(r.output_tokens for r in runs),
        tokens_per_second=Spread.of([r.tokens_per_second for r in runs]),
        prompt_tokens_per_second=Spread.of([r.input_tokens * 1000 / max(r.ttft_ms, 1e-6) for r in cold]),
        ttft_ms=Spread.of([r.ttft_ms for r in runs]),
        tpot_ms=Spread.of([r.tpot_ms for r in runs]),
        load_seconds=load_seconds,
        peak_rss_bytes=peak_rss_bytes,
        emulated="emulated" in device,
        backend=backend,
    )


def bench_prompts(kinds: Sequence[str] | None = None) -> list[BenchPrompt]:
    """The prompt set in `bench/prompts.jsonl`, optionally only some kinds."""
    prompts = [BenchPrompt(**json.loads(line)) for line in read_lines("bench", "prompts.jsonl")]
    return [p for p in prompts if kinds is None or p.kind in kinds]


def measure_speed(
    engine: Engine,
    tier: str,
    mode: Decoding,
    prompts: Sequence[BenchPrompt],
    runs: int,
    max_new_tokens: int,
    backend: BackendChoice = "openvino",
) -> SpeedSummary:
    """One warm-up call (which also loads the pipeline), then `runs` passes over `prompts`, on
    `backend` (auto: whichever the engine picks)."""

    def ask(prompt: str, max_tokens: int) -> GenerationResult:
        return engine.generate(prompt, tier=tier, max_new_tokens=max_tokens, decoding=mode, backend=backend)

    warm, results, peak_bytes = _warm_then_runs(ask, prompts, runs, max_new_tokens)
    return summarize(
        "npu-engine",
        tier,
        warm.device,
        mode,
        warm.model,
        [r.metrics for r in results],
        warm.metrics.load_seconds,
        peak_bytes,
        warm.backend,
    )


def _warm_then_runs(
    ask: Callable[[str, int], _R], prompts: Sequence[BenchPrompt], runs: int, max_new_tokens: int
) -> tuple[_R, list[_R], int]:
    """A short warm-up on the first prompt, then `runs` passes over `prompts`: the warm-up's
    answer, the measured answers, and the process's peak RSS meanwhile."""
    with peak_memory() as peak:
        warm = ask(prompts[0].prompt, 8)
        results = [ask(p.prompt, max_new_tokens) for _ in range(runs) for p in prompts]
    return warm, results, peak.peak_bytes


class Generator(Protocol):
    """A baseline that answers chat messages (llama.cpp here; the Ollama adapter has the same call
    with the model name bound)."""

    def __call__(
        self, messages: Sequence[Message], options: SamplingOptions, on_text: TextSink | None = None
    ) -> RawGeneration: ...


def measure_baseline(
    system: str,
    generate: Generator,
    tier: str,
    mode: str,
    model: str,
    prompts: Sequence[BenchPrompt],
    runs: int,
    max_new_tokens: int,
    load_seconds: float,
) -> SpeedSummary:
    """The same warm-up and runs as `measure_speed`, through a baseline."""

    def ask(prompt: str, max_tokens: int) -> GenerationMetrics:
        messages = [{"role": "user", "content": prompt}]
        return generate(messages, SamplingOptions(max_new_tokens=max_tokens)).metrics

    _, results, peak_bytes = _warm_then_runs(ask, prompts, runs, max_new_tokens)
    return summarize(system, tier, "CPU", mode, model, results, load_seconds, peak_bytes)


@dataclass(frozen=True)
class ConcurrencyPoint:
    tier: str
    device: str
    requests: int
    completed: int
    busy: int  # refused with EngineBusyError (the bounded queue), never counted as served
    seconds: float
    tokens_per_second: float  # all requests' output tokens over the wall time
    latency_p50_ms: float
    latency_p95_ms: float


def measure_concurrency(
    engine: Engine, tier: str, prompt: str, levels: Sequence[int], max_new_tokens: int
) -> list[ConcurrencyPoint]:
    """For each level, that many requests at once through the engine: aggregate tokens/s and the
    latency of each request (wall time from its start to its last token)."""
    engine.generate(prompt, tier=tier, max_new_tokens=4)  # loaded before the clock starts
    return [_at_once(engine, tier, prompt, level, max_new_tokens) for level in levels]


def _at_once(engine: Engine, tier: str, prompt: str, level: int, max_new_tokens: int) -> ConcurrencyPoint:
    latencies: list[float] = []
    tokens: list[int] = []
    devices: list[str] = []
    busy: list[int] = []
    guard = threading.Lock()

    def one() -> None:
        started = time.monotonic()
        try:
            result = engine.generate(prompt, tier=tier, max_new_tokens=max_new_tokens, decoding="plain")
        except EngineBusyError:
            busy.append(1)
            return
        with guard:
            latencies.append((time.monotonic() - started) * 1000)
            tokens.append(result.metrics.output_tokens)
            devices.append(result.device)

    threads = [threading.Thread(target=one) for _ in range(level)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - started
    ordered = sorted(latencies) or [0.0]
    return ConcurrencyPoint(
        tier=tier,
        device=devices[0] if devices else "",
        requests=level,
        completed=len(latencies),
        busy=len(busy),
        seconds=seconds,
        tokens_per_second=sum(tokens) / seconds,
        latency_p50_ms=statistics.median(ordered),
        latency_p95_ms=ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
    )


@dataclass(frozen=True)
class LoadTimes:
    model: str
    device: str
    cold_seconds: float  # empty compiled-model cache
    warm_seconds: float  # the cache the cold load filled


def measure_load(engine: Engine, model: str, device: str) -> LoadTimes:
    """Open the converted model `model` twice on `device` with a fresh compiled-model cache: first
    cold (compiling and filling the cache), then warm (reading it back)."""
    with tempfile.TemporaryDirectory(prefix="npu-bench-cache-") as cache:
        cold = engine.load_seconds(model, device, Path(cache))
        warm = engine.load_seconds(model, device, Path(cache))
    return LoadTimes(model, device, cold, warm)


@dataclass(frozen=True)
class QualitySummary:
    system: str
    tier: str
    model: str
    recipe: str
    device: str
    outcomes: tuple[TaskOutcome, ...] = field(repr=False)
    backend: str = "openvino"  # the engine's backend that answered (the llama.cpp baseline: "")

    @property
    def passed(self) -> int:
        return sum(o.passed for o in self.outcomes)

    @property
    def pass_at_1(self) -> float:
        return self.passed / len(self.outcomes) if self.outcomes else 0.0

    def by_language(self) -> dict[str, tuple[int, int]]:
        """Per language: (passed, tasks)."""
        counts: dict[str, tuple[int, int]] = {}
        for o in self.outcomes:
            done, total = counts.get(o.language, (0, 0))
            counts[o.language] = (done + o.passed, total + 1)
        return counts


def until_code_block(generate: Callable[[str, TextSink], str]) -> Callable[[str], str]:
    """An answerer that stops the model once its answer holds a complete code block (the part that
    is scored); the same rule for the engine and the baselines."""

    def answer(prompt: str) -> str:
        heard: list[str] = []

        def sink(text: str) -> bool:
            heard.append(text)
            return has_closed_block("".join(heard))

        return generate(prompt, sink)

    return answer


def chat_answerer(
    generate: Callable[[Sequence[Message], SamplingOptions, TextSink | None], RawGeneration],
) -> Callable[[str], str]:
    """An answerer over a pipeline or baseline that takes chat messages (one user turn per task)."""

    def answer(prompt: str, sink: TextSink) -> str:
        messages = [{"role": "user", "content": prompt}]
        return generate(messages, SamplingOptions(max_new_tokens=QUALITY_MAX_NEW_TOKENS), sink).text

    return until_code_block(answer)


def measure_quality(
    system: str,
    tier: str,
    model: str,
    recipe: str,
    device: str,
    answer: Callable[[str], str],
    tasks: Sequence[CodingTask],
    backend: str = "",
) -> QualitySummary:
    """pass@1: one greedy answer per task, scored by its hidden tests."""
    outcomes = tuple(score_task(t, answer) for t in tasks)
    return QualitySummary(system, tier, model, recipe, device, outcomes, backend)


def to_measurements(
    summaries: Sequence[SpeedSummary], quality: Sequence[QualitySummary] = ()
) -> list[Measurement]:
    """Device-profile entries: the engine's own figures; emulated devices never count as speed
    figures. Plain decoding's entry carries the pass@1 its model scored on that backend (greedy
    answers are the same in every mode), when the quality part measured it."""
    ours = [q for q in quality if q.system == "npu-engine"]
    scored = {(q.model, q.backend): q.pass_at_1 for q in ours}
    per_language = {
        (q.model, q.backend): tuple(
            (language, done / total) for language, (done, total) in sorted(q.by_language().items())
        )
        for q in ours
    }
    measured = [
        Measurement(
            s.tier,
            _kind(s.device) if s.backend in get_args(Backend) else REMOTE,
            s.tokens_per_second.mean,
            s.ttft_ms.mean,
            s.mode,
            s.backend,
            s.prompt_tokens_per_second.mean,
            scored.get((s.model, s.backend)) if s.mode == "plain" else None,
            per_language.get((s.model, s.backend), ()) if s.mode == "plain" else (),
        )
        for s in summaries
        if not s.emulated and s.system == "npu-engine"
    ]
    return measured


def _kind(device: str) -> Literal["npu", "gpu", "cpu"]:
    base = device.split(".")[0].split(" ")[0].upper()
    return "npu" if base == "NPU" else "gpu" if base == "GPU" else "cpu"


CLAIM_LOW, CLAIM_HIGH = 1.30, 1.40


def npu_claim(summaries: Sequence[SpeedSummary]) -> str:
    """Whether the plan's "30–40% faster on the NPU" holds here, per tier, in words."""
    ours = [
        s
        for s in summaries
        if s.system == "npu-engine"
        and s.mode == "plain"
        and not s.emulated
        and s.backend in get_args(Backend)
    ]
    npu = {s.tier: s for s in ours if _kind(s.device) == "npu"}
    if not npu:
        emulated = any(s.emulated for s in summaries)
        return (
            "No NPU on this machine"
            + (" (the emulated NPU runs on the CPU and is not a speed figure)" if emulated else "")
            + ": the plan's 30–40% NPU speedup cannot be checked here."
        )
    lines = []
    for tier, n in npu.items():
        for other_kind in ("cpu", "gpu"):
            other = next((s for s in ours if s.tier == tier and _kind(s.device) == other_kind), None)
            if other is None:
                continue
            ratio = n.tokens_per_second.mean / other.tokens_per_second.mean
            first = n.ttft_ms.mean / other.ttft_ms.mean
            verdict = (
                "the 30–40% claim holds"
                if CLAIM_LOW <= ratio <= CLAIM_HIGH
                else "better than the 30–40% claim"
                if ratio > CLAIM_HIGH
                else "the 30–40% claim does not hold"
            )
            lines.append(
                f"{tier}: NPU decodes at {ratio:.2f}× the {other_kind.upper()}'s tokens/s "
                f"({(ratio - 1) * 100:+.0f}%), first token in {first:.2f}× its time: {verdict}."
            )
    return " ".join(lines) or "An NPU is here, but no tier was measured on it and on the CPU or GPU."
