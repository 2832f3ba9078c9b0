"""The device profile: what `npu-bench` measured on this machine, read back by the scheduler and
the engine so that plans and decoding modes follow measurements rather than defaults."""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from npu_engine.errors import UserInputError
from npu_engine.files import write_text_atomically
from npu_engine.scheduler import Measurement

PROFILE_NAME = "device-profile.json"


@dataclass(frozen=True)
class DeviceProfile:
    machine: str
    created: str
    measurements: tuple[Measurement, ...]


def profile_path(home: Path) -> Path:
    return home / PROFILE_NAME


def read_profile(path: Path) -> DeviceProfile | None:
    """The profile at `path`, None when there is none; UserInputError when it is unreadable."""
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text("utf-8"))
        measurements = tuple(Measurement(**entry) for entry in raw["measurements"])
        return DeviceProfile(raw["machine"], raw["created"], measurements)
    except (ValueError, KeyError, TypeError) as error:
        raise UserInputError(
            f"invalid device profile {path}: {error} (re-run npu-bench or delete it)"
        ) from None


def write_profile(path: Path, profile: DeviceProfile) -> None:
    """Write atomically: a reader never sees half a profile."""
    write_text_atomically(path, json.dumps(asdict(profile), indent=2) + "\n")
