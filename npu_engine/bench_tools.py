"""`npu-bench tools` as a library call: how often a tier calls tools right. Each prompt of
`bench/tool_prompts.jsonl` is asked with every tool of `bench/tools.json` declared (tool_choice
`auto`, greedy): a success is a call of the expected tool whose arguments validate (always so,
once parsed) and carry the expected values, or no call when none is expected."""

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from npu_engine.bench_report import results_folder
from npu_engine.data import read_json, read_lines
from npu_engine.engine import Engine
from npu_engine.generation import SamplingOptions
from npu_engine.request import GenerateRequest
from npu_engine.tools import Tool


@dataclass(frozen=True)
class ToolPrompt:
    """A prompt, the tool it needs (None: none) and argument values the call must carry."""

    id: str
    prompt: str
    expect: str | None
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolOutcome:
    id: str
    expected: str | None
    called: tuple[str, ...]
    arguments: tuple[dict[str, Any], ...]
    ok: bool
    seconds: float
    text: str


@dataclass(frozen=True)
class ToolReport:
    tier: str
    model: str
    outcomes: tuple[ToolOutcome, ...]

    @property
    def rate(self) -> float:
        return sum(o.ok for o in self.outcomes) / max(len(self.outcomes), 1)

    def markdown(self) -> str:
        lines = [
            f"## tier {self.tier} ({self.model}): {self.rate:.0%} "
            f"({sum(o.ok for o in self.outcomes)}/{len(self.outcomes)})",
            "",
            "| prompt | expected | called | ok | s |",
            "|---|---|---|---|---|",
        ]
        for o in self.outcomes:
            called = ", ".join(f"{n}({json.dumps(a)})" for n, a in zip(o.called, o.arguments, strict=True))
            ok = "yes" if o.ok else "no"
            lines.append(f"| {o.id} | {o.expected or '-'} | {called or '-'} | {ok} | {o.seconds:.1f} |")
        return "\n".join(lines)


def load_tool_bench() -> tuple[tuple[Tool, ...], tuple[ToolPrompt, ...]]:
    """The shipped tools and prompts."""
    tools = tuple(
        Tool(t["name"], t["description"], t["parameters"]) for t in read_json("bench", "tools.json")["tools"]
    )
    prompts = tuple(ToolPrompt(**json.loads(line)) for line in read_lines("bench", "tool_prompts.jsonl"))
    return tools, prompts


def _carries(arguments: dict[str, Any], expected: dict[str, Any]) -> bool:
    def same(a: Any, b: Any) -> bool:
        if isinstance(a, str) and isinstance(b, str):
            return a.strip().rstrip("/").lower() == b.strip().rstrip("/").lower()
        return bool(a == b)

    return all(key in arguments and same(arguments[key], value) for key, value in expected.items())


def tool_call_rate(
    engine: Engine,
    tier: str,
    tools: Sequence[Tool],
    prompts: Sequence[ToolPrompt],
    *,
    max_new_tokens: int = 96,
    say: Callable[[str], None] = lambda _: None,
) -> ToolReport:
    """Ask `tier` every prompt with `tools` declared and score its calls."""
    outcomes = []
    model = ""
    for prompt in prompts:
        request = GenerateRequest(
            ({"role": "user", "content": prompt.prompt},),
            tier,
            SamplingOptions(max_new_tokens=max_new_tokens),
            tools=tuple(tools),
        )
        started = time.perf_counter()
        result = engine.generate(request)
        model = result.model
        calls = result.tool_calls
        if prompt.expect is None:
            ok = not calls
        else:
            ok = (
                bool(calls)
                and calls[0].name == prompt.expect
                and _carries(calls[0].arguments, prompt.arguments)
            )
        outcome = ToolOutcome(
            prompt.id,
            prompt.expect,
            tuple(c.name for c in calls),
            tuple(c.arguments for c in calls),
            ok,
            time.perf_counter() - started,
            result.text[:200],
        )
        say(f"{tier} {prompt.id}: {'ok' if ok else 'MISS'} {outcome.called} {outcome.seconds:.1f}s")
        outcomes.append(outcome)
    return ToolReport(tier, model, tuple(outcomes))


def tool_bench(
    engine: Engine,
    tiers: Sequence[str],
    *,
    say: Callable[[str], None] = lambda _: None,
    out: Path | None = None,
) -> tuple[list[ToolReport], Path]:
    """tool_call_rate for every tier on the shipped set; tools.md and tools.json in `out`."""
    tools, prompts = load_tool_bench()
    reports = [tool_call_rate(engine, tier, tools, prompts, say=say) for tier in tiers]
    folder = results_folder(out)
    text = "# Tool-call success rate\n\n" + "\n\n".join(r.markdown() for r in reports) + "\n"
    (folder / "tools.md").write_text(text)
    (folder / "tools.json").write_text(
        json.dumps([asdict(r) | {"rate": r.rate} for r in reports], indent=2) + "\n"
    )
    return reports, folder
