"""Tiers placed on a remote OpenAI-compatible server by configuration (a team's OpenVINO Model
Server, vLLM or llama-server), read from `$NPU_ENGINE_HOME/remote-tiers.json`:

    {"tiers": {"review": {"server": "team-ovms", "url": "http://ovms.lan:8000/v1",
                          "model": "qwen2.5-coder-14b", "api_key_env": "TEAM_OVMS_KEY"}}}

Such a tier is a target the planner places like a device, by its measured speed (`npu-bench
speed` measures it as `remote`); the laptop's devices stay in its chain where its model is
converted, and Ollama and the general OpenAI-compatible fallback after them.
"""

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from npu_engine.errors import UserInputError

REMOTE_TIERS_NAME = "remote-tiers.json"
FIELDS = {"server", "url", "model", "api_key_env"}
# A server's name stands beside devices and backends in chains, results, headers and the device
# profile: it must not be one of theirs.
SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RESERVED_NAMES = {"cpu", "gpu", "npu", "openvino", "llama.cpp", "ollama", "openai", "remote", "auto"}


@dataclass(frozen=True)
class RemoteTier:
    """One tier on a remote server: `server` names it in plans and results, `url` is its
    OpenAI-compatible base (with or without /v1), `model` the name it serves the tier's model
    under, and `api_key_env` the environment variable that holds its key, if it wants one."""

    tier: str
    server: str
    url: str
    model: str
    api_key_env: str | None = None

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None if self.api_key_env else None


def remote_tiers_path(home: Path) -> Path:
    return home / REMOTE_TIERS_NAME


def read_remote_tiers(path: Path, tiers: tuple[str, ...]) -> tuple[RemoteTier, ...]:
    """The remote tiers `path` configures (none when it does not exist); UserInputError naming
    the file and what is wrong when it is not such a file or names a tier outside `tiers`."""
    if not path.is_file():
        return ()
    try:
        raw = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as error:
        raise UserInputError(f"{path} is not readable JSON ({error})") from None
    entries = raw.get("tiers") if isinstance(raw, dict) else None
    if not isinstance(entries, dict):
        raise UserInputError(f'{path}: expected {{"tiers": {{TIER: {{"server", "url", "model"}}}}}}')
    return tuple(_tier(path, tier, entry, tiers) for tier, entry in entries.items())


def _tier(path: Path, tier: str, entry: Any, tiers: tuple[str, ...]) -> RemoteTier:
    if tier not in tiers:
        raise UserInputError(f"{path}: {tier!r} is not a tier (tiers: {', '.join(tiers)})")
    if not isinstance(entry, dict) or not all(isinstance(v, str) and v for v in entry.values()):
        raise UserInputError(f"{path}: tier {tier!r} must map to an object of non-empty strings")
    unknown = set(entry) - FIELDS
    if unknown:
        raise UserInputError(f"{path}: tier {tier!r} has unknown fields {', '.join(sorted(unknown))}")
    absent = [name for name in ("server", "url", "model") if name not in entry]
    if absent:
        raise UserInputError(f"{path}: tier {tier!r} needs {', '.join(absent)}")
    name = entry["server"].lower()
    if not SERVER_NAME.fullmatch(name) or name in RESERVED_NAMES or name.split(".")[0] in RESERVED_NAMES:
        raise UserInputError(
            f"{path}: tier {tier!r}: server {entry['server']!r} must be letters, digits, '.', '_' or '-', "
            f"and not one of {', '.join(sorted(RESERVED_NAMES))}"
        )
    if not entry["url"].startswith(("http://", "https://")):
        raise UserInputError(f"{path}: tier {tier!r}: url {entry['url']!r} is not http(s)")
    return RemoteTier(tier, entry["server"], entry["url"], entry["model"], entry.get("api_key_env"))
