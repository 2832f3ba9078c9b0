"""`npu-engine doctor`: check the install, the devices, the model store and Ollama, and say what to
fix, one finding per line.

Each area has its module (`doctor_install`, `doctor_devices`, `doctor_store`, `doctor_ollama`);
`diagnose` runs them with the collaborators it is given and gathers a `Report` (`doctor_report`).
Nothing here writes to the store's models: they are checked as the engine checks them at load
(sizes, and each sha256 again only when the file changed since it was last hashed).
"""

from collections.abc import Callable
from pathlib import Path

from npu_engine.devices import Inventory, discover
from npu_engine.doctor_devices import Host, device_findings
from npu_engine.doctor_install import VersionLookup, install_findings
from npu_engine.doctor_ollama import OllamaProbe, ollama_findings, probe_ollama
from npu_engine.doctor_report import Finding, Report
from npu_engine.doctor_store import store_findings
from npu_engine.machine import package_version
from npu_engine.store import ModelStore
from npu_engine.torch_stack import TorchStack, read_torch_stack

__all__ = ["Finding", "Report", "diagnose"]


def diagnose(
    store: ModelStore,
    ollama_models: Path,
    ollama_url: str,
    first_model: str,
    *,
    versions: VersionLookup = package_version,
    torch_stack: Callable[[], TorchStack] = read_torch_stack,
    discover_devices: Callable[[], Inventory] = discover,
    host: Host | None = None,
    probe: OllamaProbe = probe_ollama,
) -> Report:
    """Check everything and return what was found, area by area. `host` is where device nodes,
    kernel modules and driver libraries are looked for (this machine by default); `probe` asks
    the server at `ollama_url` whether it is Ollama; `first_model` is the command that converts a
    first model (see readiness.tier_command), said of an empty store."""
    findings = [
        *install_findings(versions, torch_stack),
        *device_findings(discover_devices, host or Host()),
        *store_findings(store, first_model),
        *ollama_findings(ollama_models, ollama_url, probe),
    ]
    return Report(tuple(findings))
