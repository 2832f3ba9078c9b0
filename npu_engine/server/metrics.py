"""What `/metrics` reports: requests by route and status, answers and tokens/s per device."""

import threading
from collections import Counter, deque
from collections.abc import Iterable, MutableMapping
from typing import Any

from starlette.routing import BaseRoute, Match, Route

from npu_engine.request import GenerationResult

UNMATCHED = "(unmatched)"  # every path that no route serves, counted as one


def route_label(routes: Iterable[BaseRoute], scope: MutableMapping[str, Any]) -> str:
    """The template of the route among `routes` that serves the request (`/api/show`, not the path
    it was sent to; whatever the method), or UNMATCHED: what requests are counted by, so that the
    paths a client makes up, served or refused, cannot grow the counters."""
    for route in routes:
        if isinstance(route, Route) and route.matches(scope)[0] != Match.NONE:
            return route.path
    return UNMATCHED


class Metrics:
    def __init__(self, window: int = 50) -> None:
        self._requests: Counter[tuple[str, int]] = Counter()  # (route template, status)
        self._answers: Counter[str] = Counter()
        self._tokens: Counter[str] = Counter()
        self._speeds: dict[str, deque[float]] = {}
        self._window = window
        self._guard = threading.Lock()

    def request(self, route: str, status: int) -> None:
        with self._guard:
            self._requests[(route, status)] += 1

    def answered(self, result: GenerationResult) -> None:
        with self._guard:
            self._answers[result.device] += 1
            self._tokens[result.device] += result.metrics.output_tokens
            speeds = self._speeds.setdefault(result.device, deque(maxlen=self._window))
            if result.metrics.tokens_per_second > 0:
                speeds.append(result.metrics.tokens_per_second)

    def snapshot(self) -> dict[str, Any]:
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
