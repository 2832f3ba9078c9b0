"""The device profile: what `npu-bench` measured on this machine, read back by the scheduler and
the engine so that plans and decoding modes follow measurements rather than defaults."""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from npu_engine.backends.pipeline_spec import CpuSettings, Speculation
from npu_engine.errors import UserInputError
from npu_engine.files import write_text_atomically
from npu_engine.scheduler import Measurement

PROFILE_NAME = "device-profile.json"


@dataclass(frozen=True)
class TunedSettings:
    """What `npu-bench tune` kept for one converted model on one device: the OpenVINO CPU plugin's
    settings, how far speculation and prompt lookup guess, and llama.cpp's threads, each the
    fastest measured that answered every tuning prompt as the defaults did; `why` in words."""

    model: str
    device: str
    cpu: CpuSettings = field(default_factory=CpuSettings)
    speculation: Speculation = field(default_factory=Speculation)
    llama_threads: int | None = None
    why: str = ""


@dataclass(frozen=True)
class DeviceProfile:
    machine: str
    created: str
    measurements: tuple[Measurement, ...]
    tuned: tuple[TunedSettings, ...] = ()

    def tuned_for(self, model: str, device: str) -> TunedSettings | None:
        return next((t for t in self.tuned if t.model == model and t.device == device), None)


def profile_path(home: Path) -> Path:
    return home / PROFILE_NAME


def read_profile(path: Path) -> DeviceProfile | None:
    """The profile at `path`, None when there is none; UserInputError when it is unreadable."""
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text("utf-8"))
        measurements = tuple(_measurement(entry) for entry in raw["measurements"])
        tuned = tuple(_tuned(entry) for entry in raw.get("tuned", ()))
        return DeviceProfile(raw["machine"], raw["created"], measurements, tuned)
    except (ValueError, KeyError, TypeError) as error:
        raise UserInputError(
            f"invalid device profile {path}: {error} (re-run npu-bench or delete it)"
        ) from None


def _tuned(entry: dict[str, Any]) -> TunedSettings:
    return TunedSettings(
        **{
            **entry,
            "cpu": CpuSettings(**entry.get("cpu", {})),
            "speculation": Speculation(**entry.get("speculation", {})),
        }
    )


def write_profile(path: Path, profile: DeviceProfile) -> None:
    """Write atomically: a reader never sees half a profile."""
    write_text_atomically(path, json.dumps(asdict(profile), indent=2) + "\n")


def _measurement(entry: dict[str, Any]) -> Measurement:
    """A measurement as JSON holds it (its per-language pass@1 as lists)."""
    by_language = tuple((str(lang), float(rate)) for lang, rate in entry.get("pass_at_1_by_language", ()))
    return Measurement(**{**entry, "pass_at_1_by_language": by_language})
