"""What devices a machine has: discovered through OpenVINO, or read from a file describing a machine.

Only this module and the OpenVINO backend import openvino.
"""

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil

from npu_engine.errors import UserInputError

DeviceKind = Literal["npu", "gpu", "cpu"]
DEVICE_KINDS: tuple[DeviceKind, ...] = ("npu", "gpu", "cpu")
GB = 1 << 30


@dataclass(frozen=True)
class Device:
    """One OpenVINO device: `name` is the device string (`NPU`, `GPU.0`, `CPU`).

    `memory_bytes` is what the device can hold: system RAM for the CPU and for integrated parts
    (which share it), the card's own memory for a discrete GPU.
    """

    name: str
    kind: DeviceKind
    full_name: str
    memory_bytes: int
    integrated: bool
    architecture: str = ""
    driver: str = ""

    @property
    def shares_system_memory(self) -> bool:
        return self.integrated


@dataclass(frozen=True)
class Inventory:
    """A machine: its devices (NPU first, then GPUs, then the CPU) and its RAM."""

    description: str
    memory_bytes: int
    cpu_cores: int
    devices: tuple[Device, ...] = field(default_factory=tuple)

    def of_kind(self, kind: DeviceKind) -> list[Device]:
        return [device for device in self.devices if device.kind == kind]

    def device(self, name: str) -> Device:
        for device in self.devices:
            if device.name == name:
                return device
        raise UserInputError(f"no device {name!r} here (devices: {', '.join(d.name for d in self.devices)})")


def _openvino_core() -> Any:
    import openvino as ov

    return ov.Core()


def _sorted(devices: list[Device]) -> tuple[Device, ...]:
    order = {"npu": 0, "gpu": 1, "cpu": 2}
    return tuple(sorted(devices, key=lambda device: (order[device.kind], device.name)))


def discover(core_factory: Callable[[], Any] = _openvino_core) -> Inventory:
    """The devices OpenVINO sees on this machine."""
    core = core_factory()
    ram = int(psutil.virtual_memory().total)
    found = []
    for name in core.available_devices:
        base = name.split(".")[0]
        if base not in ("NPU", "GPU", "CPU"):
            continue
        kind: DeviceKind = "npu" if base == "NPU" else "gpu" if base == "GPU" else "cpu"
        integrated = kind != "gpu" or str(
            _property(core, name, "DEVICE_TYPE", "integrated")
        ).lower().startswith("int")
        memory = ram
        if kind == "gpu" and not integrated:
            memory = int(_property(core, name, "GPU_DEVICE_TOTAL_MEM_SIZE", ram))
        found.append(
            Device(
                name=name,
                kind=kind,
                full_name=str(_property(core, name, "FULL_DEVICE_NAME", name)),
                memory_bytes=memory,
                integrated=integrated,
                architecture=str(_property(core, name, "DEVICE_ARCHITECTURE", "")),
                driver=str(_property(core, name, "NPU_DRIVER_VERSION", "")),
            )
        )
    cpu = next((d.full_name for d in found if d.kind == "cpu"), "CPU")
    return Inventory(f"this machine ({cpu})", ram, os.cpu_count() or 1, _sorted(found))


def read_inventory(path: Path) -> Inventory:
    """A machine described in JSON: {"description", "memory_gb", "cpu_cores", "devices": [...]},
    each device {"name", "kind", "full_name", "integrated", "memory_gb" (discrete GPUs)}."""
    try:
        raw = json.loads(path.read_text("utf-8"))
        memory = int(float(raw["memory_gb"]) * GB)
        devices = []
        for entry in raw["devices"]:
            kind = entry["kind"]
            if kind not in DEVICE_KINDS:
                raise ValueError(f"device kind {kind!r} is not one of npu, gpu, cpu")
            integrated = bool(entry.get("integrated", True))
            own = int(float(entry["memory_gb"]) * GB) if "memory_gb" in entry else memory
            devices.append(
                Device(
                    name=entry["name"],
                    kind=kind,
                    full_name=entry.get("full_name", entry["name"]),
                    memory_bytes=memory if integrated else own,
                    integrated=integrated,
                    architecture=entry.get("architecture", ""),
                    driver=entry.get("driver", ""),
                )
            )
        return Inventory(
            raw.get("description", path.stem), memory, int(raw.get("cpu_cores", 1)), _sorted(devices)
        )
    except OSError as error:
        raise UserInputError(f"cannot read inventory {path}: {error.strerror}") from None
    except (ValueError, KeyError, TypeError) as error:
        raise UserInputError(f"invalid inventory {path}: {error}") from None


def _property(core: Any, device: str, key: str, default: object) -> Any:
    try:
        return core.get_property(device, key)
    except Exception:  # a plugin that lacks a property raises a generic RuntimeError
        return default
