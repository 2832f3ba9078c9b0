"""A step run in a fresh interpreter of its own, so that what it takes is given back when it ends:
the libraries it imports (transformers and torch hold about 0.45 GB once loaded) and the memory
it frees but its allocator keeps would otherwise stay under the rest of a conversion's peak."""

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from npu_engine.errors import ConversionError

Result = TypeVar("Result")


def run_apart(step: Callable[..., Result], *args: object) -> Result:
    """`step(*args)` in a new process whose own output (the libraries' warnings and bars) goes
    nowhere; its result, or the exception it raised, arrives here. A process that dies (the
    system out of memory) is a ConversionError."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter, not a copy of this one
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        try:
            return pool.submit(_silenced, step, *args).result()
        except BrokenProcessPool as error:
            raise ConversionError(
                f"{step.__name__.replace('_', ' ')} ended abruptly in its own process "
                f"(out of memory or killed, or it could not start): {error}"
            ) from error


def _silenced(step: Callable[..., Result], *args: object) -> Result:
    with open(os.devnull, "w", encoding="utf-8") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
    return step(*args)
