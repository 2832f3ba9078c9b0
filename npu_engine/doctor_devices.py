"""The doctor's device checks: what OpenVINO sees, and on Linux, for an NPU or an Intel GPU it does
not see, which part of the driver stack is missing (device node, kernel module, access, the
user-space driver library OpenVINO's plugin loads)."""

import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from npu_engine.devices import Device, Inventory
from npu_engine.doctor_report import Finding
from npu_engine.files import human_bytes

INTEL = "0x8086"
LIBRARY_DIRS = ("usr/lib/x86_64-linux-gnu", "usr/lib64", "usr/lib", "usr/local/lib", "usr/local/lib64")
NPU_DRIVER = "libze_intel_npu.so"  # Level Zero's NPU driver (intel/linux-npu-driver)
GPU_RUNTIME = "libigdrcl.so"  # Intel's OpenCL runtime (intel/compute-runtime), which the GPU plugin uses
NPU_RELEASES = "https://github.com/intel/linux-npu-driver/releases"
GPU_RELEASES = "https://github.com/intel/compute-runtime/releases"
RENDER_GROUP = "sudo usermod -aG render $USER, then log in again"


@dataclass(frozen=True)
class Host:
    """Where device nodes, sysfs, /proc and driver libraries are looked for: this machine's root,
    or a folder laid out like one."""

    root: Path = Path("/")
    system: str = field(default_factory=platform.system)
    library_dirs: tuple[str, ...] = LIBRARY_DIRS

    def nodes(self, folder: str, prefix: str, vendor_of: str) -> tuple[list[Path], list[Path]]:
        """The device nodes `/folder/prefix*`: those whose sysfs vendor (`/sys/class/<vendor_of>/
        <node>/device/vendor`) is Intel's or cannot be read, and the other vendors'."""
        found = sorted((self.root / folder).glob(f"{prefix}*"))
        intel = [node for node in found if self._vendor(vendor_of, node.name) in (INTEL, None)]
        return intel, [node for node in found if node not in intel]

    def _vendor(self, vendor_of: str, name: str) -> str | None:
        try:
            return (self.root / "sys/class" / vendor_of / name / "device/vendor").read_text().strip()
        except OSError:
            return None

    def kernel_module(self, name: str) -> bool:
        if (self.root / "sys/module" / name).is_dir():
            return True
        try:
            modules = (self.root / "proc/modules").read_text()
        except OSError:
            return False
        return any(line.split(" ", 1)[0] == name for line in modules.splitlines())

    def library(self, name: str) -> Path | None:
        """The first `name` (or `name.N...`) in the library folders."""
        for folder in self.library_dirs:
            found = sorted((self.root / folder).glob(f"{name}*"))
            if found:
                return found[0]
        return None

    def shown(self, path: Path) -> str:
        """`path` as it is on the machine described (absolute from its root)."""
        return "/" + str(path.relative_to(self.root))


def device_findings(discover: Callable[[], Inventory], host: Host) -> list[Finding]:
    """A line per device OpenVINO sees, and for an NPU or Intel GPU it does not, why not."""
    try:
        inventory = discover()
    except Exception as error:  # a broken OpenVINO raises anything from ImportError to RuntimeError
        message = " ".join(str(error).split())
        return [
            Finding("devices", "fix", f"OpenVINO cannot list devices ({type(error).__name__}: {message})")
        ]
    findings = [Finding("devices", "ok", _describe(device)) for device in inventory.devices]
    if not inventory.of_kind("npu"):
        findings.append(_missing_npu(host))
    if not inventory.of_kind("gpu"):
        findings.append(_missing_gpu(host))
    return findings


def _describe(device: Device) -> str:
    parts = [f"{device.name}: {device.full_name}"]
    if device.kind == "gpu":
        parts.append("integrated" if device.integrated else f"discrete, {human_bytes(device.memory_bytes)}")
    if device.driver:
        parts.append(f"driver {device.driver}")
    return ", ".join(parts)


def _missing_npu(host: Host) -> Finding:
    if host.system != "Linux":
        return Finding("devices", "note", "OpenVINO sees no NPU (the driver checks here are for Linux)")
    nodes, _ = host.nodes("dev/accel", "accel", "accel")
    if not nodes:
        module = host.kernel_module("intel_vpu")
        why = "intel_vpu is loaded but found no NPU" if module else "no intel_vpu kernel module"
        return Finding(
            "devices",
            "note",
            f"no NPU: no /dev/accel node, {why} (NPU tiers run on the GPU or CPU; "
            "--emulate-npu runs them through NPUW on the CPU)",
        )
    node = host.shown(nodes[0])
    if not all(os.access(node_path, os.R_OK | os.W_OK) for node_path in nodes):
        return Finding("devices", "fix", f"an NPU is at {node} but you cannot open it", RENDER_GROUP)
    library = host.library(NPU_DRIVER)
    if library is None:
        return Finding(
            "devices",
            "fix",
            f"an NPU is at {node} but its user-space driver ({NPU_DRIVER}) is not installed",
            f"install intel-driver-compiler-npu and intel-level-zero-npu from {NPU_RELEASES}",
        )
    return Finding(
        "devices",
        "fix",
        f"an NPU is at {node} and its driver at {host.shown(library)}, yet OpenVINO does not see it",
        f"dmesg | grep -i vpu (firmware), and a driver release from {NPU_RELEASES} for this OpenVINO",
    )


def _missing_gpu(host: Host) -> Finding:
    if host.system != "Linux":
        return Finding("devices", "note", "OpenVINO sees no GPU (the driver checks here are for Linux)")
    nodes, others = host.nodes("dev/dri", "renderD", "drm")
    if not nodes:
        besides = f" (other vendors' render nodes: {len(others)})" if others else ""
        return Finding("devices", "note", f"no Intel GPU: no Intel /dev/dri/renderD* node{besides}")
    node = host.shown(nodes[0])
    if not all(os.access(node_path, os.R_OK | os.W_OK) for node_path in nodes):
        return Finding("devices", "fix", f"an Intel GPU is at {node} but you cannot open it", RENDER_GROUP)
    library = host.library(GPU_RUNTIME)
    if library is None:
        return Finding(
            "devices",
            "fix",
            f"an Intel GPU is at {node} but its compute runtime ({GPU_RUNTIME}) is not installed",
            f"install intel-opencl-icd (your distribution's, or {GPU_RELEASES})",
        )
    return Finding(
        "devices",
        "fix",
        f"an Intel GPU is at {node} and its runtime at {host.shown(library)}, yet OpenVINO does not see it",
        f"clinfo -l should list it; else a compute-runtime release from {GPU_RELEASES}",
    )
