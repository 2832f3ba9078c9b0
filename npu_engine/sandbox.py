"""Running untrusted code (a model's answer) in a subprocess: its own temporary folder, a time
limit, a memory limit, a file-size limit, no network, and its whole process group killed after."""

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

MB = 1 << 20


@dataclass(frozen=True)
class SandboxLimits:
    seconds: float = 10.0
    memory_bytes: int = 512 * MB  # writable data (RLIMIT_DATA): counts heaps, not reserved address space
    file_bytes: int = 16 * MB
    network: bool = False


@dataclass(frozen=True)
class SandboxRun:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


@functools.cache
def _isolation_prefix() -> tuple[str, ...]:
    """`unshare -rn` (a new user and network namespace whose only interface, loopback, is down)
    when this kernel allows it; empty otherwise."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    try:
        probe = subprocess.run([unshare, "-rn", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return (unshare, "-rn") if probe.returncode == 0 else ()


def _limits_prefix(limits: SandboxLimits) -> tuple[str, ...]:
    """util-linux `prlimit` sets the child's limits before it starts (no preexec_fn, which is
    unsafe in a process with threads, as the engine's is)."""
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        raise OSError("cannot limit a task's memory here (`prlimit` from util-linux is missing)")
    cpu = int(limits.seconds) + 1
    return (
        prlimit,
        f"--data={limits.memory_bytes}",
        f"--fsize={limits.file_bytes}",
        f"--cpu={cpu}",
        "--core=0",
        "--",
    )


def run_sandboxed(
    argv: Sequence[str], files: Mapping[str, str], limits: SandboxLimits | None = None
) -> SandboxRun:
    """Write `files` into a fresh temporary folder, run `argv` there with `limits`, remove the folder.

    The child gets an empty stdin, a minimal environment, and its own session, so that on time-out
    everything it started is killed with it.
    """
    limits = limits or SandboxLimits()
    prefix = _limits_prefix(limits)
    if not limits.network:
        isolation = _isolation_prefix()
        if not isolation:
            raise OSError("cannot cut a task off the network here (`unshare -rn` is not allowed)")
        prefix = (*isolation, *prefix)
    with tempfile.TemporaryDirectory(prefix="npu-bench-task-") as folder:
        for name, text in files.items():
            (Path(folder) / name).write_text(text, encoding="utf-8")
        env = {"PATH": os.defpath + ":/usr/local/bin", "HOME": folder, "LANG": "C.UTF-8", "TMPDIR": folder}
        started = time.monotonic()
        process = subprocess.Popen(
            [*prefix, *argv],
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        timed_out = False
        try:
            stdout, stderr = process.communicate(timeout=limits.seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
            stdout, stderr = "", ""
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        if timed_out:
            stdout, stderr = process.communicate()
        return SandboxRun(
            process.returncode, stdout[-4000:], stderr[-4000:], time.monotonic() - started, timed_out
        )
