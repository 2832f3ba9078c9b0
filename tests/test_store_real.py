"""The store's hardening on the real SmolLM2: tampered weights refused at load, a read-only store
served with the compiled cache elsewhere, a disk that fills up mid-conversion, and two
conversions of one model at once."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from npu_engine.cli_support import run_cli
from npu_engine.convert import ConvertRequest
from npu_engine.devices import Inventory, discover
from npu_engine.engine import Engine
from npu_engine.errors import DiskSpaceError, GenerationError
from npu_engine.manifest import Manifest
from npu_engine.store import DiskFree, ModelStore
from tests.conftest import make_converter
from tests.readonly import read_only, store_folder, tmpfs
from tests.test_convert_cli import NPU_CONVERT

PROMPT = "def add(a, b):"


@pytest.fixture(scope="module")
def inventory() -> Inventory:
    return discover()


def copy_model(cache_store: ModelStore, manifest: Manifest, root: Path) -> ModelStore:
    store = ModelStore(root)
    shutil.copytree(cache_store.path(manifest.name), store.path(manifest.name))
    return store


def answer(store: ModelStore, inventory: Inventory, allow: bool = False) -> str:
    engine = Engine.from_settings(
        store=store, profile="tiny", inventory=inventory, remotes=(), allow_modified_models=allow
    )
    return engine.generate(PROMPT, tier="code", max_new_tokens=8).text


def test_tampered_weights_are_refused_at_load(
    tmp_path: Path, cache_store: ModelStore, smollm_cpu: Manifest, inventory: Inventory
) -> None:
    store = copy_model(cache_store, smollm_cpu, tmp_path / "home")
    expected = answer(store, inventory)
    weights = store.path(smollm_cpu.name) / "openvino_model.bin"
    original = weights.read_bytes()
    middle = len(original) // 2
    weights.write_bytes(original[:middle] + bytes([original[middle] ^ 0xFF]) + original[middle + 1 :])
    with pytest.raises(GenerationError, match=r"openvino_model\.bin has changed"):
        answer(store, inventory)
    answer(store, inventory, allow=True)  # served, with a warning, when the user says so
    weights.write_bytes(original[: len(original) - 4096])
    with pytest.raises(GenerationError, match=rf"openvino_model\.bin has {len(original) - 4096:,} bytes"):
        answer(store, inventory)
    weights.write_bytes(original)  # put back: re-verified (its ctime changed) and served
    assert answer(store, inventory) == expected


def test_a_read_only_store_is_served(
    tmp_path: Path,
    cache_store: ModelStore,
    smollm_cpu: Manifest,
    inventory: Inventory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with store_folder(tmp_path / "home") as home:
        copy_model(cache_store, smollm_cpu, home)
        with read_only(home) as how:
            print(f"read-only by {how}")
            store = ModelStore(home)
            assert answer(store, inventory).strip()
            assert store.cache_dir == tmp_path / "xdg" / "npu-engine" / "cache"
            assert any(store.cache_dir.rglob("*.blob")), "the compiled model was cached outside the store"
            assert not (home / "cache").exists()


def generous_once() -> DiskFree:
    """Free space as the disk reports it, except that the check before the work is answered
    generously, as if the disk filled up afterwards (another process writing)."""
    asked = []

    def disk_free(path: Path) -> int:
        asked.append(path)
        return 1 << 40 if len(asked) == 1 else shutil.disk_usage(path).free

    return disk_free


@pytest.mark.parametrize(("size", "dequantize"), [("300m", True), ("600m", True), ("200m", False)])
def test_a_disk_that_fills_up_mid_conversion_is_one_line(
    tmp_path: Path,
    smollm_gguf: Path,
    size: str,
    dequantize: bool,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On the float path 300 MB fills while de-quantizing (safetensors), 600 MB while exporting
    (OpenVINO); on the bounded path 200 MB fills while writing the FP16 IR."""
    with tmpfs(tmp_path / "disk", size) as disk:
        store = ModelStore(disk / "home", disk_free=generous_once())

        def convert() -> int:
            request = ConvertRequest(source=str(smollm_gguf), recipe="fp16", dequantize=dequantize)
            make_converter(store).convert(request)
            return 0

        caplog.set_level("INFO", logger="npu_engine")
        assert run_cli(convert) == DiskSpaceError.exit_code
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"error: the disk at {disk} filled up while converting"), lines
        assert "needed at the peak" in lines[0] and "free now" in lines[0]
        assert store.manifests() == [] and store.debris() == []
        print(lines[0], *(record.getMessage()[:300] for record in caplog.records), sep="\n")


def test_two_conversions_of_one_model_at_once(tmp_path: Path, smollm_gguf: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "NPU_ENGINE_HOME": str(home)}
    command = [*NPU_CONVERT, "--quiet", str(smollm_gguf), "--recipe", "fp16"]
    first, second = (
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    )
    outputs = [process.communicate(timeout=900) for process in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    assert all("Traceback" not in err for _, err in outputs)
    said = sorted(out.strip() for out, _ in outputs)
    assert "already converted" in said[0] and "converted with recipe fp16" in said[1], said
    store = ModelStore(home)
    assert [m.name for m in store.manifests()] == ["smollm2-135m-instruct.q4-1-fp16"]
    assert store.debris() == []
