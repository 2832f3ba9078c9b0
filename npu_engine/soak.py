"""A soak of a running `npu-engine serve`: N concurrent clients send a mix of streamed and
non-streamed chats on both protocols (OpenAI and Ollama) for a bounded time and request count,
and the report gives requests/s, latency percentiles, status counts and the server's RSS before
and after. `run_soak` starts nothing: it drives the URL it is given (loopback only).
`local_server` is for callers that want a server of their own to soak; `soak` is `npu-bench soak`,
either of the two."""

import asyncio
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from npu_engine.bench_report import results_folder
from npu_engine.errors import NpuEngineError, UserInputError
from npu_engine.files import write_text_atomically
from npu_engine.server.config import is_loopback

KINDS = ("openai", "openai-stream", "ollama", "ollama-stream")
PROMPTS = (
    "Write a Python function that reverses a string.",
    "What does `git rebase` do?",
    "Say hello.",
    "Explain a hash map in one sentence.",
)
TRANSPORT_ERROR = "transport-error"


@dataclass(frozen=True)
class SoakSettings:
    """What to soak and how hard: `clients` concurrent clients for at most `seconds` and at most
    `max_requests` requests; `server_pid` (optional) is read for RSS."""

    url: str
    seconds: float = 300.0
    clients: int = 4
    max_requests: int = 100_000
    model: str = "code"
    max_tokens: int = 32
    server_pid: int | None = None
    request_timeout: float = 120.0
    settle_seconds: float = 2.0  # after the last request, before RSS is read again


@dataclass(frozen=True)
class Outcome:
    kind: str
    status: str  # the HTTP status, or TRANSPORT_ERROR
    seconds: float
    stream_error: bool = False  # a 200 stream that carried an error event or never finished


