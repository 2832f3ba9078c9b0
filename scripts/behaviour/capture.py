"""Capture what npu-engine does in one source tree, as files that `same_behaviour.sh` diffs:

    routing.md                        `npu-bench routing`: accuracy and confusion matrices
    plan-<inventory>-<profile>.txt    `npu-engine plan` on each models/machines/*.json, 3 profiles
    http.jsonl                        every HTTP exchange of the server tests (see normalise.py)
    logs/                             pytest's output, the raw HTTP records, the time each part
                                      took (not compared)

Usage: capture.py TREE OUT [--lock FILE]. Every command runs with PYTHONPATH=TREE:<this folder>,
so `npu_engine` (checked) and its data packages (see sitecustomize.py) come from TREE, in an
empty NPU_ENGINE_HOME. The server tests load models: they run under `flock FILE`, with hypothesis
seeded (`--hypothesis-seed=0`: the schemathesis fuzz in test_server.py otherwise draws anew each
run; test_http_fuzz.py derandomizes itself) and without the constants hypothesis and schemathesis
harvest from the code under test (see http_plugin.py)."""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from normalise import http_lines, read_raw, routing_report

HERE = Path(__file__).resolve().parent
PROFILES = ("plan", "embedded", "tiny")
SERVER_TESTS = (
    "tests/test_server.py",
    "tests/test_server_edge.py",
    "tests/test_server_errors.py",
    "tests/test_server_work.py",
    "tests/test_connections.py",
    "tests/test_http_fuzz.py",
)
# The capture's own settings, and the user's that would change what the code does.
CLEARED_PREFIXES = ("NPU_ENGINE_", "NPU_BEHAVIOUR_", "OLLAMA_", "HYPOTHESIS_")
CLEARED = {"PYTHONPATH", "XDG_CACHE_HOME", "PYTEST_ADDOPTS"}
PYTEST_SECONDS = re.compile(r" in ([\d.]+)s")  # pytest's summary: "97 passed in 186.08s (0:03:06)"


class CaptureError(Exception):
    """A part of the capture could not run; the message says which and why."""


def environment(tree: Path, scratch: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(CLEARED_PREFIXES) and k not in CLEARED}
    home = scratch / "home"
    home.mkdir()
    env.update(
        PYTHONPATH=f"{tree}{os.pathsep}{HERE}",
        NPU_BEHAVIOUR_TREE=str(tree),
        NPU_ENGINE_HOME=str(home),
        OLLAMA_MODELS=str(scratch / "ollama-models"),
        XDG_CACHE_HOME=str(scratch / "cache"),
        HYPOTHESIS_STORAGE_DIRECTORY=str(scratch / "hypothesis"),  # not in the tree
    )
    return env


def run(command: Sequence[str], tree: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=False)


def check_imports(tree: Path, env: dict[str, str]) -> None:
    """`npu_engine` and its catalog must come from `tree`, not from the venv's editable install."""
    probe = "import npu_engine, npu_engine.data.models as m; print(npu_engine.__file__); print(m.__file__)"
    found = run([sys.executable, "-c", probe], tree, env)
    if found.returncode != 0:
        raise CaptureError(f"cannot import npu_engine from {tree}: {found.stderr.strip()}")
    for path in found.stdout.split():
        if not Path(path).resolve().is_relative_to(tree):
            raise CaptureError(f"npu_engine resolves to {path}, outside {tree}")


def capture_routing(tree: Path, env: dict[str, str], scratch: Path, out: Path) -> None:
    folder = scratch / "routing"
    done = run([sys.executable, "-m", "npu_engine.bench_cli", "routing", "--out", str(folder)], tree, env)
    if done.returncode != 0:
        raise CaptureError(f"npu-bench routing failed ({done.returncode}): {done.stderr.strip()}")
    (out / "routing.md").write_text(routing_report((folder / "routing.md").read_text()))


def capture_plans(tree: Path, env: dict[str, str], out: Path) -> int:
    inventories = sorted((tree / "models" / "machines").glob("*.json"))
    for inventory in inventories:
        for profile in PROFILES:
            command = ["plan", "--inventory", str(inventory.relative_to(tree)), "--profile", profile]
            done = run([sys.executable, "-m", "npu_engine.engine_cli", *command], tree, env)
            text = f"$ npu-engine {' '.join(command)}\n{done.stdout}"
            text += f"--- stderr\n{done.stderr}--- exit {done.returncode}\n"
            (out / f"plan-{inventory.stem}-{profile}.txt").write_text(text)
    return len(inventories) * len(PROFILES)


@dataclass(frozen=True)
class HttpCapture:
    pytest_status: int  # 1: some tests failed (their exchanges are recorded all the same)
    pytest_seconds: float  # as pytest reports it: without the wait for the lock
    exchanges: int


def capture_http(tree: Path, env: dict[str, str], out: Path, lock: Path) -> HttpCapture:
    """Run the server tests with the recorder (http_plugin.py); write http.jsonl."""
    raw = out / "logs" / "http-raw"  # kept: their timestamps explain bursts
    shutil.rmtree(raw, ignore_errors=True)
    pytest = [sys.executable, "-m", "pytest", *SERVER_TESTS, "-m", "slow or not slow"]
    # The schemathesis fuzz in test_server.py draws anew each run unless hypothesis is seeded.
    pytest += ["-p", "no:cacheprovider", "-p", "http_plugin", "--hypothesis-seed=0", "-q", "-rfE"]
    log = out / "logs" / "pytest.log"
    with log.open("w") as output:
        done = subprocess.run(
            ["flock", str(lock), *pytest],
            cwd=tree,
            env={**env, "NPU_BEHAVIOUR_HTTP_DIR": str(raw)},
            stdout=output,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode not in (0, 1):
        raise CaptureError(f"pytest could not run the server tests ({done.returncode}); see {log}")
    lines = http_lines(read_raw(raw), tree)
    (out / "http.jsonl").write_text("".join(line + "\n" for line in lines))
    reported = PYTEST_SECONDS.findall(log.read_text())
    return HttpCapture(done.returncode, float(reported[-1]) if reported else 0.0, len(lines))


def capture(tree: Path, out: Path, lock: Path) -> None:
    tree = tree.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    times: list[str] = []

    def timed(part: str, started: float) -> None:
        times.append(f"{part}: {time.monotonic() - started:.0f} s")
        print(f"  {tree}: {times[-1]}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="npu-behaviour-") as temporary:
        scratch = Path(temporary)
        env = environment(tree, scratch)
        check_imports(tree, env)
        started = time.monotonic()
        capture_routing(tree, env, scratch, out)
        plans = capture_plans(tree, env, out)
        timed(f"routing and {plans} plans", started)
        started = time.monotonic()
        http = capture_http(tree, env, out, lock)
        timed(f"{http.exchanges} HTTP exchanges (pytest {http.pytest_seconds:.0f} s of it)", started)
    (out / "logs" / "times.txt").write_text("\n".join(times) + "\n")
    if http.pytest_status != 0:
        print(f"  warning: some server tests failed in {tree}; see {out}/logs/pytest.log", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("tree", type=Path, help="the source tree to run")
    parser.add_argument("out", type=Path, help="the folder to write the capture into")
    parser.add_argument("--lock", type=Path, default=Path("/tmp/npu-heavy.lock"))
    args = parser.parse_args(argv)
    try:
        capture(args.tree, args.out, args.lock)
    except CaptureError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
