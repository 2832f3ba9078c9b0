"""What editors read to discover the models before they send a prompt: the Ollama API level the
server implements, `/api/show`'s `model_info` and `capabilities`, and the context each `model`
name accepts (also in `/api/ps` and `/v1/models`).

The context a name accepts is the tier's planned context capped by the model's trained one, as
the device targets enforce it (a longer prompt gets a 400 with both counts); `auto` accepts the
smallest of its tiers'. The model's own trained context is `npu_engine.model_context_length`."""

from typing import Any

from npu_engine.catalog import CatalogModel
from npu_engine.engine import Engine
from npu_engine.server.service import AUTO, Served
from npu_engine.targets import NPU_MAX_PROMPT, NPU_MIN_RESPONSE

# The Ollama API version whose behaviour the Ollama routes implement: a compatibility level that
# clients check (Copilot Chat's Ollama provider refuses servers below 0.6.4), not a claim to be
# Ollama. npu-engine's own version is beside it in /api/version and in /health.
OLLAMA_API_VERSION = "0.6.4"


def _models(engine: Engine, served: Served) -> list[tuple[int, CatalogModel]]:
    """(context this name accepts on that tier, the tier's catalog model) for each tier the name
    may run on: one tier, or every tier for `auto`."""
    tiers = engine.tiers() if served.tier == AUTO else {served.tier: engine.tier(served.tier)}
    found = []
    for spec in tiers.values():
        model = engine.catalog_model(spec.model)
        found.append((min(spec.context, model.context_length), model))
    return found


def served_context(engine: Engine, served: Served) -> int:
    """The longest prompt plus answer, in tokens, this name accepts (see the module's docstring)."""
    return min(context for context, _ in _models(engine, served))


def loaded_context(engine: Engine, model: str, device: str) -> int:
    """The context a loaded converted model serves on a device: the most any tier of it accepts,
    within the NPU's static shape there."""
    contexts = [
        min(spec.context, engine.catalog_model(spec.model).context_length)
        for spec in (*engine.tiers().values(), *engine.embedding_tiers().values())
        if spec.model == model
    ]
    context = max(contexts, default=0)
    if device.upper().startswith("NPU"):
        context = min(context, NPU_MAX_PROMPT + NPU_MIN_RESPONSE)
    return context


def capabilities(engine: Engine, served: Served) -> list[str]:
    """Ollama's capability names for what a `model` name can do (from its family in the catalog:
    completion, tools, insert, thinking); for `auto`, what every one of its tiers can do."""
    per_tier = [model.family.capabilities() for _, model in _models(engine, served)]
    return [name for name in per_tier[0] if all(name in each for each in per_tier)]


def model_info(engine: Engine, served: Served) -> dict[str, Any]:
    """`/api/show`'s `model_info`, with the keys editors read: `general.architecture`,
    `general.basename`, `general.parameter_count`, `<arch>.context_length` (the context this name
    accepts) and `<arch>.embedding_length`, then npu-engine's own."""
    models = _models(engine, served)
    architectures = {model.architecture for _, model in models}
    model = models[0][1]
    arch = architectures.pop() if len(architectures) == 1 else "mixed"
    manifest = served.manifest
    return {
        "general.architecture": arch,
        "general.basename": _basename(model) if served.tier != AUTO else AUTO,
        "general.parameter_count": manifest.parameters if manifest else model.parameters,
        f"{arch}.context_length": served_context(engine, served),
        f"{arch}.embedding_length": model.embedding_length,
        "npu_engine.tier": served.tier,
        "npu_engine.model": model.name if served.tier != AUTO else "",
        "npu_engine.recipe": manifest.recipe.name if manifest else "",
        "npu_engine.converted": manifest is not None,
        "npu_engine.model_context_length": min(m.context_length for _, m in models),
    }


def _basename(model: CatalogModel) -> str:
    """The model's own name as its publisher spells it (the Hugging Face repository's)."""
    return model.hf.rsplit("/", 1)[-1] if model.hf else model.name
