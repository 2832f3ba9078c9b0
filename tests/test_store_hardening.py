"""The store against hostile or odd states: malformed manifests, a read-only store, two conversions of
one model at once, and model files that no longer match their manifest (no model needed)."""

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from npu_engine.cli_support import run_cli
from npu_engine.convert import disk_filled
from npu_engine.errors import ConversionError, ModelNotFoundError, StoreError
from npu_engine.files import sha256_file
from npu_engine.integrity import FileChecker
from npu_engine.manifest import MANIFEST_NAME, ManifestError, read_manifest
from npu_engine.store import ModelStore
from tests.fake_manifest import write_fake_model
from tests.readonly import read_only, store_folder
from tests.test_convert_cli import assert_user_error, run

MALFORMED = {
    "nested-100k": "[" * 100_000 + "]" * 100_000,
    "not-json": "{name: alpha",
    "a-list": "[1, 2, 3]",
    "not-utf8": b"\xff\xfe{}",
    "missing-keys": '{"format_version": 1, "name": "alpha"}',
    "escaping-path": None,
    "other-name": None,
}


def malformed(folder: Path, case: str) -> None:
    write_fake_model(folder, folder.name)
    body = MALFORMED[case]
    manifest = folder / MANIFEST_NAME
    if case == "escaping-path":
        raw = json.loads(manifest.read_text())
        raw["files"][0]["path"] = "../../../etc/passwd"
        body = json.dumps(raw)
    elif case == "other-name":
        body = manifest.read_text().replace(f'"name": "{folder.name}"', '"name": "elsewhere"')
    manifest.write_bytes(body if isinstance(body, bytes) else str(body).encode())


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_manifest_is_not_a_model(tmp_path: Path, case: str) -> None:
    store = ModelStore(tmp_path)
    write_fake_model(store.path("good"), "good")
    malformed(store.path("bad"), case)
    with pytest.raises(ManifestError):
        read_manifest(store.path("bad"))
    assert [m.name for m in store.manifests()] == ["good"]
    assert [name for name, _ in store.broken()] == ["bad"]
    with pytest.raises(ModelNotFoundError, match="bad in .* is not a complete model: .*manifest"):
        store.get("bad")


def test_list_verify_and_rm_say_what_a_broken_model_is(tmp_path: Path) -> None:
    home = tmp_path / "home"
    malformed(ModelStore(home).path("bad"), "nested-100k")
    listing = run(home, "list")
    assert listing.returncode == 0 and "Traceback" not in listing.stderr
    assert "bad: not a model (manifest.json is nested too deeply" in listing.stderr
    assert_user_error(run(home, "verify", "bad"), 4, "bad in")
    removed = run(home, "rm", "bad")
    assert removed.returncode == 0 and "not a complete model" in removed.stdout
    assert ModelStore(home).broken() == []


def test_a_read_only_store_refuses_writes_in_one_line(tmp_path: Path) -> None:
    with store_folder(tmp_path / "home") as home:
        write_fake_model(ModelStore(home).path("alpha"), "alpha")
        source = tmp_path / "x.gguf"
        source.write_bytes(b"GGUF")
        with read_only(home) as how:
            print(f"read-only by {how}")
            assert_user_error(run(home, str(source)), 4, f"the model store {home} is read-only")
            assert_user_error(run(home, "rm", "alpha"), 4, "cannot remove alpha: the model store")
            listing = run(home, "list")
            assert listing.returncode == 0 and "alpha" in listing.stdout
            assert run(home, "verify", "alpha").returncode == 0
            # Serving needs a compiled cache: it goes to $XDG_CACHE_HOME when the store cannot hold it.
            os.environ["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
            try:
                store = ModelStore(home)
                assert store.cache_dir == tmp_path / "xdg" / "npu-engine" / "cache"
                assert store.checked_path(store.get("alpha")) == home / "models" / "alpha"
            finally:
                del os.environ["XDG_CACHE_HOME"]


def test_the_compiled_cache_stays_in_a_writable_store_unless_told(tmp_path: Path) -> None:
    assert ModelStore(tmp_path).cache_dir == tmp_path / "cache"
    assert ModelStore(tmp_path, cache_dir=tmp_path / "elsewhere").cache_dir == tmp_path / "elsewhere"


HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from npu_engine.store import ModelStore
    with ModelStore(Path(sys.argv[1])).converting("alpha", on_wait=lambda: print("waited", flush=True)):
        print("holding", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def test_a_second_conversion_of_a_model_waits_for_the_first(tmp_path: Path) -> None:
    first = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path), "3"], stdout=subprocess.PIPE, text=True
    )
    assert first.stdout is not None and first.stdout.readline().strip() == "holding"
    started = time.monotonic()
    second = subprocess.run(
        [sys.executable, "-c", HOLD, str(tmp_path), "0"], capture_output=True, text=True, timeout=60
    )
    assert second.stdout.split() == ["waited", "holding"]
    assert time.monotonic() - started > 1  # it waited for the first to let go
    assert first.wait(timeout=60) == 0


