"""What can answer here: which tiers of a profile have a model converted for a device of this
machine, the profile to use when none is named, and the ways out when a tier has no model.

Nothing here reads a file: the converted models, the device kinds and the Ollama store's model
names are passed in."""

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from npu_engine.catalog import Catalog, Profile
from npu_engine.demands import manifest_for
from npu_engine.devices import DeviceKind
from npu_engine.manifest import Manifest
from npu_engine.recipes import RecipeBook

# The tier `npu-engine run` and `chat` answer on when none is named: a profile whose code tier
# cannot answer is no default, however much else of it is converted.
DEFAULT_TIER = "code"
# A described machine (`plan --inventory`) and a profile named nowhere fall back to the catalog's
# seed plan.
SEED_PROFILE = "plan"


@dataclass(frozen=True)
class TierReadiness:
    """A tier of a profile and the converted models that run it on this machine's device kinds."""

    tier: str
    model: str
    conversions: dict[DeviceKind, Manifest]

    @property
    def ready(self) -> bool:
        return bool(self.conversions)


@dataclass(frozen=True)
class TierCommand:
    """The command that converts a tier's models, and where they come from, in words that say
    what network it needs."""

    command: str
    source: str
    needs_hub: bool

    def words(self) -> str:
        return f"{self.command} ({self.source})"


PACKAGES = "from registry packages: PyPI, no model hub"
HUB = "downloads from the model hub: needs the network"


def tier_command(tier: str, profile: Profile, catalog: Catalog, device: str | None = None) -> TierCommand:
    """`npu-convert tier` for `tier` of `profile` (on `device` when named): from registry
    packages when every model it converts ships in them, else from the hub."""
    spec = profile.tier(tier)
    models = [spec.model] + ([spec.draft] if spec.draft else [])
    packaged = all(catalog.model(model).packaged is not None for model in models)
    command = f"npu-convert tier {tier} --profile {profile.name}" + (f" --device {device}" if device else "")
    return TierCommand(command, PACKAGES if packaged else HUB, not packaged)


@dataclass(frozen=True)
class ProfileChoice:
    """The profile the engine runs and why, in words for the user's first line."""

    name: str
    why: str

    def line(self) -> str:
        return f"[profile {self.name}: {self.why}]"


def tier_readiness(
    profile: Profile,
    catalog: Catalog,
    recipes: RecipeBook,
    manifests: Sequence[Manifest],
    kinds: Collection[DeviceKind],
) -> list[TierReadiness]:
    """Each tier of `profile`, with the conversion that would run it on each of `kinds`."""
    found = []
    for spec in profile.tiers.values():
        conversions = {}
        for kind in kinds:
            manifest = manifest_for(list(manifests), spec.model, kind, recipes)
            if manifest is not None:
                conversions[kind] = manifest
        found.append(TierReadiness(spec.tier, spec.model, conversions))
    return found


def choose_profile(
    asked: str | None,
    environment: str | None,
    catalog: Catalog,
    recipes: RecipeBook,
    manifests: Sequence[Manifest],
    kinds: Collection[DeviceKind],
) -> ProfileChoice:
    """`--profile` (`asked`), else `$NPU_ENGINE_PROFILE` (`environment`), else from what is
    converted here: the first profile in the catalog whose code tier can answer on this machine;
    else the first with any chat tier that can; else, with nothing converted, the first whose
    models all ship in registry packages (they convert offline)."""
    if asked:
        catalog.profile(asked)
        return ProfileChoice(asked, "named with --profile")
    if environment:
        catalog.profile(environment)
        return ProfileChoice(environment, "named by $NPU_ENGINE_PROFILE")
    ready = {
        name: [r for r in tier_readiness(profile, catalog, recipes, manifests, kinds) if _chats(catalog, r)]
        for name, profile in catalog.profiles.items()
    }
    for name, tiers in ready.items():
        if any(r.tier == DEFAULT_TIER and r.ready for r in tiers):
            return ProfileChoice(name, _converted_words(tiers) + _passed_over(ready, name))
    for name, tiers in ready.items():
        if any(r.ready for r in tiers):
            return ProfileChoice(name, _converted_words(tiers) + "; no profile has its code tier converted")
    for name, profile in catalog.profiles.items():
        if all(catalog.model(spec.model).packaged is not None for spec in profile.tiers.values()):
            return ProfileChoice(
                name,
                "nothing is converted here yet, and this profile's models ship in registry packages: "
                f"`npu-convert tier {DEFAULT_TIER} --profile {name}` converts its code tier with no "
                "model hub (PyPI only)",
            )
    return ProfileChoice(SEED_PROFILE, "nothing is converted here yet; the catalog's seed plan")


def ways_out(
    tier: str,
    profile: Profile,
    catalog: Catalog,
    recipes: RecipeBook,
    manifests: Sequence[Manifest],
    kinds: Collection[DeviceKind],
    ollama_names: Collection[str],
) -> list[str]:
    """Every way to get an answer for `tier` of `profile` that works on this machine, one line
    each: another profile that answers here, the model from registry packages or the Ollama
    store, and (said so) the ways that need the network."""
    model = catalog.model(profile.tier(tier).model)
    others = {
        name: spec
        for name, other in catalog.profiles.items()
        if name != profile.name
        for spec in [other.tiers.get(tier)]
        if spec is not None
    }
    answering = [
        name
        for name in others
        if any(
            r.tier == tier and r.ready
            for r in tier_readiness(catalog.profile(name), catalog, recipes, manifests, kinds)
        )
    ]
    found = [f"use a profile whose {tier} tier is converted here: --profile {name}" for name in answering]
    if model.packaged is not None:
        found.append(
            f"convert {model.name} from registry packages (PyPI, no model hub): "
            f"{tier_command(tier, profile, catalog).command}"
        )
    if model.ollama is not None and in_ollama_store(model.ollama, ollama_names):
        found.append(f"convert it from your Ollama store (offline): npu-convert ollama:{model.ollama}")
    found += [
        f"use profile {name}, whose {tier} model ships in registry packages (PyPI, no model hub): "
        f"{tier_command(tier, catalog.profile(name), catalog).command}, then --profile {name}"
        for name, spec in others.items()
        if name not in answering and catalog.model(spec.model).packaged is not None
    ]
    if model.hf is not None:
        found.append(f"download and convert it (needs the network): npu-convert hf:{model.hf}")
    if model.ollama is not None:
        found.append(
            f"let Ollama answer (needs it running; pulling needs the network): ollama pull {model.ollama}"
        )
    return found


def _chats(catalog: Catalog, readiness: TierReadiness) -> bool:
    return not catalog.model(readiness.model).family.embedding


def _converted_words(tiers: Sequence[TierReadiness]) -> str:
    ready = [r.tier for r in tiers if r.ready]
    return f"{len(ready)} of {len(tiers)} chat tiers converted here ({', '.join(ready)})"


def _passed_over(ready: dict[str, list[TierReadiness]], chosen: str) -> str:
    """Why the profiles before `chosen` in the catalog were not chosen."""
    before = []
    for name, tiers in ready.items():
        if name == chosen:
            break
        code = next((r for r in tiers if r.tier == DEFAULT_TIER), None)
        if code is not None:
            before.append(f"{name}'s code model {code.model} is not converted")
    return "; " + "; ".join(before) if before else ""


def in_ollama_store(tag: str, names: Collection[str]) -> bool:
    """Whether Ollama's store holds `tag` (`model:tag`, `:latest` when it names none)."""
    return (tag if ":" in tag else f"{tag}:latest") in names
