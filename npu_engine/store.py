"""The model store: one folder per converted model, each written atomically.

Layout under the root:
  models/<name>/        complete models, each with its manifest.json
  .staging/<id>/        conversions under way; each holds an flock on its `.lock` while alive
  .replaced/<name>.<id> an old model being swapped out by `--force`; restored if the swap died
  .removing/<id>        a model being deleted
  .converting/<name>.lock  held by the one conversion that may write model <name>
  cache/                OpenVINO's compiled-model cache (compiled/<name>/, one folder per model,
                        pruned with it) and the verification stamps, unless the store is
                        read-only (see `ModelStore.cache_dir`)

A conversion killed at any point leaves either the old state or the new one: staging folders whose
owner died are swept on the next open, and a half-done swap is rolled back. A read-only store can
still be listed, verified and served; writing to it is refused with one StoreError.
"""

import errno
import fcntl
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from npu_engine.errors import (
    DiskSpaceError,
    ModelExistsError,
    ModelNotFoundError,
    StoreError,
    UserInputError,
)
from npu_engine.files import folder_size, human_bytes, mount_point, nearest_existing
from npu_engine.integrity import FileChecker
from npu_engine.manifest import Manifest, ManifestError, read_manifest
from npu_engine.settings import compiled_cache_setting, user_cache_home

log = logging.getLogger("npu_engine")

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

