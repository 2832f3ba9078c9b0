"""The planner: every decision the engine executes, from what it is given. It holds the profile,
the catalog, the recipes, the machine's inventory, the memory budget and the measured speeds, and
answers where each tier runs (the plan), which devices a tier's request tries in turn, which
conversion runs on a device, and which decoding mode a request gets. It reads no file and loads no
model: the converted models are passed in."""

from collections.abc import Sequence

from npu_engine.backends.pipeline_spec import DecodingMode
from npu_engine.catalog import Catalog, Profile, TierSpec
from npu_engine.demands import manifest_for, tier_demands
from npu_engine.devices import Device, DeviceKind, Inventory
from npu_engine.errors import UserInputError
from npu_engine.manifest import Manifest
from npu_engine.recipes import RecipeBook
from npu_engine.request import Decoding
from npu_engine.scheduler import Measurement, Plan, plan


class Planner:
    def __init__(
        self,
        profile: Profile,
        catalog: Catalog,
        recipes: RecipeBook,
        inventory: Inventory,
        memory_budget: int,
        measurements: Sequence[Measurement] = (),
    ) -> None:
        self.profile = profile
        self.catalog = catalog
        self.recipes = recipes
        self.inventory = inventory
        self.memory_budget = memory_budget
        self.measurements = list(measurements)

    def tier(self, tier: str) -> TierSpec:
        """The profile's tier; UserInputError naming the profile's tiers when it has no such tier."""
        return self.profile.tier(tier)

    def plan(self, manifests: Sequence[Manifest]) -> Plan:
        """Where each tier runs, given the converted models."""
        demands = tier_demands(self.profile, self.catalog, list(manifests), self.recipes)
        return plan(self.inventory, demands, self.memory_budget, self.measurements)

    def devices(self, tier: str, manifests: Sequence[Manifest]) -> list[Device]:
        """The devices a request for `tier` tries, in order: where the plan places it, then the
        other devices it fits on."""
        self.tier(tier)
        placement = self.plan(manifests).placement(tier)
        names = ([placement.device] if placement.device else []) + list(placement.fallback_devices)
        return [self.inventory.device(name) for name in names]

    def conversion(self, manifests: Sequence[Manifest], model: str, kind: DeviceKind) -> Manifest | None:
        """The converted model that runs `model` on a device of `kind` (see demands.manifest_for)."""
        return manifest_for(list(manifests), model, kind, self.recipes)

    def kv_bytes(self, tier: str) -> int:
        """The KV cache of the tier's model at the tier's planned context, as the scheduler counts it."""
        spec = self.tier(tier)
        return self.catalog.model(spec.model).kv_bytes_per_token * spec.context

    def decoding(
        self, asked: Decoding, tier: str, device: Device, has_draft: bool, lenient: bool = False
    ) -> DecodingMode:
        """The decoding mode a request runs with on `device`. `auto` is the mode measured fastest;
        an explicit mode the device cannot run is the caller's mistake (UserInputError), unless
        `lenient` (the router's prompt-lookup preference), which decodes plainly instead."""
        if asked == "auto":
            asked = self.fastest_mode(tier, device.kind, has_draft)
        if asked == "speculative":
            if not has_draft or device.kind == "npu":
                raise UserInputError(
                    f"speculative decoding needs a converted draft model on {device.kind.upper()}"
                )
            return "speculative"
        if asked == "prompt_lookup":
            if device.kind == "npu" and lenient:
                return "plain"
            if device.kind == "npu":
                raise UserInputError("prompt-lookup decoding is not available on the NPU")
            return "prompt_lookup"
        return "plain"

    def fastest_mode(self, tier: str, kind: DeviceKind, has_draft: bool) -> Decoding:
        """`auto`: the mode measured fastest for this tier and device kind; plain when unmeasured.

        Prompt lookup pays only when the answer repeats the prompt, so only a request (or the
        router) asks for it; `auto` chooses between plain and speculative."""
        usable = {"plain", "speculative"} if has_draft and kind != "npu" else {"plain"}
        speeds = {
            m.mode: m.tokens_per_second
            for m in self.measurements
            if m.tier == tier and m.device == kind and m.mode in usable
        }
        best = max(speeds, key=lambda mode: speeds[mode], default="plain")
        return "speculative" if best == "speculative" else "plain"
