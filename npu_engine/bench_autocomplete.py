"""npu-bench's autocomplete row: fill-in-the-middle as an editor asks for it, timed per tier.

Each case of `bench/autocomplete.jsonl` is a cut in real Python code (this project's own modules,
as of the file's writing): a ≈1,500-token prefix, a ≈300-token suffix, and the lines cut out
between them (`middle`). Each run asks `Engine.complete(prefix, suffix=suffix)` for at most 64
new tokens, greedy, and times what an editor waits for: the first text it is handed and the whole
answer. The infill's end rules apply (infill.py), as they do for every infill.

`typing` rows ask as an editor does while someone types: the same file again and again, the prefix
growing by the next few characters of the cut-out lines each time, so that what a backend keeps
of the last prompt (prefix reuse) shows in the first-token time of every request after the first."""

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from npu_engine.bench import Spread
from npu_engine.data import read_lines
from npu_engine.engine import Engine
from npu_engine.request import BackendChoice, Decoding, GenerateRequest, GenerationResult

AUTOCOMPLETE_MAX_NEW_TOKENS = 64
TYPING_STEPS = 6  # requests per typed file
TYPING_CHARACTERS = 6  # characters typed between two requests


@dataclass(frozen=True)
class AutocompleteCase:
    id: str
    source: str
    prefix: str
    suffix: str
    middle: str


@dataclass(frozen=True)
class AutocompleteRow:
    """One tier's autocomplete figures over every case and run (after one warm-up call): the
    runtime's first-token time, the wall time to the first text handed out and to the whole
    answer, the tokens in and out per request, and how many answers began with the cut line."""

    tier: str
    model: str
    device: str
    decoding: str
    backend: str
    kind: str  # "files" (each case once per run) or "typing" (one file, the prefix growing)
    requests: int
    input_tokens: float
    output_tokens: float
    ttft_ms: Spread
    first_text_ms: Spread
    total_ms: Spread
    first_line_matches: int
    emulated: bool


def autocomplete_cases() -> list[AutocompleteCase]:
    """The cases in `bench/autocomplete.jsonl`."""
    return [AutocompleteCase(**json.loads(line)) for line in read_lines("bench", "autocomplete.jsonl")]


def measure_autocomplete(
    engine: Engine,
    tier: str,
    cases: Sequence[AutocompleteCase],
    runs: int = 1,
    max_new_tokens: int = AUTOCOMPLETE_MAX_NEW_TOKENS,
    decoding: Decoding = "auto",
    backend: BackendChoice = "auto",
    kind: str = "files",
    warm_up: AutocompleteCase | None = None,
) -> AutocompleteRow:
    """One warm-up infill (it also loads the model; `warm_up`, default the first case), then
    `runs` passes over `cases`."""

    def ask(case: AutocompleteCase) -> tuple[float, float, GenerationResult]:
        request = GenerateRequest.completion(
            case.prefix,
            suffix=case.suffix,
            tier=tier,
            max_new_tokens=max_new_tokens,
            decoding=decoding,
            backend=backend,
        )
        started = time.perf_counter()
        first: list[float] = []

        def heard(text: str) -> None:
            if not first and text:
                first.append(time.perf_counter())

        result = engine.run(engine.prepare(request), heard)
        finished = time.perf_counter()
        return 1000 * ((first[0] if first else finished) - started), 1000 * (finished - started), result

    ask(warm_up or cases[0])
    firsts: list[float] = []
    totals: list[float] = []
    results: list[GenerationResult] = []
    matches = 0
    for _ in range(runs):
        for case in cases:
            first_ms, total_ms, result = ask(case)
            firsts.append(first_ms)
            totals.append(total_ms)
            results.append(result)
            wanted = case.middle.partition("\n")[0].strip()
            matches += int(bool(wanted) and result.text.strip().startswith(wanted))
    last = results[-1]
    metrics = [r.metrics for r in results]
    return AutocompleteRow(
        tier=tier,
        model=last.model,
        device=last.device,
        decoding=last.decoding,
        backend=last.backend,
        kind=kind,
        requests=len(results),
        input_tokens=sum(m.input_tokens for m in metrics) / len(metrics),
        output_tokens=sum(m.output_tokens for m in metrics) / len(metrics),
        ttft_ms=Spread.of([m.ttft_ms for m in metrics]),
        first_text_ms=Spread.of(firsts),
        total_ms=Spread.of(totals),
        first_line_matches=matches,
        emulated="emulated" in last.device,
    )


def autocomplete_table(rows: Sequence[AutocompleteRow]) -> str:
    """The rows as a Markdown table (an emulated device is marked: never a speed figure)."""
    lines = [
        "| tier | model | device | backend | decoding | requests | tokens in | tokens out "
        "| first token, ms: p50 (mean ± spread) | first text, ms | total, ms "
        "| first line right |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        device = r.device + (" (not a speed figure)" if r.emulated else "")
        lines.append(
            f"| {r.tier} | {r.model} | {device} | {r.backend} | {r.decoding} ({r.kind}) | {r.requests} "
            f"| {r.input_tokens:.0f} "
            f"| {r.output_tokens:.1f} | {_p50(r.ttft_ms)} | {_p50(r.first_text_ms)} | {_p50(r.total_ms)} "
            f"| {r.first_line_matches}/{r.requests} |"
        )
    return "\n".join(lines)


def _p50(spread: Spread) -> str:
    return f"{spread.median:.0f} ({spread.mean:.0f} ± {spread.std:.0f})"


def typing_cases(case: AutocompleteCase, steps: int = TYPING_STEPS) -> list[AutocompleteCase]:
    """`case` as an editor asks for it while the cut-out lines are typed: the prefix grows by
    TYPING_CHARACTERS of them from one request to the next."""
    return [
        AutocompleteCase(
            f"{case.id}+{k}",
            case.source,
            case.prefix + case.middle[: k * TYPING_CHARACTERS],
            case.suffix,
            case.middle[k * TYPING_CHARACTERS :],
        )
        for k in range(steps)
    ]


def autocomplete_report(
    engine: Engine,
    tiers: Sequence[str] = (),
    runs: int = 1,
    max_new_tokens: int = AUTOCOMPLETE_MAX_NEW_TOKENS,
    say: Callable[[str], None] = lambda _: None,
    backends: Sequence[BackendChoice] = ("auto",),
) -> list[AutocompleteRow]:
    """The autocomplete rows of each tier (default: every tier whose model can fill in the
    middle) on each backend: every case once per run, then one file typed into."""
    cases = autocomplete_cases()
    chosen = list(tiers) or [t for t in engine.tiers() if engine.family(t).infill is not None]
    rows = []
    for tier in chosen:
        for backend in backends:
            say(
                f"autocomplete: tier {tier} ({backend}), {len(cases)} cases x {runs} run(s), "
                f"<= {max_new_tokens} new tokens"
            )
            rows.append(measure_autocomplete(engine, tier, cases, runs, max_new_tokens, backend=backend))
            typed = typing_cases(cases[0])
            say(f"autocomplete: tier {tier} ({backend}), typing into {cases[0].id}: {len(typed)} requests")
            rows.append(
                measure_autocomplete(
                    engine, tier, typed, 1, max_new_tokens, backend=backend, kind="typing", warm_up=cases[-1]
                )
            )
    return rows
