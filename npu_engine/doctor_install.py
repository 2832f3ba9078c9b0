"""The doctor's install checks: OpenVINO's three packages built for one release, the conversion's
packages (an extra), the torch/torchvision pairing as a conversion sees it, and llama.cpp."""

import platform
import re
import subprocess
from collections.abc import Callable

from npu_engine.doctor_report import Finding
from npu_engine.torch_stack import TorchStack

VersionLookup = Callable[[str], str | None]

RUNTIME = ("openvino", "openvino-genai", "openvino-tokenizers")
CONVERSION = ("torch", "optimum-intel", "transformers", "nncf")
SETUP = "pip install -e . (in the npu-engine checkout) or scripts/setup.sh"
CONVERT_SETUP = "pip install -e .[convert] or scripts/setup.sh"
BENCH_SETUP = "pip install -e .[bench] or scripts/setup.sh"
_RELEASE = re.compile(r"\d+(?:\.\d+)*")


def install_findings(versions: VersionLookup, torch_stack: Callable[[], TorchStack]) -> list[Finding]:
    """What is installed of what npu-engine runs and converts with, and what does not fit together."""
    return [*_runtime(versions), *_conversion(versions, torch_stack), _llama_cpp(versions)]


def _runtime(versions: VersionLookup) -> list[Finding]:
    found = {name: versions(name) for name in RUNTIME}
    missing = [name for name, version in found.items() if version is None]
    if missing:
        return [Finding("install", "fix", f"{', '.join(missing)} not installed: no model can run", SETUP)]
    listed = ", ".join(f"{name} {version}" for name, version in found.items())
    # GenAI and the tokenizers are built against one OpenVINO release (year.minor.patch); their
    # own fourth number is theirs. Mixed releases fail at load with undefined symbols.
    if len({_release(version) for version in found.values() if version}) > 1:
        return [Finding("install", "fix", f"{listed} are not one OpenVINO release", SETUP)]
    where = f"npu-engine {versions('npu-engine') or '(not installed)'}, Python {platform.python_version()}"
    return [Finding("install", "ok", f"{listed} ({where})")]


def _release(version: str) -> tuple[int, ...]:
    matched = _RELEASE.match(version)
    numbers = [int(part) for part in matched.group().split(".")] if matched else []
    return tuple([*numbers, 0, 0, 0][:3])


def _conversion(versions: VersionLookup, torch_stack: Callable[[], TorchStack]) -> list[Finding]:
    found = {name: versions(name) for name in CONVERSION}
    missing = [name for name, version in found.items() if version is None]
    if len(missing) == len(found):
        return [
            Finding("install", "note", "not installed: conversion needs the [convert] extra", CONVERT_SETUP)
        ]
    if missing:
        return [
            Finding(
                "install",
                "fix",
                f"{', '.join(missing)} not installed beside the rest of the conversion: conversions fail",
                CONVERT_SETUP,
            )
        ]
    listed = ", ".join(f"{name} {version}" for name, version in found.items())
    return [Finding("install", "ok", f"conversion: {listed}"), *_torchvision(versions, torch_stack)]


def _torchvision(versions: VersionLookup, torch_stack: Callable[[], TorchStack]) -> list[Finding]:
    vision, torch = versions("torchvision"), versions("torch")
    if vision is None:
        return []  # optimum-intel declares it, transformers does without it
    try:
        stack = torch_stack()
    except (OSError, subprocess.SubprocessError, ValueError) as error:
        return [Finding("install", "fix", f"cannot tell whether torchvision {vision} imports: {error}")]
    if stack.hidden:
        built = stack.torchvision_build or "registry's default (CUDA)"
        fix = (
            f"pip install torchvision=={vision.partition('+')[0]}+{stack.torch_build} "
            f"--index-url https://download.pytorch.org/whl/{stack.torch_build}"
            if stack.torch_build
            else "pip uninstall torchvision (nothing npu-engine runs uses it)"
        )
        return [
            Finding(
                "install",
                "note",
                f"torchvision {vision} is the {built} build, torch {torch} the "
                f"{stack.torch_build or 'default'} one: npu-convert hides torchvision, but anything "
                "else here that imports transformers fails",
                fix,
            )
        ]
    if stack.import_error:
        return [
            Finding(
                "install",
                "fix",
                f"torchvision {vision} does not import beside torch {torch} ({stack.import_error}): "
                "transformers imports it, so every conversion fails",
                "pip uninstall torchvision (nothing npu-engine runs uses it)",
            )
        ]
    return [Finding("install", "ok", f"torchvision {vision} imports beside torch {torch}")]


def _llama_cpp(versions: VersionLookup) -> Finding:
    version = versions("llama-cpp-python")
    if version is None:
        return Finding(
            "install",
            "note",
            "llama-cpp-python not installed: no llama.cpp backend on the CPU, no npu-bench baselines",
            BENCH_SETUP,
        )
    return Finding("install", "ok", f"llama-cpp-python {version} (the llama.cpp backend on the CPU)")
