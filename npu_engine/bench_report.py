"""npu-bench's results: one JSON file with every figure, a Markdown summary, PNG plots."""

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from npu_engine.bench import ConcurrencyPoint, LoadTimes, QualitySummary, SpeedSummary, npu_claim
from npu_engine.bench_correct import CorrectComparison, CorrectSummary
from npu_engine.coding_tasks import LANGUAGES
from npu_engine.devices import GB
from npu_engine.machine import Bandwidth
from npu_engine.markdown import markdown_table


@dataclass
class BenchResults:
    machine: dict[str, Any]
    speed: list[SpeedSummary] = field(default_factory=list)
    quality: list[QualitySummary] = field(default_factory=list)
    concurrency: list[ConcurrencyPoint] = field(default_factory=list)
    load: list[LoadTimes] = field(default_factory=list)
    bandwidth: Bandwidth | None = None
    correct: CorrectComparison | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> str:
        data = {
            "machine": self.machine,
            "seconds": round(self.seconds, 1),
            "bandwidth_gb_per_second": self.bandwidth.gb_per_second if self.bandwidth else None,
            "bandwidth_median_gb_per_second": (
                self.bandwidth.median_bytes_per_second / GB if self.bandwidth else None
            ),
            "npu_claim": npu_claim(self.speed),
            "speed": [asdict(s) for s in self.speed],
            "quality": [
                {
                    **{k: v for k, v in asdict(q).items() if k != "outcomes"},
                    "pass_at_1": q.pass_at_1,
                    "passed": q.passed,
                    "tasks": len(q.outcomes),
                    "by_language": q.by_language(),
                    "outcomes": [asdict(o) for o in q.outcomes],
                }
                for q in self.quality
            ],
            "concurrency": [asdict(c) for c in self.concurrency],
            "load": [asdict(load) for load in self.load],
            "correct": correct_json(self.correct) if self.correct else None,
            "notes": list(dict.fromkeys(self.notes)),
        }
        return json.dumps(data, indent=2) + "\n"


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def speed_table(speed: Sequence[SpeedSummary]) -> str:
    """The engine's figures per tier, device and mode, beside llama.cpp's on the same weights and the
    memory-bandwidth ceiling of plain decoding."""
    baselines = {(s.system, s.tier, s.mode): s for s in speed if s.system != "npu-engine"}
    header = [
        "tier",
        "model",
        "device",
        "backend",
        "mode",
        "tokens/s",
        "llama.cpp tokens/s",
        "ours ÷ llama.cpp",
        "ceiling tokens/s",
        "% of ceiling",
        "first token ms",
        "llama.cpp first token ms",
        "prompt tokens/s",
        "peak RSS GB",
    ]
    rows: list[list[object]] = []
    for s in speed:
        if s.system != "npu-engine":
            continue
        llama = baselines.get(("llama.cpp", s.tier, s.mode))
        ratio = s.tokens_per_second.mean / llama.tokens_per_second.mean if llama else None
        ceiling = s.ceiling_tokens_per_second
        share = 100 * s.tokens_per_second.mean / ceiling if ceiling and not s.emulated else None
        device = s.device + (" (not a speed figure)" if s.emulated else "")
        rows.append(
            [
                s.tier,
                s.model,
                device,
                s.backend,
                s.mode,
                s.tokens_per_second,
                llama.tokens_per_second if llama else "n/a",
                _num(ratio, 2),
                _num(ceiling),
                _num(share, 0),
                s.ttft_ms,
                llama.ttft_ms if llama else "n/a",
                s.prompt_tokens_per_second,
                f"{s.peak_rss_bytes / GB:.1f}",
            ]
        )
    for s in speed:
        if s.system not in ("npu-engine", "llama.cpp"):
            rows.append(
                [
                    s.tier,
                    f"{s.system}: {s.model}",
                    s.device,
                    "",
                    s.mode,
                    s.tokens_per_second,
                    "",
                    "",
                    "",
                    "",
                    s.ttft_ms,
                    "",
                    s.prompt_tokens_per_second,
                    "",
                ]
            )
    return markdown_table(header, rows)


def quality_table(quality: Sequence[QualitySummary]) -> str:
    rows = []
    for q in quality:
        per = q.by_language()
        cells = [f"{per[lang][0]}/{per[lang][1]}" if lang in per else "–" for lang in LANGUAGES]
        pass_at_1 = f"{q.pass_at_1:.0%} ({q.passed}/{len(q.outcomes)})"
        rows.append([q.system, q.backend, q.tier, q.model, q.recipe, q.device, pass_at_1, *cells])
    header = ["system", "backend", "tier", "model", "recipe", "device", "pass@1", *LANGUAGES]
    return markdown_table(header, rows)