def test_commit_over_a_model_that_appeared_meanwhile_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ModelStore(tmp_path)
    write_fake_model(store.path("alpha"), "alpha")

    def body() -> int:
        with store.staging() as stage:
            write_fake_model(stage / "m", "alpha")
            store.commit(stage / "m", "alpha", replace=False)
        return 0

    assert run_cli(body) == 4
    assert "appeared in the store during this conversion" in capsys.readouterr().err
    assert store.debris() == []


# -- files against the manifest at load time ---------------------------------------------------------


class CountingHash:
    """The real sha256, counted: shows when the checker trusts its stamps."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, path: Path) -> str:
        self.calls += 1
        return sha256_file(path)


def test_tampered_and_truncated_files_are_refused(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    manifest = write_fake_model(store.path("alpha"), "alpha", marker="weights")
    assert store.checked_path(manifest) == store.path("alpha")
    (store.path("alpha") / "marker").write_text("weighTs")  # same size, one byte changed
    with pytest.raises(StoreError, match="model alpha does not match its manifest .*marker has changed"):
        store.checked_path(manifest)
    assert store.checked_path(manifest, allow_modified=True) == store.path("alpha")
    (store.path("alpha") / "marker").write_text("weigh")
    with pytest.raises(StoreError, match="marker has 5 bytes, not 7"):
        store.checked_path(manifest)
    (store.path("alpha") / "marker").write_text("weights")
    assert store.checked_path(manifest) == store.path("alpha")


def test_hashes_are_reused_until_a_file_changes(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    manifest = write_fake_model(store.path("alpha"), "alpha")
    hashing = CountingHash()
    stamps = tmp_path / "stamps"
    assert FileChecker(stamps, hashing).problems(store.path("alpha"), manifest) == []
    assert hashing.calls == 1
    # A new checker (a new process) trusts the stamp on disk.
    assert FileChecker(stamps, hashing).problems(store.path("alpha"), manifest) == []
    assert hashing.calls == 1
    marker = store.path("alpha") / "marker"
    before = marker.stat()
    marker.write_text("y")
    os.utime(marker, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime put back; ctime cannot be
    assert FileChecker(stamps, hashing).problems(store.path("alpha"), manifest) == [
        "marker has changed (its sha256 is not the manifest's)"
    ]
    assert hashing.calls == 2


def _wrapped(inner: BaseException) -> BaseException:
    """`inner` as the export wraps it: ConversionError(...) from the library's error."""
    try:
        try:
            raise inner
        except Exception as error:
            raise ConversionError(f"export to OpenVINO failed: {error}") from None
    except ConversionError as outer:
        return outer


MB = 1 << 20


@pytest.mark.parametrize(
    ("error", "free", "full"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), 10_000 * MB, True),
        (
            RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),
            10_000 * MB,
            True,
        ),
        (_wrapped(RuntimeError("basic_ios::clear: iostream error")), 84 * MB, True),
        (_wrapped(RuntimeError("basic_ios::clear: iostream error")), 10_000 * MB, False),
        (_wrapped(OSError(errno.ENOSPC, "No space left on device")), 10_000 * MB, True),
        (ValueError("unsupported rope type"), 84 * MB, False),
        (ValueError("unsupported rope type"), 10 * MB, True),
    ],
)
def test_what_counts_as_a_full_disk(error: BaseException, free: int, full: bool) -> None:
    assert disk_filled(error, free) is full
