"""The model store: one folder per converted model, each written atomically.

Layout under the root:
  models/<name>/        complete models, each with its manifest.json
  .staging/<id>/        conversions under way; each holds an flock on its `.lock` while alive
  .replaced/<name>.<id> an old model being swapped out by `--force`; restored if the swap died
  .removing/<id>        a model being deleted
  cache/                OpenVINO's compiled-model cache

A conversion killed at any point leaves either the old state or the new one: staging folders whose
owner died are swept on the next open, and a half-done swap is rolled back.
"""

import fcntl
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from npu_engine.errors import DiskSpaceError, ModelNotFoundError, UserInputError
from npu_engine.files import human_bytes
from npu_engine.manifest import Manifest, read_manifest

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

DiskFree = Callable[[Path], int]


def _disk_free(path: Path) -> int:
    return shutil.disk_usage(path).free


def check_name(name: str) -> str:
    """Return `name` if it is a valid model name, else raise UserInputError."""
    if not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise UserInputError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' and '-' (at most 128, no '..')"
        )
    return name


class ModelStore:
    """Converted models under `root`. `disk_free` is injectable so that a full disk can be tested."""

    def __init__(self, root: Path, disk_free: DiskFree = _disk_free) -> None:
        self.root = root
        self.models_dir = root / "models"
        self.cache_dir = root / "cache"
        self._staging_dir = root / ".staging"
        self._replaced_dir = root / ".replaced"
        self._removing_dir = root / ".removing"
        self._disk_free = disk_free

    # -- reading ---------------------------------------------------------------------------------

    def manifests(self) -> list[Manifest]:
        """Every complete model, by name."""
        if not self.models_dir.is_dir():
            return []
        found = []
        for folder in sorted(self.models_dir.iterdir()):
            try:
                found.append(read_manifest(folder))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return found

    def path(self, name: str) -> Path:
        return self.models_dir / check_name(name)

    def get(self, name: str) -> Manifest:
        """The manifest of model `name`; ModelNotFoundError when there is no complete model of that name."""
        try:
            return read_manifest(self.path(name))
        except (OSError, ValueError, KeyError, TypeError):
            known = ", ".join(manifest.name for manifest in self.manifests()) or "none"
            raise ModelNotFoundError(
                f"no model named {name!r} in {self.models_dir} (models: {known})"
            ) from None

    # -- writing ---------------------------------------------------------------------------------

    def require_free_space(self, needed: int) -> None:
        """Raise DiskSpaceError unless `needed` bytes are free where the store lives."""
        self.root.mkdir(parents=True, exist_ok=True)
        free = self._disk_free(self.root)
        if free < needed:
            raise DiskSpaceError(
                f"not enough disk space in {self.root}: "
                f"{human_bytes(needed)} needed, {human_bytes(free)} free"
            )

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh private folder beside the models; removed on exit unless committed away."""
        self.recover()
        self._staging_dir.mkdir(parents=True, exist_ok=True)
        folder = self._staging_dir / uuid.uuid4().hex
        # Lock first, then create: a concurrent recover() never sees our folder unlocked.
        lock = (folder.parent / f"{folder.name}.lock").open("w")
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        folder.mkdir()
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            Path(lock.name).unlink(missing_ok=True)
            lock.close()

    def commit(self, staged: Path, name: str, replace: bool) -> Path:
        """Move a finished staging folder into place as model `name`, atomically.

        With `replace`, an existing model of that name is swapped out; were the process killed
        between the two renames, `recover()` puts the old model back. A folder of that name that is
        not a complete model (no readable manifest) is swapped out too.
        """
        target = self.path(name)
        self.models_dir.mkdir(parents=True, exist_ok=True)
        with self._store_lock():
            if target.exists():
                if not replace and any(m.name == name for m in self.manifests()):
                    raise AssertionError("commit over an existing model without replace")
                self._replaced_dir.mkdir(parents=True, exist_ok=True)
                old = self._replaced_dir / f"{name}.{uuid.uuid4().hex}"
                os.rename(target, old)
                os.rename(staged, target)
                shutil.rmtree(old)
            else:
                os.rename(staged, target)
        return target

    def remove(self, name: str) -> Manifest:
        """Delete model `name`: first renamed out of the listing, then deleted."""
        manifest = self.get(name)
        self._removing_dir.mkdir(parents=True, exist_ok=True)
        with self._store_lock():
            doomed = self._removing_dir / uuid.uuid4().hex
            os.rename(self.path(name), doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        return manifest

    def recover(self) -> None:
        """Undo what killed processes left: dead staging folders, half-swapped and half-removed models."""
        if not self.root.exists():
            return
        with self._store_lock():
            for old in _children(self._replaced_dir):
                name = old.name.rsplit(".", 1)[0]
                target = self.models_dir / name
                if target.exists():
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    os.rename(old, target)
            for doomed in _children(self._removing_dir):
                shutil.rmtree(doomed, ignore_errors=True)
            for folder in _children(self._staging_dir):
                if folder.is_dir() and not _lock_held(folder.parent / f"{folder.name}.lock"):
                    shutil.rmtree(folder, ignore_errors=True)
                    (folder.parent / f"{folder.name}.lock").unlink(missing_ok=True)
            for lock in self._staging_dir.glob("*.lock") if self._staging_dir.is_dir() else []:
                if not lock.with_suffix("").exists():
                    lock.unlink(missing_ok=True)

    def debris(self) -> list[Path]:
        """Leftovers from interrupted work (what `recover` would act on); empty in a clean store."""
        return [*_children(self._replaced_dir), *_children(self._removing_dir), *_children(self._staging_dir)]

    @contextmanager
    def _store_lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def _children(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _lock_held(lock_path: Path) -> bool:
    """True when a live process holds the flock on `lock_path`."""
    try:
        with lock_path.open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(lock, fcntl.LOCK_UN)
            return False
    except FileNotFoundError:
        return False
