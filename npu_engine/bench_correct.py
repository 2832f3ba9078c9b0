"""npu-bench's time to a correct answer: how long a user waits, from request to a passing answer,
with the routed engine (`tier="auto"`, its default decoding) and with the single-model setup they
would otherwise run (llama.cpp on the large tier's GGUF, its KV cache kept between requests as
Ollama keeps it).

Two measurements, each system one after the other on the same machine: every coding task of the
plan asked on its own, and an agent-style session (`bench/agent_session.json`): a coding agent's
≈2,000-token system prompt with the tools of `bench/tools.json` written into it as text, then five
tasks asked turn after turn, each system's own answers kept in the history.

Every answer is scored by the tasks' hidden tests (coding_tasks.score_task) and stops, as pass@1's
do, once it holds a complete code block: the part that is scored. A system is warmed up (its
models loaded) before its clock starts; the sandbox's run of the tests is timed apart.
"""

import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from npu_engine.answers import has_closed_block
from npu_engine.baselines import LlamaCppModel, source_gguf
from npu_engine.bench import QUALITY_MAX_NEW_TOKENS, Generator
from npu_engine.catalog import Catalog
from npu_engine.coding_tasks import DEFAULT_LIMITS, CodingTask, load_tasks, score_task
from npu_engine.data import read_json
from npu_engine.engine import Engine
from npu_engine.errors import SourceError
from npu_engine.generation import Message, SamplingOptions, TextSink
from npu_engine.request import GenerateRequest
from npu_engine.sandbox import SandboxLimits
from npu_engine.store import ModelStore
from npu_engine.tools import Tool

TOOLS_PLACE = "{tools}"


@dataclass(frozen=True)
class Reply:
    """A system's answer to chat messages: its text, the prompt tokens it read, and who answered."""

    text: str
    input_tokens: int
    answered_by: str


class ChatSystem(Protocol):
    """A system a user asks: the routed engine, or one model in llama.cpp."""

    name: str
    setup: str  # how it runs, in words

    def answer(self, messages: Sequence[Message], on_text: TextSink) -> Reply:
        """Answer `messages`; `on_text` hears each piece and returns True to stop."""
        ...

    def warm_up(self, prompts: Sequence[str]) -> None:
        """Load what answering `prompts` needs, before any clock starts."""
        ...


class EngineSystem:
    """The engine as a user calls it: `engine.generate(messages, tier="auto")`, everything else left
    at its default (the router picks the tier, the engine the decoding)."""

    def __init__(self, engine: Engine, name: str = "npu-engine") -> None:
        self.engine = engine
        self.name = name
        self.setup = "routed (tier auto), default decoding"

    def answer(self, messages: Sequence[Message], on_text: TextSink) -> Reply:
        result = self.engine.generate(
            list(messages), tier="auto", max_new_tokens=QUALITY_MAX_NEW_TOKENS, on_text=on_text
        )
        who = f"{result.tier}: {result.model} on {result.device} ({result.backend}, {result.decoding})"
        return Reply(result.text, result.metrics.input_tokens, who)

    def warm_up(self, prompts: Sequence[str]) -> None:
        """One token of one prompt per tier the router sends `prompts` to, routed as they will be:
        each model and decoding they need is loaded."""
        seen: set[tuple[str, str]] = set()
        for prompt in prompts:
            prepared = self.engine.prepare(GenerateRequest.of(prompt, tier="auto", max_new_tokens=1))
            routed = (prepared.job.request.tier, prepared.job.request.decoding)
            if routed not in seen:
                seen.add(routed)
                self.engine.run(prepared)


class GeneratorSystem:
    """A baseline that answers chat messages (LlamaCppModel.generate), greedy as the engine."""

    def __init__(self, generate: Generator, name: str, setup: str, model: str) -> None:
        self._generate = generate
        self.name = name
        self.setup = setup
        self.model = model

    def answer(self, messages: Sequence[Message], on_text: TextSink) -> Reply:
        options = SamplingOptions(max_new_tokens=QUALITY_MAX_NEW_TOKENS)
        raw = self._generate(messages, options, on_text)
        return Reply(raw.text, raw.metrics.input_tokens, self.model)

    def warm_up(self, prompts: Sequence[str]) -> None:
        """One token of a request that shares no words with `prompts`: the model is loaded at
        construction, and a kept KV cache must not hold the first task before its clock starts."""
        self._generate([{"role": "user", "content": "Hello."}], SamplingOptions(max_new_tokens=1))


