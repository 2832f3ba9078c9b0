"""What OpenVINO devices this machine has. Only this module and the OpenVINO backend import openvino."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import psutil

DeviceKind = Literal["npu", "gpu", "cpu"]


@dataclass(frozen=True)
class Device:
    """One OpenVINO device: `name` is the device string (`NPU`, `GPU.0`, `CPU`)."""

    name: str
    kind: DeviceKind
    full_name: str
    memory_bytes: int
    integrated: bool


def _openvino_core() -> Any:
    import openvino as ov

    return ov.Core()


def discover(core_factory: Callable[[], Any] = _openvino_core) -> list[Device]:
    """The devices OpenVINO sees, NPU first, then GPUs, then the CPU."""
    core = core_factory()
    ram = int(psutil.virtual_memory().total)
    found = []
    for name in core.available_devices:
        base = name.split(".")[0]
        if base not in ("NPU", "GPU", "CPU"):
            continue
        kind: DeviceKind = "npu" if base == "NPU" else "gpu" if base == "GPU" else "cpu"
        full_name = str(_property(core, name, "FULL_DEVICE_NAME", name))
        integrated = kind != "gpu" or str(
            _property(core, name, "DEVICE_TYPE", "integrated")
        ).lower().startswith("int")
        memory = ram
        if kind == "gpu":
            memory = int(_property(core, name, "GPU_DEVICE_TOTAL_MEM_SIZE", ram))
        elif kind == "npu":
            memory = int(_property(core, name, "NPU_DEVICE_TOTAL_MEM_SIZE", ram))
        found.append(Device(name, kind, full_name, memory, integrated))
    order = {"npu": 0, "gpu": 1, "cpu": 2}
    return sorted(found, key=lambda device: (order[device.kind], device.name))


def _property(core: Any, device: str, key: str, default: object) -> Any:
    try:
        return core.get_property(device, key)
    except Exception:  # a plugin that lacks a property raises a generic RuntimeError
        return default
