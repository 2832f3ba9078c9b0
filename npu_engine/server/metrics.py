"""What the server counts: requests by route and status, answers and tokens per device. Two views
of the same counts: `/metrics` in Prometheus's text format (from a registry of this Metrics' own,
never prometheus_client's global one, so that two apps in one process count apart) and
`/metrics.json`, the snapshot the Code Mode page reads."""

import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram as PromHistogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Match, Route

from npu_engine.request import GenerationResult

UNMATCHED = "(unmatched)"  # every path that no route serves, counted as one
# Seconds: a request may be a health check (milliseconds) or a long generation (minutes).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
FIRST_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def route_label(routes: Iterable[BaseRoute], scope: MutableMapping[str, Any]) -> str:
    """The template of the route among `routes` that serves the request (`/api/show`, not the path
    it was sent to; whatever the method), or UNMATCHED: what requests are counted by, so that the
    paths a client makes up, served or refused, cannot grow the counters."""
    for route in routes:
        if isinstance(route, Route) and route.matches(scope)[0] != Match.NONE:
            return route.path
    return UNMATCHED


@dataclass(frozen=True)
class Loaded:
    """A loaded pipeline, as /metrics, /metrics.json and /api/ps name it."""

    model: str
    device: str
    decoding: str
    backend: str


class EngineGauges(Collector):
    """The engine's state, read when Prometheus scrapes (so it is never stale): the requests queued
    or generating, and one series per loaded pipeline."""

    def __init__(self, queue_depth: Callable[[], int], loaded: Callable[[], list[Loaded]]) -> None:
        self.queue_depth = queue_depth
        self.loaded = loaded

    def collect(self) -> Iterator[Metric]:
        depth = self.queue_depth()
        yield GaugeMetricFamily("npu_engine_queue_depth", "Requests queued or generating.", depth)
        pipelines = GaugeMetricFamily(
            "npu_engine_loaded_pipeline",
            "1 for each loaded pipeline: converted model, device, decoding mode and backend.",
            labels=("model", "device", "decoding", "backend"),
        )
        for one in self.loaded():
            pipelines.add_metric((one.model, one.device, one.decoding, one.backend), 1)
        yield pipelines


class Metrics:
    def __init__(self, window: int = 50) -> None:
        self.registry = CollectorRegistry()
        self._requests: Counter[tuple[str, int]] = Counter()  # (route template, status)
        self._answers: Counter[str] = Counter()
        self._tokens: Counter[str] = Counter()
        self._speeds: dict[str, deque[float]] = {}
        self._window = window
        self._guard = threading.Lock()
        # Labels are route templates, status codes, tiers, devices and backends: sets the server
        # defines, never text a client sends.
        self._http_requests = PromCounter(
            "npu_engine_http_requests",
            "HTTP requests answered, by route template and status (refusals by the guard included).",
            ("route", "status"),
            registry=self.registry,
        )
        self._http_seconds = PromHistogram(
            "npu_engine_http_request_duration_seconds",
            "Seconds from a request's arrival to the end of its response (of the whole stream).",
            ("route",),
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        answer_labels = ("device", "tier", "backend")
        self._answered = PromCounter(
            "npu_engine_answers", "Generations finished.", answer_labels, registry=self.registry
        )
        self._output_tokens = PromCounter(
            "npu_engine_output_tokens", "Tokens generated.", answer_labels, registry=self.registry
        )
        self._first_token = PromHistogram(
            "npu_engine_first_token_seconds",
            "Seconds to an answer's first token (model load included).",
            answer_labels,
            buckets=FIRST_TOKEN_BUCKETS,
            registry=self.registry,
        )

    def watch(self, gauges: EngineGauges) -> None:
        """Report the engine's state at every scrape too."""
        self.registry.register(gauges)

    def request(self, route: str, status: int, seconds: float) -> None:
        with self._guard:
            self._requests[(route, status)] += 1
        self._http_requests.labels(route, str(status)).inc()
        self._http_seconds.labels(route).observe(seconds)

    def answered(self, result: GenerationResult) -> None:
        with self._guard:
            self._answers[result.device] += 1
            self._tokens[result.device] += result.metrics.output_tokens
            speeds = self._speeds.setdefault(result.device, deque(maxlen=self._window))
            if result.metrics.tokens_per_second > 0:
                speeds.append(result.metrics.tokens_per_second)
        labels = (result.device, result.tier, result.backend)
        self._answered.labels(*labels).inc()
        self._output_tokens.labels(*labels).inc(result.metrics.output_tokens)
        if result.metrics.output_tokens > 0:  # a cancelled or empty answer has no first token
            self._first_token.labels(*labels).observe(result.metrics.ttft_ms / 1000)

    def exposition(self) -> bytes:
        """Everything counted, in Prometheus's text format (serve as CONTENT_TYPE_LATEST)."""
        return generate_latest(self.registry)

    def snapshot(self) -> dict[str, Any]:
        """The counts as /metrics.json has always given them."""
        with self._guard:
            return {
                "requests": [
                    {"path": path, "status": status, "count": count}
                    for (path, status), count in sorted(self._requests.items())
                ],
                "requests_total": sum(self._requests.values()),
                "devices": {
                    device: {
                        "answers": self._answers[device],
                        "output_tokens": self._tokens[device],
                        "tokens_per_second_recent": (
                            sum(self._speeds[device]) / len(self._speeds[device])
                            if self._speeds[device]
                            else 0.0
                        ),
                    }
                    for device in sorted(self._answers)
                },
            }
