"""The router: its accuracy on the labelled set (held-out split never fitted on), its traps, its
tiers and strategies, user rules, the optional second stage, and `tier="auto"` in the engine."""

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from npu_engine.catalog import load_catalog
from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.errors import UserInputError
from npu_engine.manifest import Manifest
from npu_engine.router import TASKS, Router, Task, load_rules, route
from npu_engine.router_fit import evaluate, fit, load_labelled
from npu_engine.store import ModelStore

LABELLED = load_labelled()
EMBEDDED = load_catalog().profile("embedded")
FENCED_FIX = "Fix this function:\n\n```python\ndef average(xs):\n    return sum(xs) / len(xs)\n```"


def test_the_labelled_set_is_large_with_a_third_held_out() -> None:
    assert len(LABELLED) >= 300
    assert len({p.id for p in LABELLED}) == len(LABELLED)
    counts = Counter(p.split for p in LABELLED)
    assert counts["heldout"] * 3 >= len(LABELLED) and set(counts) == {"train", "heldout"}
    for task in TASKS:  # every task in both splits
        assert Counter((p.task, p.split) for p in LABELLED)[(task, "heldout")] >= 15


def test_held_out_accuracy_is_at_least_ninety_percent() -> None:
    report = evaluate(Router(), LABELLED, "heldout")
    assert report.total == sum(p.split == "heldout" for p in LABELLED)
    assert report.accuracy >= 0.90, report.mistakes
    assert sum(sum(row.values()) for row in report.confusion.values()) == report.total


def test_the_shipped_weights_are_what_fitting_the_training_split_gives() -> None:
    rules = load_rules()
    refitted = fit(rules, [p for p in LABELLED if p.split == "train"])
    assert refitted.weights == rules.weights
    with pytest.raises(ValueError, match="training split only"):
        fit(rules, LABELLED)


@pytest.mark.parametrize(
    ("prompt", "task"),
    [
        ("How do I build muscle fast?", "general"),
        ("Review the movie Alien in two lines.", "general"),
        ("Which yoga class is best for back pain?", "general"),
        ("What is the function of the kidneys?", "general"),
        ("Write a Python function that returns the median of a list.", "snippet"),
        ("Explain how a mutex differs from a semaphore.", "explain"),
        ("Build a chat service with rooms, authentication, a Postgres database and tests.", "complex"),
        (FENCED_FIX, "edit"),
        (
            "Review this code, list the bugs, do not rewrite it:\n\n"
            "```go\nfunc f(a []int) int { return a[0] }\n```",
            "review",
        ),
    ],
)
def test_traps_and_plain_cases(prompt: str, task: str) -> None:
    decided = route(prompt)
    assert decided.task == task, decided.describe()
    assert decided.signals and all(isinstance(s, str) and s for s in decided.signals)
    assert 0 < decided.confidence <= 1 and abs(sum(decided.scores.values()) - 1) < 1e-9


def test_tier_and_strategy_follow_the_profile() -> None:
    router = Router(profile=EMBEDDED)
    edit = router.route(FENCED_FIX)
    assert (edit.tier, edit.strategy) == ("code", "prompt_lookup")
    big = router.route(
        "Design and implement a job queue with workers, retries, a dashboard and Redis persistence."
    )
    assert (big.task, big.tier, big.strategy) == ("complex", "large", "speculative")  # large has a draft
    review = router.route(
        "Audit this for SQL injection:\n\n```python\ncur.execute('SELECT * FROM t WHERE id=' + uid)\n```"
    )
    # The embedded profile has no review tier: the rules' stand-in takes it, and says so.
    assert (review.task, review.tier) == ("review", "large")
    assert any("no review tier" in s for s in review.signals)
    assert route("Why is the sky blue?").tier == "fast"


def test_a_very_long_edit_goes_to_the_large_tier() -> None:
    body = "\n".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(200))
    decided = Router(profile=EMBEDDED).route(f"Add type hints to this module:\n\n```python\n{body}```")
    assert (decided.task, decided.tier) == ("edit", "large")
    assert any("long edit" in s for s in decided.signals)


