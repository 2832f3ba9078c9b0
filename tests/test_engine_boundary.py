"""Nothing outside the engine reaches into it: every attribute read on an engine anywhere in the
package, the scripts or the tests is one of the operations `Engine` declares."""

import ast
from pathlib import Path

from npu_engine.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
DECLARED = {name for name in dir(Engine) if not name.startswith("_")}


def engine_attributes(source: str) -> list[tuple[int, str]]:
    """(line, attribute) for every `engine.X` and `<anything>.engine.X` in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value
        name = (
            owner.id
            if isinstance(owner, ast.Name)
            else owner.attr
            if isinstance(owner, ast.Attribute)
            else ""
        )
        if name in ("engine", "_engine") or name.endswith("_engine"):
            found.append((node.lineno, node.attr))
    return found


def test_the_engine_is_used_only_through_its_declared_operations() -> None:
    files = [
        path
        for folder in ("npu_engine", "tests", "scripts")
        for path in (ROOT / folder).rglob("*.py")
        if path != ROOT / "npu_engine" / "engine.py"
    ]
    reaches = [
        f"{path.relative_to(ROOT)}:{line}: engine.{attribute}"
        for path in files
        for line, attribute in engine_attributes(path.read_text())
        if attribute not in DECLARED
    ]
    assert reaches == []


def test_the_check_sees_a_reach_through() -> None:
    source = "def f(service):\n    service.engine.pool.queued()\n    engine._store.manifests()\n"
    assert [a for _, a in engine_attributes(source) if a not in DECLARED] == ["pool", "_store"]
    assert {"generate", "stream", "plan", "queue_depth", "keep_alive", "unload"} <= DECLARED
