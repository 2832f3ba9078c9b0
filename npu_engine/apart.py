"""A step run in a fresh interpreter of its own, so that what it takes is given back when it ends:
the libraries it imports (transformers and torch hold about 0.45 GB once loaded) and the memory
it frees but its allocator keeps would otherwise stay under the rest of a conversion's peak."""

import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from npu_engine.errors import ConversionError

Result = TypeVar("Result")
PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent ends


def run_apart(step: Callable[..., Result], *args: object) -> Result:
    """`step(*args)` in a new process whose own output (the libraries' warnings and bars) goes
    nowhere; its result, or the exception it raised, arrives here. A process that dies (the
    system out of memory) is a ConversionError."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter, not a copy of this one
    with ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_as_a_child) as pool:
        try:
            return pool.submit(step, *args).result()
        except BrokenProcessPool as error:
            raise ConversionError(
                f"{step.__name__.replace('_', ' ')} ended abruptly in its own process "
                f"(out of memory or killed, or it could not start): {error}"
            ) from error


def _as_a_child() -> None:
    """In the new process, before its step: it ends with its parent (Linux; a converter killed
    with -9 must not leave a child writing into a staging folder the next run cleans), and its own
    output goes nowhere."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    with open(os.devnull, "w", encoding="utf-8") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