def test_chat_messages_are_routed_by_the_last_user_turn() -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Write a haiku about the sea."},
        {"role": "assistant", "content": "Waves fold into foam..."},
        {"role": "user", "content": FENCED_FIX},
    ]
    assert route(messages).task == "edit"


SNIPPET = "Write a Python function that merges overlapping intervals."
HAIKU = "Write a haiku about the sea."
UNSURE_REVIEW = "Review this: `def f(): pass` what's wrong?"  # fast tier, unsure
UNSURE_SQL = (  # the bench session's fourth turn: the large tier, unsure
    "Table: employees(id INTEGER PRIMARY KEY, name TEXT, department TEXT, salary INTEGER).\n"
    "Write one SQLite query returning each department and its average salary, as columns "
    "department, avg_salary, only for departments with more than two employees, ordered by "
    "department.\nReply with only the query, in one ```sql block."
)


def conversation(*turns: str) -> list[dict[str, str]]:
    """A system prompt, then each of `turns` as a user message answered by the assistant, the
    last one unanswered: the messages of the request that asks for the last turn."""
    messages = [{"role": "system", "content": "You are a coding agent."}]
    for text in turns:
        messages += [{"role": "user", "content": text}, {"role": "assistant", "content": "Done."}]
    return messages[:-1]


def test_a_conversation_keeps_its_tier_for_an_unsure_turn_and_moves_for_a_sure_one() -> None:
    router = Router()
    switch = router.rules.switch_confidence
    alone = {text: router.route(text) for text in (SNIPPET, HAIKU, UNSURE_REVIEW, UNSURE_SQL)}
    assert alone[SNIPPET].tier == "code" and alone[HAIKU].tier == "fast"
    assert alone[HAIKU].confidence >= switch
    assert (alone[UNSURE_REVIEW].tier, alone[UNSURE_SQL].tier) == ("fast", "large")
    assert max(alone[UNSURE_REVIEW].confidence, alone[UNSURE_SQL].confidence) < switch

    kept = router.route(conversation(SNIPPET, UNSURE_SQL))
    assert (kept.task, kept.tier, kept.confidence) == ("complex", "code", alone[UNSURE_SQL].confidence)
    assert kept.signals[-1] == (
        f"the conversation stays on code: large at confidence {kept.confidence:.2f} "
        f"is under the {switch:.2f} that moves it"
    )
    assert router.route(conversation(SNIPPET, UNSURE_REVIEW)).tier == "code"
    moved = router.route(conversation(SNIPPET, HAIKU))
    assert moved == alone[HAIKU]
    # Once moved, the conversation is on the new tier: an unsure turn stays there, not on the first.
    assert router.route(conversation(SNIPPET, HAIKU, UNSURE_SQL)).tier == "fast"
    # A conversation of one user turn (tool results after it included) is routed by that turn.
    with_tools = [*conversation(UNSURE_SQL), {"role": "assistant", "content": ""}]
    with_tools.append({"role": "tool", "content": "3 rows"})
    assert router.route(with_tools) == alone[UNSURE_SQL]


def test_how_sure_a_turn_must_be_to_move_a_conversation_is_in_the_rules(tmp_path: Path) -> None:
    raw = load_rules().to_dict()
    assert raw["switch_confidence"] == 0.6  # the shipped value, its measurement in router.py
    raw["switch_confidence"] = 0.4
    path = tmp_path / "router.json"
    path.write_text(json.dumps(raw))
    assert Router(load_rules(path)).route(conversation(SNIPPET, UNSURE_SQL)).tier == "large"
    del raw["switch_confidence"]  # a rules file from before the setting: the shipped value
    path.write_text(json.dumps(raw))
    assert load_rules(path).switch_confidence == 0.6


def test_a_session_s_earlier_turns_are_classified_once() -> None:
    classifier, asked = recording_classifier("snippet")
    router = Router(classifier=classifier)
    for turns in range(1, 4):
        route_now = router.route(conversation(*[UNSURE_REVIEW, UNSURE_SQL, SNIPPET][:turns]))
        assert route_now.tier == "code"
    assert asked == [UNSURE_REVIEW, UNSURE_SQL]


