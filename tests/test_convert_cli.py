"""npu-convert as a user runs it: one-line errors with exit codes, nothing left behind, kill -9 safe."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from npu_engine.manifest import Manifest
from npu_engine.store import ModelStore
from tests.test_sources import ollama_store, tiny_gguf

NPU_CONVERT = [sys.executable, "-m", "npu_engine.convert_cli"]


def run(home: Path, *args: str, ollama: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NPU_ENGINE_HOME": str(home), "OLLAMA_MODELS": str(ollama or home / "no-ollama")}
    return subprocess.run(
        [*NPU_CONVERT, "--quiet", *args], capture_output=True, text=True, env=env, timeout=600
    )


def assert_user_error(result: subprocess.CompletedProcess[str], code: int, message: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def assert_store_clean(home: Path) -> None:
    store = ModelStore(home)
    assert store.manifests() == []
    assert store.debris() == []


def test_missing_path(home: Path, tmp_path: Path) -> None:
    assert_user_error(run(home, str(tmp_path / "missing.gguf")), 2, "no such file or folder")
    assert_store_clean(home)


def test_not_a_gguf(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_text("<html>404</html>")
    assert_user_error(run(home, str(path)), 3, "is not a GGUF file")
    assert_store_clean(home)


def test_truncated_gguf(home: Path, tmp_path: Path, smollm_gguf: Path) -> None:
    path = tmp_path / "cut.gguf"
    with smollm_gguf.open("rb") as whole:
        path.write_bytes(whole.read(50_000_000))
    assert_user_error(run(home, str(path)), 3, "truncated")
    assert_store_clean(home)


def test_unsupported_architecture(home: Path, tmp_path: Path) -> None:
    path = tiny_gguf(tmp_path / "t5.gguf", "t5")
    assert_user_error(run(home, str(path)), 3, "GGUF architecture 't5' is not supported")
    assert_store_clean(home)


def test_unknown_ollama_tag(home: Path, tmp_path: Path, smollm_gguf: Path) -> None:
    ollama = ollama_store(tmp_path / "ollama", smollm_gguf)
    assert_user_error(run(home, "ollama:smollm2:70b", ollama=ollama), 3, "unknown Ollama model smollm2:70b")
    assert_store_clean(home)


def test_bad_name_recipe_and_device(home: Path, smollm_gguf: Path) -> None:
    assert_user_error(run(home, str(smollm_gguf), "--name", "../evil"), 2, "invalid model name")
    assert_user_error(run(home, str(smollm_gguf), "--recipe", "int3"), 2, "unknown recipe 'int3'")
    assert_user_error(
        run(home, str(smollm_gguf), "--device", "npu", "--recipe", "int4-asym"),
        2,
        "recipe 'int4-asym' is not for NPU",
    )
    assert_store_clean(home)


def test_hub_without_network_is_a_clear_error(home: Path) -> None:
    env_home = home
    result = subprocess.run(
        [*NPU_CONVERT, "--quiet", "hf:Qwen/Qwen2.5-Coder-1.5B-Instruct"],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "NPU_ENGINE_HOME": str(env_home),
            "HF_HUB_OFFLINE": "1",
            "HF_HOME": str(home / "hf"),
        },
        timeout=300,
    )
    assert_user_error(result, 7, "could not download Qwen/Qwen2.5-Coder-1.5B-Instruct")
    assert_store_clean(home)


def test_list_verify_rm(home: Path, smollm_cpu: Manifest, cache_store: ModelStore) -> None:
    assert run(home, "list").stdout.startswith("no models in")
    shutil.copytree(cache_store.path(smollm_cpu.name), ModelStore(home).path(smollm_cpu.name))
    listing = run(home, "list")
    assert listing.returncode == 0
    assert (
        smollm_cpu.name in listing.stdout
        and "int8" in listing.stdout
        and "pkg:smollm2-135m-instruct" in listing.stdout
    )
    verified = run(home, "verify", smollm_cpu.name)
    assert verified.returncode == 0 and "ok" in verified.stdout
    (ModelStore(home).path(smollm_cpu.name) / "openvino_tokenizer.xml").write_text("<broken/>")
    assert_user_error(run(home, "verify", smollm_cpu.name), 4, "openvino_tokenizer.xml: size")
    assert run(home, "rm", smollm_cpu.name).returncode == 0
    assert_user_error(run(home, "rm", smollm_cpu.name), 4, f"no model named '{smollm_cpu.name}'")
    assert_store_clean(home)


def test_existing_model_without_force(
    home: Path, smollm_cpu: Manifest, cache_store: ModelStore, smollm_gguf: Path
) -> None:
    shutil.copytree(cache_store.path(smollm_cpu.name), ModelStore(home).path("taken"))
    manifest = ModelStore(home).path("taken") / "manifest.json"
    manifest.write_text(manifest.read_text().replace(f'"name": "{smollm_cpu.name}"', '"name": "taken"'))
    assert_user_error(run(home, str(smollm_gguf), "--name", "taken", "--recipe", "fp16"), 4, "already exists")
    assert [m.name for m in ModelStore(home).manifests()] == ["taken"]


def test_kill_9_mid_export_leaves_the_store_clean(home: Path, smollm_gguf: Path) -> None:
    env = {**os.environ, "NPU_ENGINE_HOME": str(home)}
    process = subprocess.Popen(
        [*NPU_CONVERT, "--quiet", str(smollm_gguf), "--recipe", "fp16"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    # Wait until optimum has begun writing the IR: the riskiest moment to die.
    while not list((home / ".staging").glob("*/model/*")) and time.monotonic() < deadline:
        assert process.poll() is None, "conversion ended before it could be killed"
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    store = ModelStore(home)
    assert store.manifests() == []
    # The next run sweeps the dead staging folder and converts normally.
    again = run(home, str(smollm_gguf), "--recipe", "fp16")
    assert again.returncode == 0, again.stderr
    assert [m.name for m in store.manifests()] == ["smollm2-135m-instruct.q4-1-fp16"]
    assert store.debris() == []


def test_a_missing_conversion_library_is_one_line_with_the_fix(home: Path, smollm_gguf: Path) -> None:
    # As in an install without the [convert] extra: importing nncf raises ImportError.
    code = (
        "import sys; sys.modules['nncf'] = None; from npu_engine.convert_cli import main; "
        f"sys.exit(main(['--quiet', {str(smollm_gguf)!r}]))"
    )
    env = {**os.environ, "NPU_ENGINE_HOME": str(home)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=90)
    assert_user_error(result, 6, "needs the libraries of npu-engine's [convert] extra, and nncf could not be")
    assert "pip install 'npu-engine[convert]'" in result.stderr
    assert_store_clean(home)
