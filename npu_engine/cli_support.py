"""What every console script shares: user errors become one line on stderr and an exit code."""

import os
import sys
from collections.abc import Callable

from npu_engine.errors import NpuEngineError


def run_cli(body: Callable[[], int]) -> int:
    """Run a CLI body; an NpuEngineError prints `npu-engine: error: ...` and returns its exit code."""
    try:
        return body()
    except NpuEngineError as error:
        message = " ".join(str(error).split())
        print(f"error: {message}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader left (`| head`): nothing more to say, and nothing to flush at exit either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