def test_a_user_rules_file_changes_the_mapping(tmp_path: Path) -> None:
    raw = load_rules().to_dict()
    raw["tiers"]["explain"] = "large"
    path = tmp_path / "router.json"
    path.write_text(json.dumps(raw))
    assert route("Explain what a closure is.", load_rules(path)).tier == "large"
    path.write_text(json.dumps({"tiers": {}}))
    with pytest.raises(UserInputError, match="router rules: missing or invalid field"):
        load_rules(path)
    path.write_text("{not json")
    with pytest.raises(UserInputError, match="cannot read router rules"):
        load_rules(path)


def recording_classifier(answer: Task) -> tuple[Callable[[str], Task | None], list[str]]:
    """A second stage that always answers `answer`, and the texts it was asked about."""
    asked: list[str] = []

    def classifier(text: str) -> Task | None:
        asked.append(text)
        return answer

    return classifier, asked


def test_the_second_stage_is_asked_only_when_the_rules_are_unsure() -> None:
    classifier, asked = recording_classifier("explain")
    router = Router(classifier=classifier)
    sure = router.route(FENCED_FIX)
    assert sure.stage == "rules" and asked == []
    unsure = router.route("Review this: `def f(): pass` what's wrong?")
    assert unsure.confidence < router.rules.low_confidence
    assert (unsure.task, unsure.stage, asked) == (
        "explain",
        "model",
        ["Review this: `def f(): pass` what's wrong?"],
    )


def test_engine_auto_tier_uses_the_router(
    cache_store: ModelStore, smollm_cpu: Manifest, smollm_npu: Manifest
) -> None:
    engine = Engine.from_settings(store=cache_store, profile="tiny", inventory=discover(), remotes=())
    result = engine.generate(FENCED_FIX, tier="auto", max_new_tokens=8)
    assert result.route is not None and result.route.task == "edit"
    assert (result.tier, result.decoding) == ("code", "prompt_lookup")
    chat = engine.generate("Write a haiku about the sea.", tier="auto", max_new_tokens=4)
    assert chat.route is not None and (chat.route.task, chat.tier, chat.decoding) == (
        "general",
        "fast",
        "plain",
    )
    # On the (emulated) NPU the router's prompt lookup is a preference, not a demand.
    npu = Engine.from_settings(
        store=cache_store, profile="tiny", inventory=discover(), remotes=(), emulate_npu=True
    )
    on_npu = npu.generate(FENCED_FIX, tier="auto", max_new_tokens=4)
    assert on_npu.device.startswith("NPU") and on_npu.decoding == "plain"
    with pytest.raises(UserInputError, match="not available on the NPU"):
        npu.generate(FENCED_FIX, tier="code", max_new_tokens=4, decoding="prompt_lookup")


def test_route_and_routing_commands(tmp_path: Path) -> None:
    env = {**os.environ, "NPU_ENGINE_HOME": str(tmp_path)}
    said = subprocess.run(
        [
            sys.executable,
            "-m",
            "npu_engine.engine_cli",
            "route",
            "--profile",
            "embedded",
            "How do I build muscle?",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert said.returncode == 0 and said.stdout.startswith("task general -> tier fast, plain decoding")
    command = [sys.executable, "-m", "npu_engine.bench_cli", "routing", "--profile", "embedded"]
    report = subprocess.run(
        [*command, "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=120
    )
    assert report.returncode == 0, report.stderr
    assert "## heldout: " in report.stdout and "| labelled \\ decided |" in report.stdout
    data = json.loads((tmp_path / "out" / "routing.json").read_text())
    assert [r["split"] for r in data] == ["train", "heldout"] and data[1]["accuracy"] >= 0.9
    refit = subprocess.run(
        [*command, "--fit", str(tmp_path / "mine.json"), "--out", str(tmp_path / "out2")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert refit.returncode == 0 and load_rules(tmp_path / "mine.json").weights == load_rules().weights
    bad = subprocess.run(
        [*command, "--rules", str(tmp_path / "missing.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: cannot read router rules")
    assert "Traceback" not in bad.stderr
