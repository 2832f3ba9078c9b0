"""Throughput measurement: warm up, then N measured runs of a fixed prompt set per tier, device
and decoding mode, summarised as mean and spread. The numbers come from the engine's own results."""

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from npu_engine.data import read_lines
from npu_engine.engine import Decoding, Engine
from npu_engine.scheduler import Measurement


@dataclass(frozen=True)
class BenchPrompt:
    id: str
    kind: str
    prompt: str


@dataclass(frozen=True)
class Spread:
    mean: float
    std: float

    @classmethod
    def of(cls, values: Sequence[float]) -> "Spread":
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)

    def __str__(self) -> str:
        return f"{self.mean:.1f} ± {self.std:.1f}"


@dataclass(frozen=True)
class SpeedSummary:
    tier: str
    device: str
    mode: str
    model: str
    runs: int
    output_tokens: int
    tokens_per_second: Spread
    ttft_ms: Spread
    tpot_ms: Spread
    load_seconds: float
    emulated: bool


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
) -> SpeedSummary:
    """One warm-up call (which also loads the pipeline), then `runs` passes over `prompts`."""
    warm = engine.generate(prompts[0].prompt, tier=tier, max_new_tokens=8, decoding=mode)
    results = [
        engine.generate(p.prompt, tier=tier, max_new_tokens=max_new_tokens, decoding=mode)
        for _ in range(runs)
        for p in prompts
    ]
    return SpeedSummary(
        tier=tier,
        device=warm.device,
        mode=mode,
        model=warm.model,
        runs=len(results),
        output_tokens=sum(r.metrics.output_tokens for r in results),
        tokens_per_second=Spread.of([r.metrics.tokens_per_second for r in results]),
        ttft_ms=Spread.of([r.metrics.ttft_ms for r in results]),
        tpot_ms=Spread.of([r.metrics.tpot_ms for r in results]),
        load_seconds=warm.metrics.load_seconds,
        emulated="emulated" in warm.device,
    )


def to_measurements(summaries: Sequence[SpeedSummary]) -> list[Measurement]:
    """Device-profile entries; emulated devices never count as speed figures."""
    return [
        Measurement(s.tier, _kind(s.device), s.tokens_per_second.mean, s.ttft_ms.mean, s.mode)
        for s in summaries
        if not s.emulated
    ]


def _kind(device: str) -> Literal["npu", "gpu", "cpu"]:
    base = device.split(".")[0].split(" ")[0].upper()
    return "npu" if base == "NPU" else "gpu" if base == "GPU" else "cpu"


def markdown_table(summaries: Sequence[SpeedSummary]) -> str:
    rows = [
        "| tier | model | device | mode | runs | tokens/s | first token ms | ms/token | load s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        device = s.device + (" (not a speed figure)" if s.emulated else "")
        rows.append(
            f"| {s.tier} | {s.model} | {device} | {s.mode} | {s.runs} | {s.tokens_per_second} | "
            f"{s.ttft_ms} | {s.tpot_ms} | {s.load_seconds:.1f} |"
        )
    return "\n".join(rows)
