"""Compare two captures (capture.py): `diff -u` of each artefact, and a one-line verdict.

Usage: compare.py BASE HEAD. Exit 0 only when every artefact is identical; 1 when they differ.
http.jsonl is diffed as readable text: each exchange pretty-printed under a `# test` line, which
`diff -F` names in each hunk's header."""

import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

NOT_COMPARED = {"logs"}


def artefacts(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name not in NOT_COMPARED}


def readable(jsonl: Path, out: Path) -> Path:
    """http.jsonl with each exchange as indented JSON under a `# test method path` line."""
    with jsonl.open(encoding="ascii") as lines, out.open("w", encoding="utf-8") as text:
        for line in lines:
            record = json.loads(line)
            test = record.pop("test")
            text.write(f"# {test} {record['method']} {record['path']}\n")
            text.write(json.dumps(record, indent=1, ensure_ascii=True) + "\n")
    return out


def tests_that_differ(base: Path, head: Path) -> list[str]:
    """The tests whose exchanges differ between two http.jsonl files (diff's hunk headers cut the
    test's name at 40 characters)."""
    sides: list[dict[str, list[str]]] = []
    for jsonl in (base, head):
        by_test: dict[str, list[str]] = {}
        with jsonl.open(encoding="ascii") as lines:
            for line in lines:
                by_test.setdefault(json.loads(line)["test"], []).append(line)
        sides.append(by_test)
    names = list(dict.fromkeys([*sides[0], *sides[1]]))
    return [name for name in names if sides[0].get(name) != sides[1].get(name)]


def diff(base: Path, head: Path, label: str) -> str:
    command = ["diff", "-u", "-F", "^# ", "--label", f"base/{label}", "--label", f"head/{label}"]
    return subprocess.run([*command, str(base), str(head)], capture_output=True, text=True).stdout


def compare(base: Path, head: Path) -> int:
    names = artefacts(base) | artefacts(head)
    differing = sorted(name for name in names if not (base / name).is_file() or not (head / name).is_file())
    with tempfile.TemporaryDirectory(prefix="npu-behaviour-diff-") as temporary:
        for name in sorted(names - set(differing)):
            a, b = base / name, head / name
            if a.read_bytes() == b.read_bytes():
                continue
            differing.append(name)
            if name == "http.jsonl":
                tests = tests_that_differ(a, b)
                a = readable(a, Path(temporary) / "base.txt")
                b = readable(b, Path(temporary) / "head.txt")
            sys.stdout.write(diff(a, b, name))
            if name == "http.jsonl":
                print(f"HTTP exchanges differ in {len(tests)} tests:", *tests, sep="\n  ")
    if differing:
        for name in differing:
            if not (base / name).is_file() or not (head / name).is_file():
                print(f"only in {'head' if (head / name).is_file() else 'base'}: {name}")
        print(f"DIFFERENT: {', '.join(sorted(differing))}")
        return 1
    plans = sum(name.startswith("plan-") for name in names)
    with (head / "http.jsonl").open(encoding="ascii") as lines:
        exchanges = sum(1 for _ in lines)
    print(f"identical: routing, {plans} plans, {exchanges} HTTP exchanges")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 2:
        print("usage: compare.py BASE_CAPTURE HEAD_CAPTURE", file=sys.stderr)
        return 2
    return compare(Path(args[0]), Path(args[1]))


if __name__ == "__main__":
    sys.exit(main())