def concurrency_table(points: Sequence[ConcurrencyPoint]) -> str:
    header = [
        "tier",
        "device",
        "simultaneous requests",
        "completed",
        "refused busy",
        "tokens/s (all requests)",
        "latency p50 ms",
        "latency p95 ms",
    ]
    return markdown_table(
        header,
        (
            [
                c.tier,
                c.device,
                c.requests,
                c.completed,
                c.busy,
                f"{c.tokens_per_second:.1f}",
                f"{c.latency_p50_ms:.0f}",
                f"{c.latency_p95_ms:.0f}",
            ]
            for c in points
        ),
    )


def load_table(loads: Sequence[LoadTimes]) -> str:
    return markdown_table(
        ["model", "device", "cold load s (empty cache)", "warm load s (cached)"],
        ([x.model, x.device, f"{x.cold_seconds:.1f}", f"{x.warm_seconds:.1f}"] for x in loads),
    )


def _correct_summary_json(summary: CorrectSummary) -> dict[str, Any]:
    return {
        **asdict(summary),
        "passed": summary.passed,
        "tasks": len(summary.answers),
        "total_seconds": summary.total_seconds,
        "median_seconds": summary.median_seconds,
        "answered_by": summary.answered_by(),
    }


def correct_json(correct: CorrectComparison) -> dict[str, Any]:
    """The time-to-a-correct-answer figures with their totals, speed-up and verdict."""
    return {
        "tasks": [_correct_summary_json(s) for s in (correct.ours, correct.baseline)],
        "session": [_correct_summary_json(s) for s in (correct.ours_session, correct.baseline_session)],
        "system_prompt_chars": correct.system_prompt_chars,
        "speedup": correct.speedup,
        "no_fewer_passed": correct.no_fewer_passed,
    }


def correct_tables(correct: CorrectComparison) -> str:
    """Per system: tasks passed, total and median seconds to an answer, who answered; the speed-up;
    then the agent session turn by turn."""
    rows = []
    for s in (correct.ours, correct.baseline):
        firsts = [a.first_text_seconds for a in s.answers]
        by = ", ".join(f"{who} ×{n}" for who, n in s.answered_by().items())
        rows.append(
            [
                s.system,
                s.setup,
                f"{s.passed}/{len(s.answers)}",
                f"{s.total_seconds:.1f}",
                f"{s.median_seconds:.2f}",
                f"{statistics.median(firsts):.2f}" if firsts else "–",
                by,
            ]
        )
    tasks = markdown_table(
        [
            "system",
            "setup",
            "tasks passed",
            "total s",
            "median s per task",
            "median s to first text",
            "answered by",
        ],
        rows,
    )
    verdict = (
        f"Speed-up (llama.cpp's total ÷ the engine's): **{correct.speedup:.2f}×**; the engine passed "
        f"{'no fewer' if correct.no_fewer_passed else 'fewer'} tasks ({correct.ours.passed} vs "
        f"{correct.baseline.passed})."
    )
    turns = [
        [
            s.system,
            i,
            a.id,
            a.input_tokens,
            f"{a.first_text_seconds:.2f}",
            f"{a.seconds:.2f}",
            "yes" if a.passed else f"no: {a.reason[:60]}",
            a.answered_by,
        ]
        for s in (correct.ours_session, correct.baseline_session)
        for i, a in enumerate(s.answers, 1)
    ]
    session = markdown_table(
        ["system", "turn", "task", "prompt tokens", "first text s", "total s", "passed", "answered by"],
        turns,
    )
    intro = (
        f"Agent-style session: a {correct.system_prompt_chars}-character system prompt (≈2,000 tokens, "
        "bench/tools.json written into it), then one task per turn, each answer kept in the history."
    )
    return "\n\n".join([tasks, verdict, intro, session])


