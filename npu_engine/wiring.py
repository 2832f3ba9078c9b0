"""What `Engine.from_settings` reads from the environment and the machine, one small function each:
the emulated NPU, the remote fallbacks the settings name, the speeds `npu-bench` measured and the
runtime settings `npu-bench tune` kept."""

from collections.abc import Sequence
from functools import partial

from npu_engine.backends.remote import OllamaBackend, OpenAICompatibleBackend, ollama_base_url
from npu_engine.catalog import TIERS, Catalog
from npu_engine.device_profile import TunedSettings, profile_path, read_profile
from npu_engine.devices import Device, Inventory
from npu_engine.remote_tiers import RemoteTier, read_remote_tiers, remote_tiers_path
from npu_engine.scheduler import OLLAMA, Measurement
from npu_engine.settings import ollama_host, openai_fallback
from npu_engine.store import ModelStore
from npu_engine.targets import RemoteTarget

OPENAI = "openai"


def with_emulated_npu(inventory: Inventory) -> Inventory:
    """The inventory plus an NPU that runs through NPUW on its CPU (for machines without one)."""
    cpu = inventory.of_kind("cpu")[0]
    npu = Device("NPU", "npu", f"NPU emulated on {cpu.full_name}", cpu.memory_bytes, True)
    return Inventory(
        inventory.description, inventory.memory_bytes, inventory.cpu_cores, (npu, *inventory.devices)
    )


def remotes_from_settings(catalog: Catalog) -> list[RemoteTarget]:
    """Ollama at `$OLLAMA_HOST` (the catalog names each model's Ollama tag), then the
    OpenAI-compatible server the settings configure, if any."""
    ollama = OllamaBackend(ollama_base_url(ollama_host()))
    remotes = [RemoteTarget(OLLAMA, ollama, lambda model: catalog.model(model).ollama)]
    configured = openai_fallback()
    if configured is not None:
        url, name, key = configured
        remotes.append(RemoteTarget(OPENAI, OpenAICompatibleBackend(url, key), lambda _model: name))
    return remotes


def configured_remote_tiers(store: ModelStore) -> tuple[RemoteTier, ...]:
    """The tiers remote-tiers.json beside the store places on servers, if any."""
    return read_remote_tiers(remote_tiers_path(store.root), TIERS)


def placed_targets(remote_tiers: Sequence[RemoteTier]) -> dict[str, RemoteTarget]:
    """A target for each tier's server, by tier: its model is the one the file names."""
    return {
        remote.tier: RemoteTarget(
            remote.server,
            OpenAICompatibleBackend(remote.url, remote.api_key()),
            partial(_named, remote.model),
            placed=True,
        )
        for remote in remote_tiers
    }


def _named(name: str, _model: str) -> str | None:
    return name


def measured_speeds(store: ModelStore) -> list[Measurement]:
    """The device profile `npu-bench` wrote beside the store, if any."""
    measured = read_profile(profile_path(store.root))
    return list(measured.measurements) if measured else []


def tuned_settings(store: ModelStore) -> list[TunedSettings]:
    """The runtime settings `npu-bench tune` kept in the device profile, if any."""
    measured = read_profile(profile_path(store.root))
    return list(measured.tuned) if measured else []