DiskFree = Callable[[Path], int]
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
COMPILED = "compiled"  # under the cache: one folder of OpenVINO's compiled blobs per model


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
    """Converted models under `root`. `disk_free` is injectable so that a full disk can be tested.

    `cache_dir` places OpenVINO's compiled-model cache (and the stamps of verified model files);
    None means `$NPU_ENGINE_COMPILED_CACHE`, else `<root>/cache`, else, when the store is
    read-only, `$XDG_CACHE_HOME/npu-engine/cache`.
    """

    def __init__(self, root: Path, disk_free: DiskFree = _disk_free, cache_dir: Path | None = None) -> None:
        self.root = root
        self.models_dir = root / "models"
        self._staging_dir = root / ".staging"
        self._replaced_dir = root / ".replaced"
        self._removing_dir = root / ".removing"
        self._converting_dir = root / ".converting"
        self._disk_free = disk_free
        self._explicit_cache = cache_dir
        self._cache: tuple[Path | None] | None = None
        self._checker: FileChecker | None = None

    # -- reading ---------------------------------------------------------------------------------

    def manifests(self) -> list[Manifest]:
        """Every complete model, by name; folders that are not (see `broken`) are left out."""
        return [found for found in self._scan() if isinstance(found, Manifest)]

    def broken(self) -> list[tuple[str, str]]:
        """(name, why) for each folder under models/ that is not a complete model."""
        return [found for found in self._scan() if not isinstance(found, Manifest)]

    def _scan(self) -> list[Manifest | tuple[str, str]]:
        if not self.models_dir.is_dir():
            return []
        found: list[Manifest | tuple[str, str]] = []
        for folder in sorted(self.models_dir.iterdir()):
            try:
                found.append(read_manifest(folder))
            except ManifestError as error:
                found.append((folder.name, str(error)))
        return found

    def path(self, name: str) -> Path:
        return self.models_dir / check_name(name)

    def get(self, name: str) -> Manifest:
        """The manifest of model `name`; ModelNotFoundError when there is no complete model of that name."""
        folder = self.path(name)
        try:
            return read_manifest(folder)
        except ManifestError as error:
            if folder.is_dir():
                raise ModelNotFoundError(
                    f"{name} in {self.models_dir} is not a complete model: {error}"
                ) from None
            known = ", ".join(manifest.name for manifest in self.manifests()) or "none"
            raise ModelNotFoundError(
                f"no model named {name!r} in {self.models_dir} (models: {known})"
            ) from None

    @property
    def cache_dir(self) -> Path | None:
        """Where OpenVINO keeps compiled models: a writable folder, or None to compile on each load."""
        if self._cache is None:
            self._cache = (self._find_cache(),)
        return self._cache[0]

    def compiled_cache(self, name: str) -> Path | None:
        """The compiled-model cache of model `name` (removed with the model), or None."""
        return None if self.cache_dir is None else self.cache_dir / COMPILED / name

    def cache_usage(self) -> tuple[dict[str, int], int]:
        """Bytes of compiled cache per model name, and the bytes `prune_cache` would free (caches of
        models no longer in the store, loose blobs of the older flat layout)."""
        cache = self.cache_dir
        if cache is None or not cache.is_dir():
            return {}, 0
        names = {manifest.name for manifest in self.manifests()}
        per_model = {
            folder.name: folder_size(folder)
            for folder in _children(cache / COMPILED)
            if folder.is_dir() and folder.name in names
        }
        return per_model, sum(_entry_size(entry) for entry in _orphaned_cache(cache, names))

    def orphaned_cache(self) -> list[Path]:
        """What `prune_cache` would delete: compiled caches of models no longer in the store, and
        loose blobs of the older flat layout."""
        cache = self.cache_dir
        if cache is None or not cache.is_dir():
            return []
        return _orphaned_cache(cache, {manifest.name for manifest in self.manifests()})

    def prune_cache(self) -> int:
        """Delete compiled caches that belong to no model in the store, and loose blobs of the older
        flat layout; the bytes freed."""
        freed = 0
        for entry in self.orphaned_cache():
            freed += _entry_size(entry)
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        return freed

    def _drop_compiled(self, name: str) -> None:
        compiled = self.compiled_cache(name)
        if compiled is not None:
            shutil.rmtree(compiled, ignore_errors=True)

    def _find_cache(self) -> Path | None:
        explicit = self._explicit_cache or compiled_cache_setting()
        candidates = (
            [explicit] if explicit else [self.root / "cache", user_cache_home() / "npu-engine" / "cache"]
        )
        for candidate in candidates:
            if _writable_folder(candidate):
                return candidate
        log.warning(
            "no writable folder for the compiled-model cache (tried %s): models compile on every load",
            ", ".join(str(c) for c in candidates),
        )
        return None

    def checked_path(self, manifest: Manifest, allow_modified: bool = False) -> Path:
        """The folder of `manifest`'s model once its files match the manifest.

        Sizes are checked on every call; each file's sha256 on first use and whenever its size,
        mtime or ctime changed since it was last hashed (a stamp beside the compiled cache). A
        mismatch raises StoreError naming the file, unless `allow_modified`, which only logs it.
        """
        folder = self.path(manifest.name)
        problems = self.file_problems(manifest)
        if problems:
            detail = "; ".join(problems)
            if not allow_modified:
                raise StoreError(
                    f"model {manifest.name} does not match its manifest ({detail}): reconvert it with "
                    "npu-convert --force, or allow modified models (--allow-modified-models)"
                )
            log.warning("model %s does not match its manifest (%s); served as allowed", manifest.name, detail)
        return folder

    def file_problems(self, manifest: Manifest) -> list[str]:
        """What differs between `manifest`'s model files and the manifest, as checked_path checks:
        sizes every time, each sha256 again only when the file changed since it was last hashed."""
        return self._file_checker().problems(self.path(manifest.name), manifest)

    def source_matches(self, file: Path, digest: str) -> bool:
        """Whether `file` (a conversion's source GGUF) still hashes to the manifest's `sha256:`
        digest; hashed once, then again only when the file changed (as checked_path does)."""
        problems = self._file_checker().file_problems(file, digest.removeprefix("sha256:"))
        if problems:
            log.warning("source %s does not match its manifest: %s", file, "; ".join(problems))
        return not problems

    def _file_checker(self) -> FileChecker:
        if self._checker is None:
            cache = self.cache_dir
            self._checker = FileChecker(cache / "verified" if cache else None)
        return self._checker

    # -- writing ---------------------------------------------------------------------------------

    def require_free_space(self, needed: int) -> None:
        """Raise DiskSpaceError unless `needed` bytes are free where the store lives."""
        with self._writing("convert into it"):
            self.root.mkdir(parents=True, exist_ok=True)
        free = self._disk_free(self.root)
        if free < needed:
            raise DiskSpaceError(
                f"not enough disk space in {self.root}: "
                f"{human_bytes(needed)} needed, {human_bytes(free)} free"
            )

    def disk_free(self) -> int:
        """Bytes free on the store's disk now; before the store exists, on the disk of its nearest
        existing parent folder, where it will be created."""
        return self._disk_free(nearest_existing(self.root))

    def disk_full(self, doing: str, needed: int | None = None) -> DiskSpaceError:
        """The error for a disk that filled up while `doing`: which disk, and what is free now."""
        wanted = f"about {human_bytes(needed)} needed at the peak, " if needed else ""
        return DiskSpaceError(
            f"the disk at {mount_point(self.root)} filled up while {doing} in {self.root} "
            f"({wanted}{human_bytes(self.disk_free())} free now that the partial files are gone); "
            "free some space or point NPU_ENGINE_HOME at a bigger disk"
        )

    @contextmanager
    def converting(self, name: str, on_wait: Callable[[], None]) -> Iterator[None]:
        """Hold the right to write model `name`; a second conversion of it waits here for the first.

        The lock files stay: deleting one while another process waits on it would let a third
        process lock a new file of the same name alongside."""
        with self._writing(f"convert {name}"):
            self._converting_dir.mkdir(parents=True, exist_ok=True)
            lock = (self._converting_dir / f"{check_name(name)}.lock").open("a")
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                on_wait()
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield
        finally:
            lock.close()

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh private folder beside the models; removed on exit unless committed away."""
        self.recover()
        with self._writing("convert into it"):
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
        with self._writing(f"add {name}"), self._store_lock():
            self.models_dir.mkdir(parents=True, exist_ok=True)
            if target.exists():
                if not replace and any(m.name == name for m in self.manifests()):
                    raise ModelExistsError(f"model {name!r} appeared in the store during this conversion")
                self._replaced_dir.mkdir(parents=True, exist_ok=True)
                old = self._replaced_dir / f"{name}.{uuid.uuid4().hex}"
                os.rename(target, old)
                os.rename(staged, target)
                shutil.rmtree(old)
                self._drop_compiled(name)  # compiled from the model just replaced
            else:
                os.rename(staged, target)
        return target

    def remove(self, name: str) -> Manifest | None:
        """Delete model `name`, first renamed out of the listing, then deleted; also a folder of
        that name that is not a complete model (then None is returned)."""
        folder = self.path(name)
        try:
            manifest: Manifest | None = self.get(name)
        except ModelNotFoundError:
            if not folder.is_dir():
                raise
            manifest = None
        with self._writing(f"remove {name}"), self._store_lock():
            self._removing_dir.mkdir(parents=True, exist_ok=True)
            doomed = self._removing_dir / uuid.uuid4().hex
            os.rename(folder, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        self._drop_compiled(name)
        return manifest

    def recover(self) -> None:
        """Undo what killed processes left: dead staging folders, half-swapped and half-removed models."""
        if not self.root.exists():
            return
        with self._writing("write to it"), self._store_lock():
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
        """Leftovers from interrupted work and conversions under way; empty in a clean store."""
        return [*_children(self._replaced_dir), *_children(self._removing_dir), *_children(self._staging_dir)]

    def interrupted(self) -> list[Path]:
        """What `recover` would act on now: the part of `debris` whose process died (a staging
        folder whose lock nobody holds; every half-done swap or removal)."""
        return [
            entry
            for entry in self.debris()
            if entry.parent != self._staging_dir or (entry.is_dir() and not _staging_alive(entry))
        ]

    @contextmanager
    def _store_lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    @contextmanager
    def _writing(self, action: str) -> Iterator[None]:
        """Turn a read-only or full store into one line; other OS errors stay bugs."""
        try:
            yield
        except OSError as error:
            if error.errno in READ_ONLY:
                reason = error.strerror or "not writable"
                raise StoreError(
                    f"cannot {action}: the model store {self.root} is read-only ({reason})"
                ) from None
            if error.errno in DISK_FULL:
                raise self.disk_full(f"trying to {action}") from None
            raise


def _writable_folder(folder: Path) -> bool:
    """True when files can be created in `folder` (made if missing); mode bits, read-only mounts
    and immutable flags all count, which os.access alone would not show for root."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            return True
    except OSError:
        return False


def _orphaned_cache(cache: Path, names: set[str]) -> list[Path]:
    """What in `cache` belongs to no model named in `names`: compiled folders of removed models and
    the loose blobs of the older flat layout (the verification stamps stay)."""
    orphans = [folder for folder in _children(cache / COMPILED) if folder.name not in names]
    return orphans + [entry for entry in _children(cache) if entry.is_file() and entry.suffix == ".blob"]


def _entry_size(entry: Path) -> int:
    return folder_size(entry) if entry.is_dir() else entry.stat().st_size


def _children(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _staging_alive(folder: Path) -> bool:
    """Whether a conversion still works in staging `folder`; its lock file is looked at, never made."""
    lock = folder.parent / f"{folder.name}.lock"
    return lock.exists() and _lock_held(lock)


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
