"""What a conversion shows when installed as plain pip installs it: torchvision left beside the CPU
torch (the registry's, built for CUDA torch), no library noise between our lines, no bars in a log;
and a venv made with plain pip as the README says converts SmolLM2 with no extra step."""

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from npu_engine.progress import RichReporter
from npu_engine.torch_stack import build_tag

IMPORTS = (
    "from transformers import CONFIG_MAPPING; CONFIG_MAPPING['llama']; "
    "import optimum.exporters.openvino; print('imported')"
)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_a_torchvision_built_for_another_torch_is_hidden_so_transformers_still_imports() -> None:
    # scripts/setup.sh installs what `pip install -e ".[convert]"` installs, torchvision included.
    assert importlib.metadata.version("torchvision")
    guarded = _python(
        "from npu_engine.torch_stack import hide_mismatched_torchvision as hide; "
        f"hidden = hide(); {IMPORTS}; print('hidden' if hidden else 'kept')"
    )
    assert guarded.returncode == 0, guarded.stderr[-2000:]
    mismatched = build_tag("torchvision") != build_tag("torch")
    assert guarded.stdout.split() == ["imported", "hidden" if mismatched else "kept"]
    if mismatched:  # what every conversion died of before the guard
        bare = _python(IMPORTS)
        assert bare.returncode != 0 and "Could not import module" in bare.stderr


def test_a_step_written_to_a_log_is_one_line_and_what_libraries_print_meanwhile_is_dropped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    reporter = RichReporter()  # stderr is pytest's capture here: not a terminal
    with reporter.step("exporting", total=None):
        print("INFO:nncf:Statistics of the bitwidth distribution")
        sys.stderr.write("Converting and de-quantizing GGUF tensors...:   0%|\n")
        warnings.warn_explicit("Converting a tensor to a Python boolean", UserWarning, "cache_utils.py", 1)
    with reporter.step("hashing", total=10) as advance:
        advance(10)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == ["  exporting: 0s", "  hashing: 0s"]


def test_verbose_shows_what_libraries_print_during_a_step(capsys: pytest.CaptureFixture[str]) -> None:
    reporter = RichReporter(verbose=True)  # npu-convert --verbose
    with reporter.step("exporting", total=None):
        print("INFO:nncf:Statistics of the bitwidth distribution")
        sys.stderr.write("cache_utils.py:1: TracerWarning: Converting a tensor to a Python boolean\n")
    captured = capsys.readouterr()
    assert captured.out == "INFO:nncf:Statistics of the bitwidth distribution\n"
    assert captured.err.splitlines() == [
        "cache_utils.py:1: TracerWarning: Converting a tensor to a Python boolean",
        "  exporting: 0s",
    ]


@pytest.mark.slow
def test_plain_pip_installs_a_converter_whose_log_reads_as_our_lines_only(
    tmp_path: Path, smollm_gguf: Path, plain_pip_bin: Path
) -> None:
    # The venv holds what `pip install -e ".[convert]"` resolved (the registry's torchvision too), no more.
    pip_list = [str(plain_pip_bin / "python"), "-m", "pip", "list", "--format=json"]
    listed = subprocess.run(pip_list, capture_output=True, text=True, check=True)
    names = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert {"torch", "optimum-intel", "nncf", "npu-engine"} <= names and "pytest" not in names
    home = tmp_path / "home"
    (home / "sources").mkdir(parents=True)
    shutil.copy(smollm_gguf, home / "sources" / smollm_gguf.name)
    env = {**os.environ, "NPU_ENGINE_HOME": str(home)}
    done = subprocess.run(
        [str(plain_pip_bin / "npu-convert"), "pkg:smollm2-135m-instruct"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    assert lines[-1].startswith("smollm2-135m-instruct-int8: converted with recipe int8")
    steps = lines[:-1]
    assert steps and all(line.startswith("  ") and line.endswith("s") for line in steps), lines
    assert any("building the IR one weight at a time with recipe int8" in line for line in steps), steps
