"""What `/metrics` reports: requests by path and status, answers and tokens/s per device."""

import threading
from collections import Counter, deque
from typing import Any

from npu_engine.engine import GenerationResult


class Metrics:
    def __init__(self, window: int = 50) -> None:
        self._requests: Counter[tuple[str, int]] = Counter()
        self._answers: Counter[str] = Counter()
        self._tokens: Counter[str] = Counter()
        self._speeds: dict[str, deque[float]] = {}
        self._window = window
        self._guard = threading.Lock()

    def request(self, path: str, status: int) -> None:
        with self._guard:
            self._requests[(path, status)] += 1

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