@dataclass(frozen=True)
class SoakReport:
    url: str
    clients: int
    seconds: float
    outcomes: tuple[Outcome, ...] = field(repr=False)
    rss_before: int | None = None
    rss_after: int | None = None

    @property
    def requests(self) -> int:
        return len(self.outcomes)

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def statuses(self) -> dict[str, int]:
        return dict(sorted(Counter(o.status for o in self.outcomes).items()))

    def by_kind(self) -> dict[str, int]:
        return dict(sorted(Counter(o.kind for o in self.outcomes).items()))

    @property
    def stream_errors(self) -> int:
        return sum(o.stream_error for o in self.outcomes)

    def percentile(self, q: float) -> float:
        """Latency (seconds) at quantile q in [0, 1] over every request, nearest-rank."""
        ordered = sorted(o.seconds for o in self.outcomes)
        if not ordered:
            return 0.0
        rank = math.ceil(q * len(ordered))  # nearest rank: the smallest value with q of all at or below it
        return ordered[min(len(ordered), max(rank, 1)) - 1]

    def summary(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "clients": self.clients,
            "seconds": round(self.seconds, 2),
            "requests": self.requests,
            "requests_per_second": round(self.requests_per_second, 3),
            "p50_ms": round(self.percentile(0.50) * 1000, 1),
            "p95_ms": round(self.percentile(0.95) * 1000, 1),
            "p99_ms": round(self.percentile(0.99) * 1000, 1),
            "statuses": self.statuses(),
            "by_kind": self.by_kind(),
            "stream_errors": self.stream_errors,
            "rss_before_mb": _mb(self.rss_before),
            "rss_after_mb": _mb(self.rss_after),
        }

    def to_json(self) -> str:
        return json.dumps({**self.summary(), "outcomes": [asdict(o) for o in self.outcomes]}, indent=1)

    def table(self) -> str:
        """The report as a Markdown table."""
        s = self.summary()
        rss = (
            f"{s['rss_before_mb']} → {s['rss_after_mb']} MB"
            if self.rss_before is not None and self.rss_after is not None
            else "not read"
        )
        rows = [
            ("clients", str(self.clients)),
            ("duration", f"{self.seconds:.0f} s"),
            ("requests", f"{self.requests} ({', '.join(f'{k} {n}' for k, n in s['by_kind'].items())})"),
            ("requests/s", f"{self.requests_per_second:.2f}"),
            ("latency p50 / p95 / p99", f"{s['p50_ms']:.0f} / {s['p95_ms']:.0f} / {s['p99_ms']:.0f} ms"),
            ("statuses", ", ".join(f"{k}: {n}" for k, n in s["statuses"].items())),
            ("streams that carried an error", str(self.stream_errors)),
            ("server RSS before → after", rss),
        ]
        return "\n".join(["| soak | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def read_rss(pid: int) -> int:
    """Resident set size of a process in bytes, from /proc/<pid>/status."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError as error:
        raise UserInputError(f"cannot read the memory of process {pid}: {error.strerror}") from None
    raise UserInputError(f"process {pid} reports no resident memory (a zombie?)")


def check_loopback(url: str) -> str:
    """The URL without a trailing slash, if it names this machine; the soak drives nothing else."""
    try:
        host = httpx.URL(url).host
    except httpx.InvalidURL:
        raise UserInputError(f"invalid URL {url!r}") from None
    if not host or not is_loopback(host):
        raise UserInputError(f"refusing to soak {url}: only a server on this machine (127.0.0.1)")
    return url.rstrip("/")


def _request(kind: str, prompt: str, settings: SoakSettings) -> tuple[str, dict[str, Any]]:
    messages = [{"role": "user", "content": prompt}]
    stream = kind.endswith("-stream")
    if kind.startswith("openai"):
        body = {"model": settings.model, "messages": messages, "max_tokens": settings.max_tokens}
        return "/v1/chat/completions", {**body, "stream": stream}
    options = {"num_predict": settings.max_tokens}
    return "/api/chat", {"model": settings.model, "messages": messages, "options": options, "stream": stream}


def _stream_finished(kind: str, lines: list[str]) -> bool:
    """Whether a streamed answer ended as it should, without an error event."""
    if kind.startswith("openai"):
        events = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
        return bool(events) and events[-1] == "[DONE]" and not any('"error"' in e for e in events[:-1])
    try:
        parsed = [json.loads(line) for line in lines if line.strip()]
    except json.JSONDecodeError:
        return False
    return bool(parsed) and parsed[-1].get("done") is True and not any("error" in p for p in parsed)


async def _one(
    client: httpx.AsyncClient, base: str, kind: str, prompt: str, settings: SoakSettings
) -> Outcome:
    path, body = _request(kind, prompt, settings)
    started = time.monotonic()
    try:
        if body["stream"]:
            async with client.stream("POST", base + path, json=body) as response:
                lines = [line async for line in response.aiter_lines()]
            broken = response.status_code == 200 and not _stream_finished(kind, lines)
        else:
            response = await client.post(base + path, json=body)
            broken = False
    except httpx.HTTPError:
        return Outcome(kind, TRANSPORT_ERROR, time.monotonic() - started)
    return Outcome(kind, str(response.status_code), time.monotonic() - started, broken)


async def _drive(settings: SoakSettings, base: str) -> tuple[list[Outcome], float]:
    outcomes: list[Outcome] = []
    started = time.monotonic()
    deadline = started + settings.seconds
    issued = 0

    async def client_loop(index: int, client: httpx.AsyncClient) -> None:
        nonlocal issued
        turn = index
        while time.monotonic() < deadline and issued < settings.max_requests:
            issued += 1  # one event loop: nothing runs between the check and the count
            kind = KINDS[turn % len(KINDS)]
            prompt = PROMPTS[(turn // len(KINDS) + index) % len(PROMPTS)]
            outcomes.append(await _one(client, base, kind, prompt, settings))
            turn += 1

    limits = httpx.Limits(max_connections=settings.clients, max_keepalive_connections=settings.clients)
    async with httpx.AsyncClient(timeout=settings.request_timeout, limits=limits, trust_env=False) as client:
        await asyncio.gather(*(client_loop(i, client) for i in range(settings.clients)))
    return outcomes, time.monotonic() - started


async def _warm_up(settings: SoakSettings, base: str) -> None:
    """One answer of each kind, so that loading the model counts neither as latency nor as growth
    of the server's memory."""
    async with httpx.AsyncClient(timeout=settings.request_timeout, trust_env=False) as client:
        for kind in KINDS:
            warm = await _one(client, base, kind, PROMPTS[0], settings)
            if warm.status != "200" or warm.stream_error:
                raise NpuEngineError(f"the server at {base} did not answer the warm-up ({warm.status})")


def run_soak(settings: SoakSettings) -> SoakReport:
    """Drive the server at `settings.url` and report what it did."""
    if settings.clients < 1 or settings.seconds <= 0 or settings.max_requests < 1:
        raise UserInputError("a soak needs at least 1 client, 1 request and a positive duration")
    base = check_loopback(settings.url)
    asyncio.run(_warm_up(settings, base))
    pid = settings.server_pid
    rss_before = read_rss(pid) if pid is not None else None
    outcomes, seconds = asyncio.run(_drive(settings, base))
    rss_after: int | None = None
    if pid is not None:
        time.sleep(settings.settle_seconds)
        rss_after = read_rss(pid)
    return SoakReport(base, settings.clients, seconds, tuple(outcomes), rss_before, rss_after)


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def local_server(
    profile: str, log: Path, home: Path | None = None, start_timeout: float = 120.0
) -> Iterator[tuple[str, int]]:
    """`npu-engine serve` in a child process on a free loopback port, its stderr in `log`; yields
    (url, pid) once /health answers, and stops the server on the way out."""
    port = free_port()
    env = {**os.environ, **({"NPU_ENGINE_HOME": str(home)} if home else {})}
    command = [sys.executable, "-m", "npu_engine.engine_cli", "serve", "--profile", profile]
    with log.open("w") as stderr:
        process = subprocess.Popen([*command, "--port", str(port)], env=env, stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while not _healthy(url):
            if process.poll() is not None:
                said = log.read_text(errors="replace").strip().splitlines()
                raise NpuEngineError(f"the server stopped at start-up: {said[-1] if said else '?'}")
            if time.monotonic() > deadline:
                raise NpuEngineError(f"the server did not answer /health within {start_timeout:.0f} s")
            time.sleep(0.2)
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def soak(
    settings: SoakSettings,
    *,
    say: Callable[[str], None],
    serve_profile: str | None = None,
    out: Path | None = None,
) -> SoakReport:
    """Soak the server at `settings.url`, or with `serve_profile` one started for the soak on that
    catalog profile (its log in a new npu-bench-results folder); the report also goes to `out` as
    JSON when given."""
    if serve_profile is not None:
        log = results_folder(None) / "soak-server.log"
        say(f"soak: starting npu-engine serve --profile {serve_profile} (its log: {log})")
        with local_server(serve_profile, log) as (url, pid):
            report = run_soak(replace(settings, url=url, server_pid=pid))
    else:
        report = run_soak(settings)
    if out:
        write_text_atomically(out, report.to_json())
    return report
