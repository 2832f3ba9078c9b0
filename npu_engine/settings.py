"""Settings read from the environment, through getters called when needed, never at import."""

import os
from pathlib import Path


def engine_home() -> Path:
    """The model store root: `$NPU_ENGINE_HOME`, else `$XDG_CACHE_HOME/npu-engine`, else ~/.cache."""
    explicit = os.environ.get("NPU_ENGINE_HOME")
    if explicit:
        return Path(explicit).expanduser()
    return user_cache_home() / "npu-engine"


def user_cache_home() -> Path:
    """`$XDG_CACHE_HOME`, else ~/.cache."""
    return Path(os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")).expanduser()


def compiled_cache_setting() -> Path | None:
    """`$NPU_ENGINE_COMPILED_CACHE`: where OpenVINO's compiled models go, when set (see ModelStore)."""
    explicit = os.environ.get("NPU_ENGINE_COMPILED_CACHE")
    return Path(explicit).expanduser() if explicit else None


def ollama_models_dir() -> Path:
    """Ollama's model store: `$OLLAMA_MODELS`, else ~/.ollama/models."""
    explicit = os.environ.get("OLLAMA_MODELS")
    if explicit:
        return Path(explicit).expanduser()
    return Path.home() / ".ollama" / "models"


def catalog_profile() -> str:
    """The catalog profile a tool that does not choose one from the store uses when none is named:
    `$NPU_ENGINE_PROFILE`, else `plan` (npu-engine chooses: see readiness.choose_profile)."""
    return profile_setting() or "plan"


def profile_setting() -> str | None:
    """`$NPU_ENGINE_PROFILE`, None when unset or empty."""
    return os.environ.get("NPU_ENGINE_PROFILE") or None


def ollama_host() -> str | None:
    """`$OLLAMA_HOST`, as Ollama itself reads it."""
    return os.environ.get("OLLAMA_HOST") or None


def openai_fallback() -> tuple[str, str, str | None] | None:
    """The OpenAI-compatible fallback, if configured: (`$NPU_ENGINE_OPENAI_URL`,
    `$NPU_ENGINE_OPENAI_MODEL`, `$NPU_ENGINE_OPENAI_API_KEY`); None unless URL and model are set."""
    url, model = os.environ.get("NPU_ENGINE_OPENAI_URL"), os.environ.get("NPU_ENGINE_OPENAI_MODEL")
    if not url or not model:
        return None
    return url, model, os.environ.get("NPU_ENGINE_OPENAI_API_KEY") or None


def router_rules_path(home: Path) -> Path | None:
    """User router rules: `$NPU_ENGINE_ROUTER_RULES`, else `<home>/router.json` when it exists;
    None means the shipped rules."""
    explicit = os.environ.get("NPU_ENGINE_ROUTER_RULES")
    if explicit:
        return Path(explicit).expanduser()
    found = home / "router.json"
    return found if found.is_file() else None


def api_key_setting() -> str | None:
    """The server's API key from `$NPU_ENGINE_API_KEY` (None: no key required)."""
    return os.environ.get("NPU_ENGINE_API_KEY") or None
