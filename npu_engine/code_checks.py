"""Estimated code quality from real signals only: for a code block of an answer, whether it parses
in its language (Python's `ast`, `node --check`, `bash -n`, SQLite's `EXPLAIN` on an empty
in-memory database), what ruff says of Python where ruff is installed, and the tier's pass@1 as
`npu-bench` measured it on this machine. A check that cannot run here says so (`ok` None): no
signal is ever guessed or scored."""

import ast
import json
import re
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from npu_engine.sandbox import SandboxLimits, SandboxRun, run_sandboxed
from npu_engine.scheduler import Measurement

# A checker reads the block and never runs it; the limits only bound a checker that hangs.
CHECK_LIMITS = SandboxLimits(seconds=10.0, network=True)
# How long SQLite may spend creating the tables a block declares (a CREATE TABLE … AS SELECT
# could loop): past it, the statement is interrupted and the check says so.
SQL_SECONDS = 2.0
MAX_DETAIL = 400

# A code block's language tag, as Markdown answers write it, to the language checked.
LANGUAGES = {
    "python": "python",
    "py": "python",
    "python3": "python",
    "javascript": "javascript",
    "js": "javascript",
    "node": "javascript",
    "mjs": "javascript",
    "cjs": "javascript",
    "bash": "bash",
    "sh": "bash",
    "shell": "bash",
    "zsh": "bash",
    "sql": "sql",
    "sqlite": "sql",
}

Runner = Callable[[Sequence[str], Mapping[str, str]], SandboxRun]


@dataclass(frozen=True)
class CodeCheck:
    """One signal: what was checked (`name`), whether it passed (None: it could not run here),
    and what the checker said."""

    name: str
    ok: bool | None
    detail: str


@dataclass(frozen=True)
class CodeQuality:
    """The signals for one code block: its language as checked (None: a language no check here
    knows), each check, and the tier's measured pass@1 (None: not measured)."""

    language: str | None
    checks: tuple[CodeCheck, ...]
    pass_at_1: float | None
    pass_at_1_source: str


def language_of(tag: str) -> str | None:
    """The language a code block's tag names, among those checked here; None for any other."""
    return LANGUAGES.get(tag.strip().lower())


# The checked languages' names in bench/tasks.
BENCH_LANGUAGES = {"python": "python", "javascript": "javascript", "sql": "sql", "bash": "shell"}


def tier_pass_at_1(
    measurements: Sequence[Measurement],
    tier: str,
    device: str | None = None,
    backend: str | None = None,
    language: str | None = None,
) -> tuple[float | None, str]:
    """The tier's pass@1 on bench/tasks as the device profile recorded it, with where it was
    measured: on the device kind and backend that answered when that was measured, else the
    tier's best elsewhere; for `language` (a checked language) when the profile has it per
    language, else over all tasks; (None, "not measured") when npu-bench never scored it."""
    scored = [m for m in measurements if m.tier == tier and m.pass_at_1 is not None]
    kind = (device or "").split(".")[0].lower()
    exact = [m for m in scored if m.device == kind and backend in (None, m.backend)]
    found = max(exact or scored, key=lambda m: m.pass_at_1 or 0.0, default=None)
    if found is None or found.pass_at_1 is None:
        return None, "not measured"
    where = f"npu-bench on {found.device.upper()} ({found.backend}, {found.mode})"
    tasks = BENCH_LANGUAGES.get(language or "")
    rate = dict(found.pass_at_1_by_language).get(tasks or "")
    if rate is not None:
        return rate, f"{where}, {tasks} tasks"
    return found.pass_at_1, f"{where}, all tasks"


def find_tool(name: str) -> str | None:
    """An executable by name: on PATH, else beside this Python (a venv's bin, not activated)."""
    found = shutil.which(name)
    if found is not None:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else None