@dataclass(frozen=True)
class TimedAnswer:
    """One task answered and scored: whether it passed (and why not), the prompt tokens read, the
    wall seconds from request to the first text and to the end of the answer, the sandbox's
    seconds running the tests, who answered, and the answer itself."""

    id: str
    language: str
    passed: bool
    reason: str
    input_tokens: int
    first_text_seconds: float
    seconds: float
    check_seconds: float
    answered_by: str
    answer: str = field(repr=False)


@dataclass(frozen=True)
class CorrectSummary:
    """One system over the tasks (or the turns of the session, in order)."""

    system: str
    setup: str
    answers: tuple[TimedAnswer, ...]

    @property
    def passed(self) -> int:
        return sum(a.passed for a in self.answers)

    @property
    def total_seconds(self) -> float:
        return sum(a.seconds for a in self.answers)

    @property
    def median_seconds(self) -> float:
        return statistics.median(a.seconds for a in self.answers) if self.answers else 0.0

    def answered_by(self) -> dict[str, int]:
        """How many answers each tier or model gave."""
        counts: dict[str, int] = {}
        for a in self.answers:
            counts[a.answered_by] = counts.get(a.answered_by, 0) + 1
        return counts


@dataclass(frozen=True)
class CorrectComparison:
    """The engine (`ours`) and the single-model setup (`baseline`) on the same tasks and session."""

    ours: CorrectSummary
    baseline: CorrectSummary
    ours_session: CorrectSummary
    baseline_session: CorrectSummary
    system_prompt_chars: int

    @property
    def speedup(self) -> float:
        """The baseline's total time over ours on the tasks: above 1, the engine is faster."""
        return self.baseline.total_seconds / max(self.ours.total_seconds, 1e-9)

    @property
    def no_fewer_passed(self) -> bool:
        return self.ours.passed >= self.baseline.passed


def timed_answer(
    system: ChatSystem,
    history: Sequence[Message],
    task: CodingTask,
    limits: SandboxLimits = DEFAULT_LIMITS,
) -> TimedAnswer:
    """Ask `system` for `task` after `history`, stopping once the answer holds a complete code block,
    and score it with the task's hidden tests."""
    replies: list[tuple[Reply, float, float]] = []

    def answer(prompt: str) -> str:
        heard: list[str] = []
        first: list[float] = []

        def sink(text: str) -> bool:
            if text and not first:
                first.append(time.perf_counter())
            heard.append(text)
            return has_closed_block("".join(heard))

        started = time.perf_counter()
        reply = system.answer([*history, {"role": "user", "content": prompt}], sink)
        finished = time.perf_counter()
        replies.append((reply, (first[0] if first else finished) - started, finished - started))
        return reply.text

    outcome = score_task(task, answer, limits)
    [(reply, first_text, seconds)] = replies
    return TimedAnswer(
        task.id,
        task.language,
        outcome.passed,
        outcome.reason,
        reply.input_tokens,
        first_text,
        seconds,
        outcome.run_seconds,
        reply.answered_by,
        reply.text,
    )


def time_tasks(
    system: ChatSystem, tasks: Sequence[CodingTask], limits: SandboxLimits = DEFAULT_LIMITS
) -> CorrectSummary:
    """Each task asked on its own (a fresh conversation), timed and scored."""
    return CorrectSummary(
        system.name, system.setup, tuple(timed_answer(system, (), task, limits) for task in tasks)
    )


def time_session(
    system: ChatSystem,
    system_prompt: str,
    tasks: Sequence[CodingTask],
    limits: SandboxLimits = DEFAULT_LIMITS,
) -> CorrectSummary:
    """One conversation: `system_prompt`, then each task's request as the next user turn, every
    answer kept as an assistant message; each turn timed and scored."""
    history: list[Message] = [{"role": "system", "content": system_prompt}]
    turns = []
    for task in tasks:
        turn = timed_answer(system, history, task, limits)
        history += [
            {"role": "user", "content": task.request()},
            {"role": "assistant", "content": turn.answer},
        ]
        turns.append(turn)
    return CorrectSummary(system.name, system.setup, tuple(turns))


