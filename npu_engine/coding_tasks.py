"""npu-bench's quality set: self-contained coding tasks (Python, JavaScript, SQL, shell) with hidden
tests. An answer's code runs with its task's tests in the sandbox; pass@1 is the share that pass.

A task passes only when its tests ran to the end: the harness prints a fresh random token after the
last check, so an answer that exits early (or prints anything it likes) cannot pass.
"""

import json
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from npu_engine.answers import extract_code
from npu_engine.data import read_toml
from npu_engine.sandbox import SandboxLimits, SandboxRun, run_sandboxed

Language = Literal["python", "javascript", "sql", "shell"]
LANGUAGES: tuple[Language, ...] = ("python", "javascript", "sql", "shell")
# Fence tags a model may use for each language.
FENCE_TAGS: dict[Language, tuple[str, ...]] = {
    "python": ("python", "py", "python3"),
    "javascript": ("javascript", "js", "node"),
    "sql": ("sql", "sqlite", "sqlite3"),
    "shell": ("bash", "sh", "shell", "zsh"),
}
# Code only: no explanation, comments or examples, which cost time and are not scored.
INSTRUCTIONS: dict[Language, str] = {
    "python": "Reply with only the code, in one ```python block: no explanation, no comments, no examples.",
    "javascript": "Reply with only the JavaScript (Node.js) code, in one ```javascript block: "
    "no explanation, no comments, no examples.",
    "sql": "Reply with only the query, in one ```sql block.",
    "shell": "Reply with only the bash function, in one ```bash block: no explanation, no examples.",
}

DEFAULT_LIMITS = SandboxLimits()
# An answer asks for code; this turns a model's answer into the text the sandbox runs.
Answerer = Callable[[str], str]


@dataclass(frozen=True)
class CodingTask:
    id: str
    language: Language
    prompt: str
    tests: str = ""
    setup: str = ""  # SQL: the tables
    expected: tuple[tuple[Any, ...], ...] = ()  # SQL: the rows
    ordered: bool = True  # SQL: whether row order matters

    def request(self) -> str:
        """What the model is asked."""
        return f"{self.prompt}\n{INSTRUCTIONS[self.language]}"


@dataclass(frozen=True)
class TaskOutcome:
    id: str
    language: str
    passed: bool
    reason: str  # "passed", "timed out", or the last line the failing run printed
    answer_seconds: float
    run_seconds: float


def load_tasks(languages: Sequence[str] | None = None) -> list[CodingTask]:
    """Every task in `bench/tasks/<language>.toml`, optionally only some languages."""
    tasks = []
    for language in LANGUAGES:
        if languages is not None and language not in languages:
            continue
        for raw in read_toml("bench.tasks", f"{language}.toml")["task"]:
            expected = tuple(tuple(row) for row in raw.pop("expected", ()))
            tasks.append(CodingTask(language=language, expected=expected, **raw))
    return tasks


def reference_answers() -> dict[str, str]:
    """A known-good answer per task id, fenced as a model would answer (for the bench's own tests)."""
    return {
        task_id: f"```\n{code.strip()}\n```"
        for task_id, code in read_toml("bench.tasks", "references.toml").items()
    }


def wrong_answers() -> dict[str, str]:
    """A nearly-right answer per task where one was written (an off-by-one, a missed edge case),
    fenced as a model would answer: the bench's own tests check that each fails."""
    written = read_toml("bench.tasks", "wrong.toml")
    return {task_id: f"```\n{code.strip()}\n```" for task_id, code in written.items()}


def check_answer(
    task: CodingTask, answer: str, limits: SandboxLimits = DEFAULT_LIMITS
) -> tuple[SandboxRun, bool]:
    """Run the code in `answer` against the task's hidden tests in the sandbox: the run, and whether
    it passed (exit status 0 and the harness's last line printed)."""
    token = secrets.token_hex(16)
    run = _run_tests(task, extract_code(answer, FENCE_TAGS[task.language]), limits, token)
    return run, run.ok and token in run.stdout


