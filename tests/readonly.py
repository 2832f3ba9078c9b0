"""Real file-system limits in tests: a small tmpfs (a disk that fills up) and a read-only folder.

Root ignores mode bits, so as root a read-only folder is a tmpfs remounted read-only; as another
user, chmod is enough (and no tmpfs is mounted)."""

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at `folder`, unmounted afterwards; skips the test where mounting is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    if not can_mount():
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@contextmanager
def store_folder(folder: Path) -> Iterator[Path]:
    """A folder that `read_only` can later freeze: a tmpfs as root, a plain folder otherwise."""
    if not can_mount():
        folder.mkdir(parents=True)
        yield folder
        return
    with tmpfs(folder, "1g") as mounted:
        yield mounted


@contextmanager
def read_only(folder: Path) -> Iterator[str]:
    """`folder` (from `store_folder`) is read-only inside; yields how that was done."""
    if not can_mount():
        modes = {path: path.stat().st_mode for path in [folder, *folder.rglob("*")] if path.is_dir()}
        for path in modes:
            path.chmod(0o555)
        try:
            yield "chmod a-w"
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)
    try:
        yield "tmpfs remounted read-only"
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(folder)], check=False, capture_output=True)