class CodeChecker:
    """Runs the checks of a code block. `tools` maps a checker's name (node, bash, ruff) to its
    executable, None when it is not installed; `runner` runs one in a temporary folder with a time
    limit (sandbox.run_sandboxed by default)."""

    def __init__(self, tools: Mapping[str, str | None] | None = None, runner: Runner | None = None) -> None:
        self.tools = dict(tools) if tools is not None else {n: find_tool(n) for n in ("node", "bash", "ruff")}
        self.runner: Runner = runner or (lambda argv, files: run_sandboxed(argv, files, CHECK_LIMITS))

    def check(self, code: str, tag: str) -> tuple[str | None, tuple[CodeCheck, ...]]:
        """The language a block's `tag` names and the checks of `code` in it."""
        language = language_of(tag)
        if language == "python":
            return language, (python_parses(code), self._ruff(code))
        if language == "javascript":
            return language, (self._node(code),)
        if language == "bash":
            return language, (self._bash(code),)
        if language == "sql":
            return language, (self._sql(code),)
        shown = tag.strip() or "untagged code"
        return None, (CodeCheck("parses", None, f"no parser here for {shown}"),)

    def quality(
        self, code: str, tag: str, pass_at_1: Callable[[str | None], tuple[float | None, str]]
    ) -> CodeQuality:
        """The block's checks, with the tier's pass@1 for its language (`pass_at_1` of it)."""
        language, checks = self.check(code, tag)
        return CodeQuality(language, checks, *pass_at_1(language))

    def _run(self, tool: str, args: Sequence[str], file: str, code: str) -> SandboxRun | str:
        """The checker's run, or why it could not run."""
        executable = self.tools.get(tool)
        if executable is None:
            return f"{tool} is not installed"
        try:
            return self.runner([executable, *args, file], {file: code})
        except OSError as error:
            return f"{tool} could not run: {error.strerror or error}"

    def _node(self, code: str) -> CodeCheck:
        # A script or an ES module: `node --check` reads .cjs as the one, .mjs as the other.
        script = self._run("node", ["--check"], "block.cjs", code)
        if isinstance(script, str):
            return CodeCheck("parses (node --check)", None, script)
        if script.ok:
            return CodeCheck("parses (node --check)", True, "parses as a script")
        module = self._run("node", ["--check"], "block.mjs", code)
        if isinstance(module, SandboxRun) and module.ok:
            return CodeCheck("parses (node --check)", True, "parses as an ES module")
        if script.timed_out:
            return _failed("parses (node --check)", script)
        return CodeCheck("parses (node --check)", False, node_error(script.stderr))

    def _sql(self, code: str) -> CodeCheck:
        # SQLite runs what a block creates (a recursive CREATE … AS SELECT can fill memory): in
        # the sandbox's process, under its time and memory limits, never the server's.
        name = "parses (SQLite EXPLAIN)"
        try:
            run = self.runner(
                [sys.executable, "-E", "-s", "check.py"], {"block.sql": code, "check.py": _SQL_CHECK}
            )
        except OSError as error:
            return CodeCheck(name, None, f"the SQL check could not run: {error.strerror or error}")
        if run.timed_out or not run.ok:
            return CodeCheck(name, None, "the SQL check did not finish within its time and memory limits")
        ok, detail = json.loads(run.stdout.strip().splitlines()[-1])
        return CodeCheck(name, ok, detail)

    def _bash(self, code: str) -> CodeCheck:
        run = self._run("bash", ["-n"], "block.sh", code)
        if isinstance(run, str):
            return CodeCheck("parses (bash -n)", None, run)
        return CodeCheck("parses (bash -n)", True, "parses") if run.ok else _failed("parses (bash -n)", run)

    def _ruff(self, code: str) -> CodeCheck:
        # --isolated: ruff's defaults, not whatever configuration the server's folder holds.
        args = ["check", "--isolated", "--no-cache", "--output-format", "json", "--exit-zero"]
        run = self._run("ruff", args, "block.py", code)
        if isinstance(run, str):
            return CodeCheck("ruff", None, run)
        if not run.ok:
            return _failed("ruff", run)
        try:
            found = json.loads(run.stdout or "[]")
        except json.JSONDecodeError:
            return CodeCheck("ruff", None, "ruff's output could not be read")
        if not found:
            return CodeCheck("ruff", True, "no findings")
        said = "; ".join(
            f"line {f.get('location', {}).get('row', '?')}: {f.get('code') or 'error'} {f.get('message', '')}"
            for f in found[:5]
        )
        more = f" (and {len(found) - 5} more)" if len(found) > 5 else ""
        return CodeCheck("ruff", False, _short(f"{len(found)} finding(s): {said}{more}"))