def _run_tests(task: CodingTask, code: str, limits: SandboxLimits, token: str) -> SandboxRun:
    if task.language == "python":
        # Imported, not run as __main__: an example block under `if __name__ == "__main__"` stays idle.
        test = f"from solution import *\n\n{task.tests}\nprint({token!r})\n"
        return run_sandboxed(
            [sys.executable, "-E", "-s", "test.py"], {"solution.py": code, "test.py": test}, limits
        )
    if task.language == "javascript":
        # CommonJS: drop ES-module `export` keywords; the tests get their own scope and `assert`.
        body = "\n".join(
            line.removeprefix("export default ").removeprefix("export ") for line in code.splitlines()
        )
        test = (
            f"{body}\n;(() => {{\nconst assert = require('node:assert');\n"
            f"const pass = () => console.log({json.dumps(token)});\n{task.tests}\n"
            + ("" if "pass()" in task.tests else "pass();\n")
            + "})();\n"
        )
        return run_sandboxed(["node", "test.js"], {"test.js": test}, limits)
    if task.language == "sql":
        checker = _SQL_CHECKER.format(
            setup=json.dumps(task.setup),
            expected=json.dumps([list(row) for row in task.expected]),
            ordered=task.ordered,
            token=json.dumps(token),
        )
        return run_sandboxed(
            [sys.executable, "-E", "-s", "check.py"], {"query.sql": code, "check.py": checker}, limits
        )
    checks = "\n".join(
        f"{line} || {{ echo {json.dumps('failed: ' + line)} >&2; exit 1; }}"
        for line in task.tests.splitlines()
        if line.strip()
    )
    test = f"source ./solution.sh\n{checks}\necho {token}\n"
    return run_sandboxed(["bash", "test.sh"], {"solution.sh": code, "test.sh": test}, limits)


def score_task(task: CodingTask, answer: Answerer, limits: SandboxLimits = DEFAULT_LIMITS) -> TaskOutcome:
    """Ask `answer` for the task, run its code against the hidden tests, and say whether it passed."""
    started = time.monotonic()
    text = answer(task.request())
    answered = time.monotonic() - started
    run, ok = check_answer(task, text, limits)
    if ok:
        reason = "passed"
    elif run.timed_out:
        reason = f"timed out after {limits.seconds:.0f}s"
    else:
        lines = [line.strip() for line in (run.stderr or run.stdout).splitlines() if line.strip()]
        # The error line, not a runtime's trailing banner (Node ends with its version).
        errors = [line for line in lines if "Error" in line or line.startswith(("failed:", "rows "))]
        reason = (errors or lines or [f"exit code {run.returncode}"])[-1][:200]
    return TaskOutcome(task.id, task.language, ok, reason, answered, run.seconds)


_SQL_CHECKER = """
import json, sqlite3, sys

def close(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))
    return a == b

db = sqlite3.connect(":memory:")
db.executescript({setup})
text = open("query.sql", encoding="utf-8").read()
statements, current = [], ""
for line in text.splitlines(keepends=True):
    current += line
    if sqlite3.complete_statement(current):
        statements.append(current)
        current = ""
if current.strip():
    statements.append(current)
if not statements:
    sys.exit("no SQL statement in the answer")
for statement in statements[:-1]:
    db.execute(statement)
rows = [list(row) for row in db.execute(statements[-1])]
expected = json.loads({expected!r})
if not {ordered}:
    rows, expected = sorted(rows, key=repr), sorted(expected, key=repr)
same = len(rows) == len(expected) and all(
    len(r) == len(e) and all(close(a, b) for a, b in zip(r, e)) for r, e in zip(rows, expected)
)
if not same:
    sys.exit(f"rows {{rows!r}} differ from the expected {{expected!r}}")
print({token})
"""
