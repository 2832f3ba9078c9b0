"""The soak (`npu_engine.soak`, `npu-bench soak`): about 20 s of 4 concurrent clients, mixed
streamed and non-streamed chats on both protocols, against `npu-engine serve` on SmolLM2 in a child
process; the report's figures must be consistent and no request may get a 5xx."""

import os
from pathlib import Path

import pytest

from npu_engine.bench_cli import main as bench_main
from npu_engine.errors import UserInputError
from npu_engine.manifest import Manifest
from npu_engine.soak import KINDS, TRANSPORT_ERROR, Outcome, SoakReport, SoakSettings, local_server, run_soak
from npu_engine.store import ModelStore


@pytest.fixture
def home(tmp_path: Path, cache_store: ModelStore, smollm_cpu: Manifest) -> Path:
    """A store holding only SmolLM2 (linked from the test cache)."""
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    os.symlink(cache_store.path(smollm_cpu.name), home / "models" / smollm_cpu.name)
    return home


def test_a_short_soak_reports_consistent_figures(home: Path, tmp_path: Path) -> None:
    with local_server("tiny", tmp_path / "server.log", home) as (url, pid):
        report = run_soak(SoakSettings(url=url, seconds=20, clients=4, max_tokens=12, server_pid=pid))
    print("\n" + report.table())
    summary = report.summary()
    assert report.requests > 8 and 15 < report.seconds < 20 + 120  # the last request may run on
    assert sum(summary["statuses"].values()) == report.requests == sum(summary["by_kind"].values())
    assert set(summary["by_kind"]) == set(KINDS)  # every kind was sent
    assert not any(status.startswith("5") for status in summary["statuses"]), summary["statuses"]
    assert summary["statuses"].get("200", 0) == report.requests and report.stream_errors == 0
    assert 0 < summary["p50_ms"] <= summary["p95_ms"] <= summary["p99_ms"]
    # The summary rounds to 0.1 ms; the slowest request bounds the 99th percentile.
    assert round(max(o.seconds for o in report.outcomes) * 1000, 1) >= summary["p99_ms"]
    assert report.rss_before is not None and report.rss_after is not None and report.rss_before > 0
    assert abs(report.requests_per_second - report.requests / report.seconds) < 1e-9
    assert "requests/s" in report.table() and "p50 / p95 / p99" in report.table()


def test_percentiles_and_counts_of_a_report() -> None:
    answered = [Outcome(KINDS[i % 4], "200", i / 100) for i in range(1, 101)]
    outcomes = (*answered, Outcome("openai", TRANSPORT_ERROR, 5.0))
    report = SoakReport("http://127.0.0.1:1", 2, 10.0, outcomes)
    assert report.percentile(0.5) == 0.51 and report.percentile(0.99) == 1.0
    assert report.percentile(1.0) == 5.0 and report.requests_per_second == 10.1
    assert report.statuses() == {"200": 100, TRANSPORT_ERROR: 1}


def test_only_loopback_servers_are_soaked(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UserInputError, match="only a server on this machine"):
        run_soak(SoakSettings(url="http://example.com:11435", seconds=1))
    with pytest.raises(UserInputError, match="at least 1 client"):
        run_soak(SoakSettings(url="http://127.0.0.1:1", clients=0))
    assert bench_main(["soak", "--url", "http://10.1.2.3:11435", "--seconds", "1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: refusing to soak http://10.1.2.3:11435: only a server on this machine (127.0.0.1)"
    )