def python_parses(code: str) -> CodeCheck:
    """Whether `code` parses as Python (ast.parse: nothing runs)."""
    try:
        ast.parse(code)
    except SyntaxError as error:
        return CodeCheck("parses (Python ast)", False, f"line {error.lineno}: {error.msg}")
    except ValueError as error:  # a NUL byte
        return CodeCheck("parses (Python ast)", False, str(error))
    return CodeCheck("parses (Python ast)", True, "parses")


def sql_parses(code: str) -> CodeCheck:
    """Whether each statement of `code` compiles in SQLite (EXPLAIN, in an empty in-memory
    database). The tables it creates are created first, so that later statements find them; a
    statement naming a table or column the block never creates still parses, and is said so.
    It runs what the block creates: call it in a sandbox, as CodeChecker does."""
    name = "parses (SQLite EXPLAIN)"
    statements = sql_statements(code)
    if not statements:
        return CodeCheck(name, False, "no SQL statement")
    unknown: list[str] = []
    database = sqlite3.connect(":memory:")
    try:
        database.set_authorizer(_no_attach)
        deadline = time.monotonic() + SQL_SECONDS
        database.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        for index, statement in enumerate(statements, start=1):
            creates = statement.lstrip().split(None, 1)[0].upper() in ("CREATE", "DROP", "ALTER")
            try:
                database.execute(statement if creates else f"EXPLAIN {statement}")
            except sqlite3.Error as error:
                said = str(error)
                if said.startswith("no such "):
                    unknown.append(said)
                    continue
                return CodeCheck(name, False, _short(f"statement {index}: {said}"))
    finally:
        database.close()
    if unknown:
        return CodeCheck(name, True, _short(f"parses; names what the block does not create: {unknown[0]}"))
    return CodeCheck(name, True, f"{len(statements)} statement(s) parse")


def sql_statements(code: str) -> list[str]:
    """The statements of a SQL text, split where SQLite says one is complete (a `;` inside a
    string or a trigger body does not end one); a last statement without `;` counts too."""
    statements: list[str] = []
    pending = ""
    pieces = code.split(";")
    for index, piece in enumerate(pieces):
        pending += piece + (";" if index < len(pieces) - 1 else "")
        if pending.endswith(";") and sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                statements.append(pending.strip())
            pending = ""
    rest = pending.rstrip(";").strip()
    if rest and not all(line.strip().startswith("--") for line in rest.splitlines() if line.strip()):
        statements.append(rest)
    return statements


def node_error(stderr: str) -> str:
    """`node --check`'s complaint in one line: the line of the block and the error, without the
    temporary file's path and node's own stack."""
    lines = stderr.splitlines()
    where = re.search(r":(\d+)$", lines[0].strip()) if lines else None
    error = next((line.strip() for line in lines if re.match(r"\s*\w*Error\b", line)), "")
    said = error or " ".join(line.strip() for line in lines[:3])
    return _short(f"line {where.group(1)}: {said}" if where else said)


def _no_attach(action: int, *_: object) -> int:
    # ATTACH opens (or creates) a file, and a PRAGMA runs as EXPLAIN prepares it (hard_heap_limit,
    # for one): never from a checked block.
    denied = action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH, sqlite3.SQLITE_PRAGMA)
    return sqlite3.SQLITE_DENY if denied else sqlite3.SQLITE_OK


# What the sandbox runs for a SQL block: sql_parses in a process of its own, its answer as JSON.
_SQL_CHECK = """import json
from npu_engine.code_checks import sql_parses

check = sql_parses(open("block.sql", encoding="utf-8").read())
print(json.dumps([check.ok, check.detail]))
"""


def _failed(name: str, run: SandboxRun) -> CodeCheck:
    if run.timed_out:
        return CodeCheck(name, None, f"the checker did not finish in {CHECK_LIMITS.seconds:.0f} s")
    said = (run.stderr or run.stdout).strip()
    # Checkers name the temporary file: the block is what the reader knows.
    lines = [line.replace("block.sh", "block") for line in said.splitlines()]
    return CodeCheck(name, False, _short(" ".join(line.strip() for line in lines if line.strip())))


def _short(text: str) -> str:
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"
