"""The store's atomic writes and recovery, on plain folders (no model needed)."""

import os
from pathlib import Path

import pytest

from npu_engine.errors import DiskSpaceError, ModelNotFoundError, UserInputError
from npu_engine.store import ModelStore, check_name
from tests.fake_manifest import write_fake_model


def test_commit_makes_a_model_appear_whole(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    with store.staging() as stage:
        write_fake_model(stage / "m", "alpha")
        store.commit(stage / "m", "alpha", replace=False)
    assert [m.name for m in store.manifests()] == ["alpha"]
    assert store.debris() == []


def test_staging_is_removed_when_the_work_fails(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    with pytest.raises(RuntimeError), store.staging() as stage:
        write_fake_model(stage / "m", "alpha")
        raise RuntimeError("export failed")
    assert store.manifests() == []
    assert store.debris() == []


def test_dead_staging_is_swept_but_live_staging_is_kept(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    dead = tmp_path / ".staging" / "deadbeef"
    dead.mkdir(parents=True)
    (dead / "openvino_model.bin").write_bytes(b"half")
    (tmp_path / ".staging" / "deadbeef.lock").write_text("")
    with store.staging() as live:
        (live / "x").write_text("in progress")
        store.recover()
        assert live.exists()
        assert not dead.exists()
    assert store.debris() == []


def test_a_swap_killed_halfway_is_rolled_back(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    with store.staging() as stage:
        write_fake_model(stage / "m", "alpha", marker="old")
        store.commit(stage / "m", "alpha", replace=False)
    # What a kill between the two renames of a --force swap leaves behind.
    (tmp_path / ".replaced").mkdir()
    os.rename(store.path("alpha"), tmp_path / ".replaced" / "alpha.0123")
    assert store.manifests() == []
    store.recover()
    assert (store.path("alpha") / "marker").read_text() == "old"
    assert store.debris() == []


def test_replace_swaps_in_the_new_model(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    for marker in ("old", "new"):
        with store.staging() as stage:
            write_fake_model(stage / "m", "alpha", marker=marker)
            store.commit(stage / "m", "alpha", replace=marker == "new")
    assert (store.path("alpha") / "marker").read_text() == "new"
    assert store.debris() == []


def test_remove_and_missing_model(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    with store.staging() as stage:
        write_fake_model(stage / "m", "alpha")
        store.commit(stage / "m", "alpha", replace=False)
    store.remove("alpha")
    assert store.manifests() == []
    with pytest.raises(ModelNotFoundError, match="no model named 'alpha'"):
        store.get("alpha")
    assert store.debris() == []


def test_folder_without_manifest_is_not_a_model(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    (store.models_dir / "beta").mkdir(parents=True)
    (store.models_dir / "beta" / "openvino_model.xml").write_text("<net/>")
    assert store.manifests() == []


def test_disk_space_is_checked(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, disk_free=lambda _path: 10_000_000)
    with pytest.raises(DiskSpaceError, match=r"2\.0 GB needed, 10\.0 MB free"):
        store.require_free_space(2_000_000_000)


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "a..b", "x" * 129, "spaced name"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(UserInputError, match="invalid model name"):
        check_name(name)


@pytest.mark.parametrize("name", ["qwen2.5-coder-0.5b-instruct-int8", "A_b-1"])
def test_good_names_pass(name: str) -> None:
    assert check_name(name) == name


def test_commit_replaces_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    (store.models_dir / "alpha").mkdir(parents=True)
    (store.models_dir / "alpha" / "openvino_model.bin").write_bytes(b"leftover")
    with store.staging() as stage:
        write_fake_model(stage / "m", "alpha", marker="new")
        store.commit(stage / "m", "alpha", replace=False)
    assert (store.path("alpha") / "marker").read_text() == "new"
    assert not (store.path("alpha") / "openvino_model.bin").exists()


def test_prune_cache_frees_what_list_reports_and_keeps_the_stamps(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "home", cache_dir=tmp_path / "cache")
    (tmp_path / "cache" / "compiled" / "removed-model").mkdir(parents=True)
    (tmp_path / "cache" / "compiled" / "removed-model" / "1234.blob").write_bytes(b"x" * 10)
    (tmp_path / "cache" / "5678.blob").write_bytes(b"y" * 3)  # the older flat layout
    (tmp_path / "cache" / "verified").mkdir()
    (tmp_path / "cache" / "verified" / "stamp").write_bytes(b"z" * 5)
    assert store.cache_usage() == ({}, 13)
    assert store.prune_cache() == 13
    assert store.cache_usage() == ({}, 0)
    assert (tmp_path / "cache" / "verified" / "stamp").is_file()
