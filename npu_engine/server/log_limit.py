"""A logging filter that lets through at most N lines a second of each kind, and says how many it
dropped. A flood of the same failure (a full descriptor table makes asyncio log every refused
accept, with a traceback) must not fill the disk or drown the one line that matters."""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Window:
    started: float
    passed: int = 0
    dropped: int = 0


class RateLimitFilter(logging.Filter):
    """At most `per_second` records a second per (logger, message template); past that, records are
    dropped and counted, and the next record of that kind let through says how many were dropped.

    Put it on a handler (not a logger) so that it sees records propagated from every logger."""

    def __init__(
        self, per_second: int = 10, clock: Callable[[], float] = time.monotonic, max_kinds: int = 1024
    ) -> None:
        super().__init__()
        if per_second < 1:
            raise ValueError("per_second must be at least 1")
        self.per_second = per_second
        self.max_kinds = max_kinds
        self._clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}
        self._lock = threading.Lock()  # uvicorn logs from the event loop, the engine from its threads
        self.dropped_total = 0

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self._clock()
        with self._lock:
            window = self._windows.get(key)
            if window is None:
                if len(self._windows) >= self.max_kinds:  # the table of kinds is bounded too
                    self._windows.clear()
                window = self._windows[key] = _Window(now)
            if now - window.started >= 1.0:
                if window.dropped:
                    _note_dropped(record, window.dropped, now - window.started)
                window.started, window.passed, window.dropped = now, 0, 0
            if window.passed >= self.per_second:
                window.dropped += 1
                self.dropped_total += 1
                return False
            window.passed += 1
            return True


def _note_dropped(record: logging.LogRecord, count: int, seconds: float) -> None:
    record.msg = f"{record.getMessage()} [{count} more like this dropped in the last {seconds:.0f} s]"
    record.args = None


def limit_log_rate(logger: logging.Logger, per_second: int = 10) -> RateLimitFilter:
    """Add one RateLimitFilter to every handler of `logger` (by default the root logger's, where
    uvicorn's and asyncio's records end up when uvicorn is not given a log config of its own)."""
    limiter = RateLimitFilter(per_second)
    for handler in logger.handlers:
        handler.addFilter(limiter)
    return limiter