def compare(
    ours: ChatSystem,
    baseline: ChatSystem,
    tasks: Sequence[CodingTask],
    session: tuple[str, Sequence[CodingTask]],
    say: Callable[[str], None] = lambda _: None,
    limits: SandboxLimits = DEFAULT_LIMITS,
) -> CorrectComparison:
    """Each system warmed up, then over the tasks and the session, one system after the other."""
    system_prompt, turns = session
    measured: dict[str, tuple[CorrectSummary, CorrectSummary]] = {}
    for system in (ours, baseline):
        say(f"time to a correct answer: {len(tasks)} tasks, then {len(turns)} turns, on {system.name}")
        system.warm_up([t.request() for t in [*tasks, *turns]])
        alone = time_tasks(system, tasks, limits)
        measured[system.name] = (alone, time_session(system, system_prompt, turns, limits))
        say(
            f"{system.name}: {alone.passed}/{len(tasks)} passed in {alone.total_seconds:.0f}s "
            f"(median {alone.median_seconds:.1f}s per task)"
        )
    (a, a_session), (b, b_session) = measured[ours.name], measured[baseline.name]
    return CorrectComparison(a, b, a_session, b_session, len(system_prompt))


def measure_correct(
    engine: Engine,
    catalog: Catalog,
    store: ModelStore,
    tasks: Sequence[CodingTask],
    say: Callable[[str], None] = lambda _: None,
    tier: str = "large",
    session: tuple[str, Sequence[CodingTask]] | None = None,
    threads: int | None = None,
) -> CorrectComparison:
    """The engine routed against llama.cpp on the GGUF that `tier`'s model was converted from, at
    the tier's context, greedy, its KV cache kept between requests, on `threads` (default: every
    thread of the machine, as llama.cpp's own default), over `tasks` and `session` (default: the
    shipped agent session). Raises SourceError when no such GGUF is here."""
    spec = engine.tier(tier)
    gguf = next(
        (
            path
            for m in store.manifests()
            if m.model == spec.model and (path := source_gguf(m, catalog, store))
        ),
        None,
    )
    if gguf is None:
        raise SourceError(
            f"time to a correct answer not measured: no GGUF of {spec.model} (the {tier} tier) here"
        )
    session = session or agent_session()
    llama = LlamaCppModel(gguf, context=spec.context, threads=threads, keep_cache=True)
    try:
        setup = f"{gguf.name}, {llama.threads} threads, context {spec.context}, KV cache kept"
        baseline = GeneratorSystem(llama.generate, "llama.cpp", setup, gguf.name)
        return compare(EngineSystem(engine), baseline, tasks, session, say)
    finally:
        llama.close()


def load_tools() -> list[Tool]:
    """The tools of bench/tools.json."""
    return [
        Tool(t["name"], t["description"], t["parameters"]) for t in read_json("bench", "tools.json")["tools"]
    ]


def render_tools(tools: Sequence[Tool]) -> str:
    """The tools as a system prompt states them: name, description, JSON Schema of the arguments."""
    return "\n\n".join(
        f"## {t.name}\n{t.description}\nParameters (JSON Schema): {json.dumps(t.parameters)}" for t in tools
    )


def agent_session(
    tools: Sequence[Tool] | None = None, tasks: Sequence[CodingTask] | None = None
) -> tuple[str, list[CodingTask]]:
    """The shipped session: its system prompt with `tools` (default: bench/tools.json's) written in,
    and its turns' tasks, taken from `tasks` (default: every task of bench/tasks)."""
    raw = read_json("bench", "agent_session.json")
    rendered = render_tools(load_tools() if tools is None else tools)
    prompt = "\n\n".join(raw["system"]).replace(TOOLS_PLACE, rendered)
    by_id = {t.id: t for t in (load_tasks() if tasks is None else tasks)}
    return prompt, [by_id[task_id] for task_id in raw["tasks"]]