def markdown(results: BenchResults) -> str:
    m = results.machine
    parts = [
        f"# npu-bench on {m['cpu']} ({m['cpu_threads']} threads, {m['memory_gb']} GB)",
        f"Devices: {', '.join(d['name'] for d in m['devices'])}. "
        f"OpenVINO {m['versions'].get('openvino')}, "
        f"llama-cpp-python {m['versions'].get('llama_cpp_python')}. "
        f"Whole run: {results.seconds / 60:.1f} min.",
    ]
    if results.bandwidth:
        parts.append(
            f"Memory read bandwidth: {results.bandwidth.gb_per_second:.1f} GB/s at best, "
            f"{results.bandwidth.median_bytes_per_second / GB:.1f} GB/s median "
            f"({results.bandwidth.threads} threads). The ceiling is that bandwidth over the bytes plain "
            "decoding reads per token (weights without the input-embedding table, plus the KV cache at "
            "the run's mean context); speculative and prompt-lookup decoding can pass it, since they "
            "check several tokens per read of the weights."
        )
    if results.speed:
        parts += ["## Throughput", speed_table(results.speed)]
    parts.append(f"**NPU claim.** {npu_claim(results.speed)}")
    if results.quality:
        parts += ["## Quality (pass@1 on bench/tasks, greedy, hidden tests)", quality_table(results.quality)]
    if results.concurrency:
        parts += ["## Concurrency", concurrency_table(results.concurrency)]
    if results.load:
        parts += ["## Load and compile", load_table(results.load)]
    if results.correct:
        parts += [
            "## Time to a correct answer (request to a passing answer, greedy, warm)",
            correct_tables(results.correct),
        ]
    if results.notes:
        parts += ["## Notes", "\n".join(f"- {note}" for note in dict.fromkeys(results.notes))]
    return "\n\n".join(parts) + "\n"


def write_plots(results: BenchResults, out: Path) -> list[Path]:
    """tokens/s per tier, device and mode with the baselines and ceiling; latency under concurrency.
    Needs matplotlib (`npu-engine[bench]`); returns the files written (none without it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        results.notes.append("plots skipped: matplotlib is not installed (pip install 'npu-engine[bench]')")
        return []
    written = []
    ours = [s for s in results.speed if s.system == "npu-engine" and not s.emulated]
    if ours:
        labels = [f"{s.tier}\n{s.device}\n{s.mode}" for s in ours]
        baseline = {
            (s.tier, s.mode): s.tokens_per_second.mean for s in results.speed if s.system == "llama.cpp"
        }
        xs = range(len(ours))
        figure, axes = plt.subplots(figsize=(max(6, 1.6 * len(ours)), 4.5))
        axes.bar([x - 0.2 for x in xs], [s.tokens_per_second.mean for s in ours], 0.4, label="npu-engine")
        axes.bar(
            [x + 0.2 for x in xs], [baseline.get((s.tier, s.mode), 0) for s in ours], 0.4, label="llama.cpp"
        )
        ceilings = [s.ceiling_tokens_per_second for s in ours]
        if any(ceilings):
            axes.scatter(
                list(xs), [c or 0 for c in ceilings], marker="_", s=900, color="black", label="ceiling"
            )
        axes.set_xticks(list(xs), labels, fontsize=8)
        axes.set_ylabel("tokens/s")
        axes.legend()
        figure.tight_layout()
        path = out / "tokens_per_second.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    if results.concurrency:
        figure, axes = plt.subplots(figsize=(6, 4))
        levels = [c.requests for c in results.concurrency]
        axes.plot(levels, [c.latency_p50_ms for c in results.concurrency], "o-", label="latency p50 ms")
        axes.plot(levels, [c.latency_p95_ms for c in results.concurrency], "o--", label="latency p95 ms")
        axes.set_xlabel("simultaneous requests")
        axes.set_ylabel("ms")
        twin = axes.twinx()
        twin.plot(levels, [c.tokens_per_second for c in results.concurrency], "s-", color="green")
        twin.set_ylabel("tokens/s, all requests", color="green")
        axes.set_ylim(bottom=0)
        twin.set_ylim(bottom=0)  # from zero: a flat line must look flat
        axes.legend(loc="upper left")
        figure.tight_layout()
        path = out / "concurrency.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


@dataclass(frozen=True)
class BenchRun:
    """What a bench command measured, the folder its results are in, and the device profile it
    wrote (None when it wrote none)."""

    results: BenchResults
    folder: Path
    device_profile: Path | None = None


def results_folder(out: Path | None) -> Path:
    """`out`, else npu-bench-results/<UTC time> under the working folder; created."""
    folder = out or Path("npu-bench-results") / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_results(out: Path | None, results: BenchResults) -> Path:
    """The plots, results.json and summary.md in `results_folder(out)`; returns the folder."""
    folder = results_folder(out)
    write_plots(results, folder)
    (folder / "results.json").write_text(results.to_json())
    (folder / "summary.md").write_text(markdown(results))
    return folder
