"""What each tier of a profile needs from a device, from the catalog and the converted models."""

from npu_engine.catalog import Catalog, Profile
from npu_engine.devices import DEVICE_KINDS, DeviceKind
from npu_engine.manifest import Manifest
from npu_engine.recipes import RecipeBook
from npu_engine.scheduler import TierDemand


def manifest_for(
    manifests: list[Manifest], model: str, kind: DeviceKind, recipes: RecipeBook
) -> Manifest | None:
    """The converted model to run `model` on a device of `kind`: one whose recipe is valid there,
    preferring one converted for that kind, then the kind's default recipe (the one chosen not to
    lose correctness), then the smallest."""
    fitting = [m for m in manifests if m.model == model and kind in m.recipe.devices]
    fitting.sort(
        key=lambda m: (
            m.device != kind,
            m.recipe != recipes.default_for(kind, m.parameters, m.embedding is not None),
            m.size,
        )
    )
    return fitting[0] if fitting else None


def tier_demands(
    profile: Profile, catalog: Catalog, manifests: list[Manifest], recipes: RecipeBook
) -> list[TierDemand]:
    """One TierDemand per tier. A model with conversions in the store can run only where one of
    them is valid; a model not converted at all is planned from estimates of the default recipes."""
    demands = []
    for spec in profile.tiers.values():
        model = catalog.model(spec.model)
        context = min(spec.context, model.context_length)
        converted = [m for m in manifests if m.model == model.name]
        weights: dict[DeviceKind, int] = {}
        missing: dict[DeviceKind, str] = {}
        # An embedding model converts for the CPU and GPU only (see Converter.convert).
        kinds = tuple(k for k in DEVICE_KINDS if k != "npu") if model.family.embedding else DEVICE_KINDS
        for kind in kinds:
            if converted:
                manifest = manifest_for(converted, model.name, kind, recipes)
                if manifest is None:
                    missing[kind] = f"not converted for it (npu-convert tier {spec.tier} --device {kind})"
                else:
                    weights[kind] = manifest.size
            else:
                recipe = recipes.default_for(kind, model.parameters, model.family.embedding)
                weights[kind] = int(model.parameters * recipe.bytes_per_weight)
        demands.append(
            TierDemand(
                tier=spec.tier,
                model=model.name,
                weight_bytes=weights,
                kv_bytes=model.kv_bytes_per_token * context,
                context=context,
                ollama=model.ollama,
                missing=missing,
            )
        )
    return demands
