"""npu-bench's time to a correct answer (npu_engine.bench_correct): answers scored by the tasks'
real hidden tests, timed per task and per turn of the agent session, the routed engine on real IR
against llama.cpp on the GGUF it was converted from, and the report's tables."""

import json
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from npu_engine.baselines import LlamaCppModel
from npu_engine.bench_correct import (
    CorrectComparison,
    Reply,
    agent_session,
    compare,
    load_tools,
    measure_correct,
    time_session,
)
from npu_engine.bench_plan import run_plan
from npu_engine.bench_report import BenchResults, correct_json, markdown
from npu_engine.bench_run import bench_engines, run_bench
from npu_engine.catalog import Catalog
from npu_engine.coding_tasks import CodingTask, check_answer, load_tasks, reference_answers
from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.generation import Message, SamplingOptions, TextSink
from npu_engine.machine import machine_facts
from npu_engine.manifest import Manifest
from npu_engine.store import ModelStore

# SmolLM2-135M writes no working stack class (it never defines MinStack): a task it fails.
FAILED_BY_TINY = "py-stack"


class Scripted:
    """A system that answers each task's request with a known answer, piece by piece, and keeps
    the messages it was asked: the bench's bookkeeping without a model."""

    def __init__(self, name: str, answers: dict[str, str], pause: float = 0.0) -> None:
        self.name = name
        self.setup = "scripted"
        self.asked: list[list[Message]] = []
        self.warmed: list[str] = []
        self._answers = answers
        self._pause = pause

    def answer(self, messages: Sequence[Message], on_text: TextSink) -> Reply:
        self.asked.append(list(messages))
        request = messages[-1]["content"]
        text = next(answer for prompt, answer in self._answers.items() if request.startswith(prompt))
        said = ""
        for piece in (text[: len(text) // 2], text[len(text) // 2 :], "\nand some prose after it"):
            time.sleep(self._pause)
            said += piece
            if on_text(piece):
                break
        return Reply(said, sum(len(m["content"]) for m in messages), self.name)

    def warm_up(self, prompts: Sequence[str]) -> None:
        self.warmed += prompts


def _one_per_language() -> list[CodingTask]:
    tasks = load_tasks()
    return [next(t for t in tasks if t.language == lang) for lang in ("python", "javascript", "sql", "shell")]


def test_passes_come_from_the_hidden_tests_and_a_wrong_answer_fails() -> None:
    tasks = _one_per_language()
    references = reference_answers()
    right = {t.prompt: references[t.id] for t in tasks}
    wrong = dict(right)
    wrong[tasks[0].prompt] = "```python\ndef nothing_asked_for():\n    return 0\n```"
    session = agent_session(tasks=load_tasks())
    turns = session[1]
    for t in turns:
        right[t.prompt] = wrong[t.prompt] = references[t.id]
    ours, baseline = Scripted("ours", wrong, 0.01), Scripted("theirs", right, 0.03)
    result = compare(ours, baseline, tasks, session)
    assert (result.ours.passed, result.baseline.passed) == (len(tasks) - 1, len(tasks))
    assert [a.passed for a in result.ours.answers] == [False, True, True, True]
    assert "nothing_asked_for" in result.ours.answers[0].answer and result.ours.answers[0].reason != "passed"
    assert not result.no_fewer_passed
    for summary in (result.ours, result.baseline, result.ours_session, result.baseline_session):
        assert all(0 < a.first_text_seconds < a.seconds and a.check_seconds > 0 for a in summary.answers)
        # The answer stops at its closing fence: the prose after it is never asked for.
        assert all(a.answer.rstrip().endswith("```") for a in summary.answers)
    assert result.ours.total_seconds == pytest.approx(sum(a.seconds for a in result.ours.answers))
    assert result.speedup == pytest.approx(result.baseline.total_seconds / result.ours.total_seconds)
    assert result.speedup > 1.5  # the baseline paused three times as long per piece
    # Each system is warmed with every request it will be asked, then asked each task alone.
    assert ours.warmed == [t.request() for t in [*tasks, *turns]]
    assert [len(m) for m in ours.asked[: len(tasks)]] == [1] * len(tasks)


def test_a_session_keeps_its_system_prompt_and_every_earlier_answer() -> None:
    prompt, turns = agent_session()
    assert len(turns) == 5 and len({t.language for t in turns}) >= 3
    # The tools of bench/tools.json, written into the prompt as text.
    assert all(f"## {tool.name}\n" in prompt for tool in load_tools()) and "{tools}" not in prompt
    references = reference_answers()
    system = Scripted("ours", {t.prompt: references[t.id] for t in turns})
    summary = time_session(system, prompt, turns)
    assert [a.id for a in summary.answers] == [t.id for t in turns] and summary.passed == 5
    for turn, asked in enumerate(system.asked):
        assert asked[0] == {"role": "system", "content": prompt} and len(asked) == 2 + 2 * turn
        assert [m["content"] for m in asked[2::2]] == [a.answer for a in summary.answers[:turn]]
        assert [m["role"] for m in asked[1:]] == ["user", "assistant"] * turn + ["user"]
    tokens = [a.input_tokens for a in summary.answers]
    assert tokens == sorted(tokens) and tokens[0] > 5000  # characters here: the history grows


def test_the_system_prompt_is_about_2000_tokens(smollm_gguf: Path) -> None:
    from llama_cpp import Llama

    vocabulary = Llama(model_path=str(smollm_gguf), vocab_only=True, verbose=False)
    tokens = vocabulary.tokenize(agent_session()[0].encode(), add_bos=False)
    assert 1700 <= len(tokens) <= 2400


def test_a_kept_kv_cache_reads_only_the_new_turn_and_answers_the_same(smollm_gguf: Path) -> None:
    prompt = agent_session()[0][:2400]  # about 500 tokens
    first: list[Message] = [{"role": "system", "content": prompt}, {"role": "user", "content": "Say hi."}]
    second: list[Message] = [
        *first,
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "Bye?"},
    ]
    options = SamplingOptions(max_new_tokens=8)
    # One thread: two spinning on a loaded two-core machine take ten times as long.
    fresh = LlamaCppModel(smollm_gguf, context=2048, threads=1, keep_cache=False)
    kept = LlamaCppModel(smollm_gguf, context=2048, threads=1, keep_cache=True)
    try:
        kept.generate(first, options)
        reused, whole = kept.generate(second, options), fresh.generate(second, options)
    finally:
        fresh.close()
        kept.close()
    assert reused.text == whole.text and reused.metrics.input_tokens == whole.metrics.input_tokens > 450
    # ≈500 prompt tokens evaluated again against a dozen: far more than load noise.
    assert reused.metrics.ttft_ms < 0.5 * whole.metrics.ttft_ms


def _tiny_engine(store: ModelStore) -> Engine:
    return Engine.from_settings(
        store=store, profile="tiny", inventory=discover(), remotes=(), measurements=[]
    )


def test_the_engine_and_llama_cpp_answer_real_tasks(
    cache_store: ModelStore, catalog: Catalog, smollm_cpu: Manifest, smollm_gguf: Path
) -> None:
    by_id = {t.id: t for t in load_tasks()}
    tasks = [by_id[FAILED_BY_TINY], by_id["sql-second-highest"]]
    heard: list[str] = []
    session = ("You are a coding assistant. " * 20, tasks[1:])  # about 120 tokens
    engine = _tiny_engine(cache_store)
    # One llama.cpp thread: two spinning on a loaded two-core machine take several times as long.
    result = measure_correct(engine, catalog, cache_store, tasks, heard.append, session=session, threads=1)
    for summary, asked in zip(
        (result.ours, result.baseline, result.ours_session, result.baseline_session),
        (tasks, tasks, tasks[1:], tasks[1:]),
        strict=True,
    ):
        assert [a.id for a in summary.answers] == [t.id for t in asked]
        for answer, task in zip(summary.answers, asked, strict=True):
            assert answer.seconds >= answer.first_text_seconds > 0 and answer.check_seconds > 0
            assert answer.passed == check_answer(task, answer.answer)[1]  # the real scorer, again
    # A failing answer is counted as one.
    assert not result.ours.answers[0].passed and not result.baseline.answers[0].passed
    assert result.ours.passed == sum(a.passed for a in result.ours.answers) <= 1
    assert {a.answered_by for a in result.ours.answers} <= {
        f"{tier}: {smollm_cpu.name} on CPU ({backend}, plain)"
        for tier in ("code", "large")
        for backend in ("openvino", "llama.cpp")
    }
    assert result.baseline.setup == f"{smollm_gguf.name}, 1 threads, context 8192, KV cache kept"
    assert result.baseline.answered_by() == {smollm_gguf.name: 2}
    # The turn reads the system prompt too.
    assert result.ours_session.answers[0].input_tokens > result.ours.answers[1].input_tokens + 60
    assert heard[0].startswith("time to a correct answer: 2 tasks, then 1 turns, on npu-engine")
    _renders(result)


def _renders(result: CorrectComparison) -> None:
    results = BenchResults(machine_facts(discover()), correct=result)
    text = markdown(results)
    section = text.split("## Time to a correct answer")[1]
    ours, theirs = (
        next(line for line in section.splitlines() if line.startswith(f"| {name} |"))
        for name in ("npu-engine", "llama.cpp")
    )
    assert f"| {result.ours.passed}/2 | {result.ours.total_seconds:.1f} |" in ours
    assert f"| {result.baseline.passed}/2 | {result.baseline.total_seconds:.1f} |" in theirs
    assert f"**{result.speedup:.2f}×**" in section
    data = json.loads(results.to_json())["correct"]
    assert data == json.loads(json.dumps(correct_json(result)))
    assert [s["system"] for s in data["tasks"]] == ["npu-engine", "llama.cpp"]
    assert data["tasks"][0]["total_seconds"] == pytest.approx(result.ours.total_seconds)
    assert data["no_fewer_passed"] == (result.ours.passed >= result.baseline.passed)


@pytest.mark.slow
def test_a_run_with_the_correct_part_writes_its_tables(
    tmp_path: Path, cache_store: ModelStore, catalog: Catalog, smollm_cpu: Manifest, smollm_gguf: Path
) -> None:
    plan = run_plan(catalog, profile="tiny", tiers=["code"], modes=["plain"], languages=["sql"])
    plan = replace(plan, parts=["speed", "correct"], prompts=plan.prompts[:1], tasks=plan.tasks[:2])
    done = run_bench(
        plan,
        store=cache_store,
        catalog=catalog,
        inventory=discover(),
        engines=bench_engines(cache_store, catalog),
        say=lambda _: None,
        out=tmp_path,
        write_device_profile=False,
    )
    data = json.loads((tmp_path / "results.json").read_text())["correct"]
    assert [len(s["answers"]) for s in data["tasks"]] == [2, 2]
    assert [len(s["answers"]) for s in data["session"]] == [5, 5]
    assert "## Time to a correct answer" in (tmp_path / "summary.md").read_text()
    assert done.results.correct is not None and done.results.correct.system_prompt_chars > 8000
