"""npu-bench's quality tasks and sandbox: every hidden test passes its reference answer and fails a
wrong one; answers that loop, hog memory, reach the network or exit early are stopped and fail."""

import os
import socket
import time
from collections import Counter

import psutil
import pytest

from npu_engine.coding_tasks import (
    LANGUAGES,
    CodingTask,
    check_answer,
    load_tasks,
    reference_answers,
    score_task,
    wrong_answers,
)
from npu_engine.sandbox import SandboxLimits, run_sandboxed

TASKS = {task.id: task for task in load_tasks()}
REFERENCES = reference_answers()
WRONG = wrong_answers()
QUICK = SandboxLimits(seconds=3)


def test_the_set_has_150_python_tasks_and_every_language() -> None:
    # 150 Python tasks tell two recipes about 3 points of pass@1 apart (issue 17); 43 could not.
    counts = Counter(task.language for task in TASKS.values())
    assert counts["python"] >= 150 and set(counts) == set(LANGUAGES)
    assert min(counts.values()) >= 5
    assert set(REFERENCES) == set(TASKS) and set(WRONG) <= set(TASKS)
    assert len({task.prompt for task in TASKS.values()}) == len(TASKS)


@pytest.mark.parametrize("task_id", sorted(TASKS))
def test_reference_passes_and_an_empty_answer_fails(task_id: str) -> None:
    task = TASKS[task_id]
    run, ok = check_answer(task, REFERENCES[task_id])
    assert ok, (run.stdout, run.stderr)
    _, ok = check_answer(task, "```\n\n```")
    assert not ok


@pytest.mark.parametrize(
    ("task_id", "wrong"),
    [
        ("py-is-prime", "def is_prime(n):\n    return n > 1 and n % 2 == 1"),
        (
            "js-range",
            "function range(a, b, step = 1) {\n"
            "  const r = [];\n  for (let x = a; x < b; x += step) r.push(x);\n  return r;\n}",
        ),
        (
            "sql-top-customers",
            "SELECT c.name, SUM(o.amount) AS total FROM customers c JOIN orders o ON o.customer_id = c.id\n"
            "GROUP BY c.id ORDER BY total LIMIT 3;",
        ),
        ("sh-is-number", 'is_integer() { [[ "$1" =~ [0-9] ]]; }'),
    ],
)
def test_a_nearly_right_answer_fails(task_id: str, wrong: str) -> None:
    _, ok = check_answer(TASKS[task_id], f"Here you go:\n```\n{wrong}\n```\n")
    assert not ok


@pytest.mark.parametrize("task_id", sorted(WRONG))
def test_a_written_mistake_fails_its_tests(task_id: str) -> None:
    run, ok = check_answer(TASKS[task_id], WRONG[task_id])
    assert not ok and not run.timed_out, (run.stdout, run.stderr)


@pytest.mark.parametrize(
    ("task_id", "cheat"),
    [
        ("py-is-prime", "import sys\nsys.exit(0)"),
        ("py-is-prime", "import os\nos._exit(0)"),
        ("js-capitalize", "process.exit(0);"),
        ("sh-reverse-lines", "exit 0"),
        ("sql-no-orders", "SELECT name FROM customers;"),
    ],
)
def test_an_answer_that_stops_the_tests_early_fails(task_id: str, cheat: str) -> None:
    run, ok = check_answer(TASKS[task_id], f"```\n{cheat}\n```")
    assert not ok
    assert not run.timed_out


def test_a_loop_is_killed_at_the_time_limit_with_everything_it_started() -> None:
    marker = "npu-bench-sandbox-test-sleeper"
    answer = (
        f"```bash\nreverse_lines() {{ :; }}\nbash -c 'exec -a {marker} sleep 600' &\nwhile :; do :; done\n```"
    )
    started = time.monotonic()
    run, ok = check_answer(TASKS["sh-reverse-lines"], answer, QUICK)
    assert not ok and run.timed_out
    assert time.monotonic() - started < 10
    time.sleep(0.2)
    left = [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]
    assert left == []


def test_unbounded_allocation_is_stopped_by_the_memory_limit() -> None:
    hog = "```python\nchunks = []\nwhile True:\n    chunks.append(bytearray(50_000_000))\n```"
    started = time.monotonic()
    run, ok = check_answer(TASKS["py-is-prime"], hog, SandboxLimits(seconds=20, memory_bytes=256 << 20))
    assert not ok and not run.timed_out
    assert "MemoryError" in run.stderr
    assert time.monotonic() - started < 15


def test_the_task_cannot_reach_the_network() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        probe = (
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('reached')\n"
        )
        run = run_sandboxed(["python3", "probe.py"], {"probe.py": probe}, QUICK)
    assert run.returncode != 0 and "reached" not in run.stdout
    assert "Network is unreachable" in run.stderr or "Connection refused" in run.stderr


def test_the_task_runs_in_its_own_folder_which_is_removed_after() -> None:
    run = run_sandboxed(["bash", "-c", "pwd; ls"], {"a.txt": "x"}, QUICK)
    folder, listing = run.stdout.splitlines()
    assert listing == "a.txt"
    assert not os.path.exists(folder)


def test_score_task_reports_what_happened() -> None:
    task: CodingTask = TASKS["py-fizzbuzz"]
    good = score_task(task, lambda prompt: REFERENCES[task.id])
    assert good.passed and good.reason == "passed"
    bad = score_task(task, lambda prompt: "```python\ndef fizzbuzz(n):\n    return []\n```")
    assert not bad.passed and "AssertionError" in bad.reason
    asked: list[str] = []

    def listen(prompt: str) -> str:
        asked.append(prompt)
        return ""

    score_task(task, listen)
    assert asked[0].startswith(task.prompt) and "```python" in asked[0]
