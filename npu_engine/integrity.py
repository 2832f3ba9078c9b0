"""Are a model's files still the ones its manifest lists? Checked each time the engine loads them.

Sizes are compared on every check (a stat per file). Hashing a model's weights takes a second or
more, so each file's sha256 is remembered with the size, mtime, ctime and inode it had when it was
hashed, in a small stamp file per model, and is recomputed only when one of those changed. Writing
a file changes its ctime, which no user tool can set back; the stamps guard against corruption
and edits, not against someone who can rewrite both the model and its stamp.
"""

import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from npu_engine.files import sha256_file, write_text_atomically
from npu_engine.manifest import FileEntry, Manifest

MAX_STAMP_BYTES = 1 << 20
Fingerprint = tuple[int, int, int, int]


class FileChecker:
    """Checks model folders against manifests; `stamps` is a writable folder, or None to keep the
    hashes in memory only (a read-only store with no writable cache). `hash_file` returns a file's
    hex sha256."""

    def __init__(self, stamps: Path | None, hash_file: Callable[[Path], str] = sha256_file) -> None:
        self._stamps = stamps
        self._hash_file = hash_file
        self._memory: dict[str, dict[str, tuple[Fingerprint, str]]] = {}
        self._guard = threading.Lock()

    def problems(self, folder: Path, manifest: Manifest) -> list[str]:
        """What differs: missing files, sizes, and hashes of files changed since last checked."""
        return self._problems(_stamp_key(folder), folder, manifest.files)

    def file_problems(self, file: Path, sha256: str) -> list[str]:
        """As `problems`, for one file whose size no manifest records (a source GGUF)."""
        try:
            size = file.stat().st_size
        except OSError:
            return [f"{file.name} is missing"]
        return self._problems(_stamp_key(file), file.parent, (FileEntry(file.name, sha256, size),))

    def _problems(self, key: str, folder: Path, entries: Sequence[FileEntry]) -> list[str]:
        known = self._load(key)
        seen: dict[str, tuple[Fingerprint, str]] = {}
        problems = []
        for entry in entries:
            file = folder / entry.path
            try:
                stat = file.stat()
            except OSError:
                problems.append(f"{entry.path} is missing")
                continue
            if stat.st_size != entry.size:
                problems.append(f"{entry.path} has {stat.st_size:,} bytes, not {entry.size:,}")
                continue
            fingerprint = (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
            previous = known.get(entry.path)
            digest = previous[1] if previous and previous[0] == fingerprint else self._hash_file(file)
            seen[entry.path] = (fingerprint, digest)
            if digest != entry.sha256:
                problems.append(f"{entry.path} has changed (its sha256 is not the manifest's)")
        if seen != known:
            self._save(key, seen)
        return problems

    def _load(self, key: str) -> dict[str, tuple[Fingerprint, str]]:
        with self._guard:
            if key in self._memory:
                return dict(self._memory[key])
        if self._stamps is None:
            return {}
        try:
            with (self._stamps / f"{key}.json").open("rb") as stream:
                raw = json.loads(stream.read(MAX_STAMP_BYTES))
            return {str(path): _entry(value) for path, value in raw.items()}
        except (OSError, ValueError, TypeError, AttributeError, RecursionError):
            return {}  # no stamp yet, or a damaged one: hash again

    def _save(self, key: str, seen: dict[str, tuple[Fingerprint, str]]) -> None:
        with self._guard:
            self._memory[key] = dict(seen)
        if self._stamps is None:
            return
        body = {path: [*fingerprint, digest] for path, (fingerprint, digest) in seen.items()}
        try:
            write_text_atomically(self._stamps / f"{key}.json", json.dumps(body, sort_keys=True))
        except OSError:
            return  # the stamp only saves time; the in-memory copy serves this process


def _entry(value: Any) -> tuple[Fingerprint, str]:
    size, mtime, ctime, inode, digest = value
    return (int(size), int(mtime), int(ctime), int(inode)), str(digest)


def _stamp_key(folder: Path) -> str:
    """One stamp per model folder: stores sharing a cache do not mix their stamps."""
    where = hashlib.sha256(str(folder.absolute()).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{folder.name}-{where}"
