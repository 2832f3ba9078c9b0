"""The doctor's Ollama checks: its model store (an `ollama:` source for npu-convert) and its server
(the engine's last fallback, and npu-bench's baseline). Neither is needed: absent is a note."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from npu_engine.doctor_report import Finding
from npu_engine.sources.ollama import installed_models


@dataclass(frozen=True)
class OllamaServer:
    """What answered at `url`: Ollama's `version`, or None with `problem` saying what happened."""

    url: str
    version: str | None
    problem: str = ""


OllamaProbe = Callable[[str], OllamaServer]


def probe_ollama(url: str, timeout: float = 1.0) -> OllamaServer:
    """Ask `url` for Ollama's version (GET /api/version), giving up after `timeout` seconds."""
    try:
        response = httpx.get(f"{url}/api/version", timeout=timeout)
    except httpx.TimeoutException:
        return OllamaServer(url, None, f"no answer within {timeout:g} s")
    except (httpx.HTTPError, httpx.InvalidURL) as error:
        return OllamaServer(url, None, " ".join(str(error).split()) or type(error).__name__)
    try:
        version = response.json()["version"] if response.status_code == 200 else None
    except (ValueError, KeyError, TypeError):
        version = None
    if not isinstance(version, str):
        return OllamaServer(url, None, f"it answers HTTP {response.status_code}, not as Ollama")
    return OllamaServer(url, version)


def ollama_findings(models: Path, url: str, probe: OllamaProbe) -> list[Finding]:
    return [_store(models), _server(probe(url))]


def _store(models: Path) -> Finding:
    if not models.is_dir():
        return Finding(
            "ollama",
            "note",
            f"no Ollama model store at {models} (only `ollama:` sources need one; OLLAMA_MODELS names it)",
        )
    names = installed_models(models)
    listed = ": " + ", ".join(names[:5]) + (", ..." if len(names) > 5 else "") if names else ""
    return Finding(
        "ollama",
        "ok",
        f"Ollama model store at {models}: {len(names)} model{'' if len(names) == 1 else 's'}{listed}",
    )


def _server(server: OllamaServer) -> Finding:
    if server.version is None:
        return Finding(
            "ollama",
            "note",
            f"no Ollama server at {server.url} ({server.problem}): the Ollama fallback and "
            "npu-bench's Ollama baseline are off (OLLAMA_HOST names another server)",
        )
    return Finding("ollama", "ok", f"Ollama {server.version} answers at {server.url}")
