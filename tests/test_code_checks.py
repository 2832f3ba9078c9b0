"""The code checks behind the page's estimated quality: each parser and linter for real, on blocks
that parse and blocks that do not; a checker that is missing or hangs says so, never guesses."""

from collections.abc import Mapping, Sequence

import pytest

from npu_engine.code_checks import (
    CodeChecker,
    language_of,
    node_error,
    sql_parses,
    sql_statements,
    tier_pass_at_1,
)
from npu_engine.sandbox import SandboxRun
from npu_engine.scheduler import Measurement


@pytest.fixture(scope="module")
def checker() -> CodeChecker:
    found = CodeChecker()
    assert found.tools["node"] and found.tools["bash"] and found.tools["ruff"], found.tools
    return found


@pytest.mark.parametrize(
    ("tag", "code", "name", "ok", "said"),
    [
        ("python", "def f(x):\n    return x + 1\n", "parses (Python ast)", True, "parses"),
        ("py", "def f(x)\n    return x\n", "parses (Python ast)", False, "line 1"),
        ("js", "const f = (x) => x + 1;\n", "parses (node --check)", True, "as a script"),
        (
            "javascript",
            "import fs from 'fs';\nexport const a = 1;\n",
            "parses (node --check)",
            True,
            "module",
        ),
        ("js", "function f( {\n}\n", "parses (node --check)", False, "SyntaxError"),
        ("bash", 'for f in *; do echo "$f"; done\n', "parses (bash -n)", True, "parses"),
        ("sh", "if true; then\n  echo hi\n", "parses (bash -n)", False, "syntax error"),
        ("sql", "SELECT 1;", "parses (SQLite EXPLAIN)", True, "1 statement(s)"),
        ("sql", "SELEC name FROM users;", "parses (SQLite EXPLAIN)", False, 'near "SELEC"'),
    ],
)
def test_each_language_is_parsed_by_its_own_parser(
    checker: CodeChecker, tag: str, code: str, name: str, ok: bool, said: str
) -> None:
    language, checks = checker.check(code, tag)
    assert language == language_of(tag)
    first = checks[0]
    assert (first.name, first.ok) == (name, ok), first
    assert said in first.detail, first.detail
    assert "/tmp" not in first.detail  # the temporary file is nobody's business


def test_ruff_says_what_it_finds(checker: CodeChecker) -> None:
    _, (_, clean) = checker.check("def f(x):\n    return x\n", "python")
    assert clean.name == "ruff" and clean.ok is True and clean.detail == "no findings"
    _, (_, found) = checker.check("import os\n\n\ndef f():\n    return undefined_name\n", "python")
    assert found.ok is False and "F401" in found.detail and "F821" in found.detail


def test_sql_tables_the_block_creates_are_known_and_others_still_parse() -> None:
    created = sql_parses("CREATE TABLE users(id INTEGER, name TEXT);\nSELECT name FROM users WHERE id = 1;")
    assert created.ok is True and created.detail == "2 statement(s) parse"
    unknown = sql_parses("SELECT name FROM users WHERE id = 1")
    assert unknown.ok is True and "no such table: users" in unknown.detail
    assert sql_parses("-- nothing\n").ok is False
    # ATTACH would open a file, a PRAGMA would run while EXPLAIN prepares it: refused.
    assert sql_parses("ATTACH DATABASE '/tmp/x.db' AS x; CREATE TABLE x.t(a);").ok is False
    assert sql_parses("PRAGMA hard_heap_limit=1;").ok is False


def test_a_sql_block_that_fills_memory_is_stopped_in_the_sandbox(checker: CodeChecker) -> None:
    """The SQL check runs in the sandbox's process: a block whose CREATE … AS SELECT grows without
    bound hits its memory or time limit there, and the server's process is untouched."""
    hog = (
        "CREATE TABLE t AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
        "SELECT zeroblob(1000000) AS b FROM c;"
    )
    _, (check,) = checker.check(hog, "sql")
    assert check.ok is None and "did not finish within its time and memory limits" in check.detail
    _, (fine,) = checker.check("SELECT 1;", "sql")
    assert fine.ok is True


def test_sql_statements_split_where_sqlite_says_they_end() -> None:
    text = "INSERT INTO t VALUES ('a;b');\nSELECT 1;\nSELECT 2"
    assert sql_statements(text) == ["INSERT INTO t VALUES ('a;b');", "SELECT 1;", "SELECT 2"]


def test_a_language_without_a_checker_says_so(checker: CodeChecker) -> None:
    language, checks = checker.check("fn main() {}", "rust")
    assert language is None and checks[0].ok is None and "rust" in checks[0].detail


def test_a_missing_checker_is_not_run_and_says_so() -> None:
    def never(argv: Sequence[str], files: Mapping[str, str]) -> SandboxRun:
        raise AssertionError("no checker should run")

    missing = CodeChecker({"node": None, "bash": None, "ruff": None}, never)
    _, (parsed, ruff) = missing.check("x = 1\n", "python")
    assert parsed.ok is True  # Python's own parser is always here
    assert ruff.ok is None and ruff.detail == "ruff is not installed"
    _, (node,) = missing.check("let x = 1;", "js")
    assert node.ok is None and "node is not installed" in node.detail


def test_a_checker_that_hangs_is_reported_unfinished() -> None:
    def hung(argv: Sequence[str], files: Mapping[str, str]) -> SandboxRun:
        return SandboxRun(-9, "", "", 10.0, timed_out=True)

    _, (check,) = CodeChecker({"bash": "/bin/bash"}, hung).check("echo hi", "bash")
    assert check.ok is None and "did not finish" in check.detail


def test_node_errors_are_one_line_without_the_temporary_path() -> None:
    stderr = (
        "/tmp/npu-bench-task-x/block.cjs:2\n}\n^\n\nSyntaxError: Unexpected end of input\n"
        "    at wrapSafe (node:internal/modules/cjs/loader:1464:18)\n"
    )
    assert node_error(stderr) == "line 2: SyntaxError: Unexpected end of input"


def test_pass_at_1_is_the_measured_one_or_not_measured() -> None:
    measured = [
        Measurement(
            "code",
            "cpu",
            20.0,
            300.0,
            backend="openvino",
            pass_at_1=0.5,
            pass_at_1_by_language=(("python", 0.45), ("shell", 0.8)),
        ),
        Measurement("code", "cpu", 25.0, 250.0, backend="llama.cpp", pass_at_1=0.55),
        Measurement("code", "gpu", 40.0, 150.0, pass_at_1=0.6),
        Measurement("fast", "cpu", 60.0, 90.0),
    ]
    assert tier_pass_at_1(measured, "code", "CPU", "openvino") == (
        0.5,
        "npu-bench on CPU (openvino, plain), all tasks",
    )
    # Per language where the profile has it (bash blocks are bench/tasks' shell tasks).
    on_cpu = tier_pass_at_1(measured, "code", "CPU", "openvino", "python")
    assert on_cpu == (0.45, "npu-bench on CPU (openvino, plain), python tasks")
    assert tier_pass_at_1(measured, "code", "CPU", "openvino", "bash")[0] == 0.8
    assert tier_pass_at_1(measured, "code", "CPU", "openvino", "sql")[0] == 0.5  # not per language: all
    assert tier_pass_at_1(measured, "code", "GPU.0", None)[0] == 0.6
    assert tier_pass_at_1(measured, "code", "NPU", "openvino")[0] == 0.6  # the tier's best elsewhere
    assert tier_pass_at_1(measured, "fast", "CPU", "openvino") == (None, "not measured")
    assert tier_pass_at_1([], "code") == (None, "not measured")
