"""Measuring the router on labelled prompts (`bench/routing/prompts.jsonl`, with a held-out split
never used for fitting), and fitting the rules' weights on the training split.

Fitting is multinomial logistic regression over the router's named signals (numpy, L2-regularised):
the weights stay one readable number per signal and task in the rules file.
"""

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from npu_engine.data import read_lines
from npu_engine.errors import UserInputError
from npu_engine.markdown import markdown_table
from npu_engine.router import TASKS, Features, Router, RouterRules


@dataclass(frozen=True)
class LabelledPrompt:
    id: str
    task: str
    split: str  # "train" or "heldout"
    prompt: str


def load_labelled(path: Path | None = None) -> list[LabelledPrompt]:
    """The shipped routing set, or a user's JSONL file of {id, task, split, prompt}."""
    try:
        lines = (
            read_lines("bench.routing", "prompts.jsonl")
            if path is None
            else [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        )
        rows = [LabelledPrompt(**json.loads(line)) for line in lines]
    except (OSError, ValueError, TypeError) as error:
        raise UserInputError(f"cannot read labelled prompts {path}: {error}") from None
    unknown = sorted({row.task for row in rows} - set(TASKS))
    if unknown:
        raise UserInputError(f"labelled prompts name unknown task(s): {', '.join(unknown)}")
    return rows


@dataclass(frozen=True)
class RoutingReport:
    split: str
    total: int
    correct: int
    per_task: dict[str, tuple[int, int]]  # task -> (correct, labelled)
    confusion: dict[str, dict[str, int]]  # labelled task -> decided task -> count
    microseconds_per_decision: float
    mistakes: tuple[tuple[str, str, str], ...]  # (id, labelled, decided)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


def evaluate(router: Router, prompts: Sequence[LabelledPrompt], split: str) -> RoutingReport:
    chosen = [p for p in prompts if split == "all" or p.split == split]
    confusion: dict[str, dict[str, int]] = {task: dict.fromkeys(TASKS, 0) for task in TASKS}
    mistakes = []
    started = time.perf_counter()
    decided = [router.route(p.prompt).task for p in chosen]
    per_decision = (time.perf_counter() - started) * 1e6 / max(len(chosen), 1)
    for prompt, task in zip(chosen, decided, strict=True):
        confusion[prompt.task][task] += 1
        if task != prompt.task:
            mistakes.append((prompt.id, prompt.task, task))
    per_task: dict[str, tuple[int, int]] = {
        task: (confusion[task][task], sum(confusion[task].values())) for task in TASKS
    }
    return RoutingReport(
        split=split,
        total=len(chosen),
        correct=len(chosen) - len(mistakes),
        per_task=per_task,
        confusion=confusion,
        microseconds_per_decision=per_decision,
        mistakes=tuple(mistakes),
    )


def fit(
    rules: RouterRules, prompts: Sequence[LabelledPrompt], l2: float = 0.01, steps: int = 3000
) -> RouterRules:
    """New weights for `rules` from the training split only (held-out prompts are refused)."""
    train = [p for p in prompts if p.split == "train"]
    if len(train) != len(prompts):
        raise ValueError("fit() takes the training split only")
    features = Features(rules)
    rows = [features(p.prompt)[0] for p in train]
    names = sorted(rows[0])
    x = np.array([[row[name] for name in names] + [1.0] for row in rows])
    y = np.zeros((len(train), len(TASKS)))
    for i, p in enumerate(train):
        y[i, [str(t) for t in TASKS].index(p.task)] = 1.0
    w = np.zeros((x.shape[1], len(TASKS)))
    for _ in range(steps):
        logits = x @ w
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        gradient = x.T @ (probs - y) / len(train) + l2 * np.vstack([w[:-1], np.zeros((1, len(TASKS)))])
        w -= 1.0 * gradient
    weights: dict[str, dict[str, float]] = {
        task: {
            name: round(float(w[i, j]), 3) for i, name in enumerate([*names, "bias"]) if abs(w[i, j]) >= 0.001
        }
        for j, task in enumerate(TASKS)
    }
    return replace(rules, weights=weights)


def confusion_table(report: RoutingReport) -> str:
    return markdown_table(
        ["labelled \\ decided", *TASKS, "accuracy"],
        (
            [
                task,
                *(report.confusion[task][other] for other in TASKS),
                "{}/{}".format(*report.per_task[task]),
            ]
            for task in TASKS
        ),
    )
