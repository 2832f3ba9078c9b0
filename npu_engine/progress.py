"""Progress reporting for long steps: rich bars on stderr, or nothing with `--quiet`."""

import io
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, redirect_stderr, redirect_stdout
from typing import Protocol

Advance = Callable[[int], None]


class Reporter(Protocol):
    def step(self, description: str, total: int | None = None) -> AbstractContextManager[Advance]:
        """A long step; the context yields a function to call with units done (bytes, items)."""
        ...

    def info(self, message: str) -> None:
        """A line for the user, on stderr."""
        ...


@contextmanager
def swallowed() -> Iterator[None]:
    """What the libraries print themselves meanwhile (NNCF's tables and bars, transformers' tqdm,
    torch's TracerWarnings) goes nowhere; their failures still arrive as exceptions."""
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        yield


class SilentReporter:
    """Reports nothing: for `--quiet`, for tests and for library callers.

    During a step it also swallows what the libraries print themselves (see `swallowed`).
    """

    @contextmanager
    def step(self, description: str, total: int | None = None) -> Iterator[Advance]:
        with swallowed():
            yield lambda _done: None

    def info(self, message: str) -> None:
        return None


class RichReporter:
    """A rich progress bar (or spinner, when the total is unknown) per step, on stderr; one line
    per finished step when stderr is not a terminal (a log file gets no bars to wrap). What the
    libraries print during a step is swallowed either way, unless `verbose`."""

    def __init__(self, verbose: bool = False) -> None:
        from rich.console import Console

        self._console = Console(file=sys.stderr)
        # --verbose: what the libraries print during a step is shown as they print it.
        self._quieted = (lambda: nullcontext()) if verbose else swallowed

    @contextmanager
    def step(self, description: str, total: int | None = None) -> Iterator[Advance]:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        if not self._console.is_terminal:
            started = time.monotonic()
            with self._quieted():
                yield lambda _done: None
            self.info(f"  {description}: {time.monotonic() - started:.0f}s")
            return
        columns = [SpinnerColumn(), TextColumn("{task.description}")]
        if total is not None:
            columns += [BarColumn(), DownloadColumn()]
        columns.append(TimeElapsedColumn())
        progress = Progress(
            *columns, console=self._console, transient=False, redirect_stdout=False, redirect_stderr=False
        )
        with progress as bar, self._quieted():
            task = bar.add_task(description, total=total)
            yield lambda done: bar.advance(task, done)
            if total is None:
                bar.update(task, total=1, completed=1)

    def info(self, message: str) -> None:
        self._console.print(message, highlight=False, markup=False)
