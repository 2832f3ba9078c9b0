"""File helpers shared by the store, the sources and the manifests: hashing, folder sizes, and
writing a small file so that no reader ever sees half of it."""

import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

CHUNK = 4 << 20

ByteProgress = Callable[[int], None]


def sha256_file(path: Path, on_bytes: ByteProgress | None = None) -> str:
    """The hex sha256 of a file, read in chunks; `on_bytes` hears how many bytes each chunk had."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    return digest.hexdigest()


def folder_files(folder: Path) -> list[Path]:
    """Every regular file below `folder`, sorted by relative path, symlinks refused."""
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            raise ValueError(f"symlink in model folder: {path}")
        if path.is_file():
            found.append(path)
    return found


def folder_size(folder: Path) -> int:
    """Bytes taken by the regular files below `folder`."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink())


def write_text_atomically(path: Path, text: str) -> None:
    """Write `text` beside `path`, then rename it into place: readers see the old file or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique per writer: threads of one process may write the same file at once.
    partial = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    try:
        partial.write_text(text, "utf-8")
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)  # never a half-written file left beside it
        raise


def nearest_existing(path: Path) -> Path:
    """`path` if it exists, else its nearest existing parent (where it would be created)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def mount_point(path: Path) -> Path:
    """The mount point of the file system holding `path` (or its nearest existing parent)."""
    path = nearest_existing(path.absolute())
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def human_bytes(size: float) -> str:
    """`1.5 GB`-style size, decimal units as disk tools print them."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")
