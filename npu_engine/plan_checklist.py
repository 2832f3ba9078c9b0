"""`npu-engine plan` as a checklist: per tier, where it runs and why, whether its model is
converted here (and for which device), the memory it needs and whether that fits, and, when it is
not converted, the command that converts it with the memory, disk and time that takes here.

Built from what the planner decided and what the converter estimates; it reads no file."""

from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from npu_engine.catalog import Catalog
from npu_engine.conversion_needs import conversion_needs
from npu_engine.convert import ConversionPlan
from npu_engine.files import human_bytes
from npu_engine.manifest import Manifest
from npu_engine.planner import Planner
from npu_engine.readiness import HUB, PACKAGES, ProfileChoice, in_ollama_store
from npu_engine.recipes import DeviceClass
from npu_engine.scheduler import Plan, TierPlacement

GB = 1e9

# The conversions a tier needs on a device kind (its model and draft), as `npu-convert tier
# --dry-run` plans them from the catalog.
TierConversions = Callable[[str, DeviceClass], list[ConversionPlan]]


@dataclass(frozen=True)
class Conversion:
    """One conversion still to do, and what it takes here."""

    command: str
    source: str  # where the weights come from, in words that say what network it needs
    needs_model_hub: bool
    peak_memory: int
    disk: int
    output: int
    seconds: float | None
    problems: tuple[str, ...]
    disk_known: bool = True  # a described machine's disk is not described

    def words(self) -> str:
        took = (
            f", about {_minutes(self.seconds)} on 2 cores"
            if self.seconds is not None
            else ", time not measured"
        )
        fits = "; does not fit: " + "; ".join(self.problems) if self.problems else "; fits"
        if not self.disk_known and not self.problems:
            fits += " in memory (its disk is not described)"
        return (
            f"{self.command} ({self.source}): about {human_bytes(self.peak_memory)} of memory and "
            f"{human_bytes(self.disk)} of disk at its peak{took}{fits}"
        )


@dataclass(frozen=True)
class Converted:
    name: str
    recipe: str
    device: str
    size: int


@dataclass(frozen=True)
class TierCheck:
    """One tier of the checklist."""

    tier: str
    model: str
    device: str | None
    ready: bool
    remote: str | None  # the server remote-tiers.json places it on
    remote_first: bool
    converted: tuple[Converted, ...]
    memory_bytes: int
    resident: bool
    reason: str
    fallback: tuple[str, ...]
    cpu_backend: str | None
    conversions: tuple[Conversion, ...]
    from_gguf: Conversion | None  # the bounded path from a GGUF, when the catalog's source is not one

    def lines(self) -> list[str]:
        state = "ready" if self.ready else "NOT CONVERTED here"
        if not self.ready and self.remote is not None:
            state += f", answered by {self.remote}"
        where = f"{self.remote} (remote)" if self.remote_first else self.device or "no local device"
        lines = [f"  {self.tier:7} {self.model} on {where}: {state}"]
        pad = " " * 10
        lines += [
            f"{pad}converted: {c.name} ({c.recipe} for {c.device}, {human_bytes(c.size)})"
            for c in self.converted
        ]
        if self.device is not None:
            beside = (
                "fits beside the tiers above" if self.resident else "loads on demand, not beside the others"
            )
            lines.append(f"{pad}memory: {human_bytes(self.memory_bytes)} with its KV cache; {beside}")
        lines += [f"{pad}convert: {c.words()}" for c in self.conversions]
        if self.from_gguf is not None:
            lines.append(f"{pad}or from a GGUF of it, on the bounded path: {self.from_gguf.words()}")
        lines.append(f"{pad}why: {self.reason}")
        if self.cpu_backend is not None:
            lines.append(f"{pad}CPU backend: {self.cpu_backend}")
        lines.append(f"{pad}fallback: {' -> '.join(self.fallback) or 'none'}")
        return lines


@dataclass(frozen=True)
class Checklist:
    profile: ProfileChoice
    plan: Plan
    tiers: tuple[TierCheck, ...]

    def text(self) -> str:
        plan = self.plan
        head = (
            f"Plan for {plan.inventory.description}: {plan.system_used / GB:.1f} of "
            f"{plan.system_budget / GB:.1f} GB of system memory planned, "
            + ("with speeds measured here (npu-bench)." if plan.measured else "with no speeds measured here.")
        )
        missing = [t.tier for t in self.tiers if not t.ready]
        tail = (
            f"Not converted here: {', '.join(missing)}. The commands above convert them."
            if missing
            else "Every tier is converted here."
        )
        lines = [self.profile.line(), head]
        for tier in self.tiers:
            lines += tier.lines()
        return "\n".join([*lines, tail])

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": asdict(self.profile),
            "machine": self.plan.inventory.description,
            "memory_planned_bytes": self.plan.system_used,
            "memory_budget_bytes": self.plan.system_budget,
            "measured": self.plan.measured,
            "tiers": [asdict(tier) for tier in self.tiers],
        }


def checklist(
    choice: ProfileChoice,
    planner: Planner,
    manifests: Sequence[Manifest],
    conversions: TierConversions,
    cpu_backend: Callable[[TierPlacement], str | None],
    ollama_names: Collection[str] = (),
    disk_known: bool = True,
) -> Checklist:
    """The checklist of `planner`'s profile on its machine, given the converted `manifests`,
    the conversions each tier would need and the models in Ollama's store (`ollama_names`)."""
    plan = planner.plan(manifests)
    readiness = {r.tier: r for r in planner.readiness(manifests)}
    tiers = []
    for placement in plan.placements:
        ready = readiness[placement.tier]
        kind: DeviceClass = (
            planner.inventory.device(placement.device).kind if placement.device is not None else "cpu"
        )
        todo = [] if kind in ready.conversions else conversions(placement.tier, kind)
        tiers.append(
            TierCheck(
                tier=placement.tier,
                model=placement.model,
                device=placement.device,
                ready=ready.ready,
                remote=placement.remote,
                remote_first=placement.remote_first,
                converted=tuple(
                    Converted(m.name, m.recipe.name, kind.upper(), m.size)
                    for kind, m in ready.conversions.items()
                ),
                memory_bytes=placement.memory_bytes,
                resident=placement.resident,
                reason=placement.reason,
                fallback=placement.fallback,
                cpu_backend=cpu_backend(placement),
                conversions=tuple(_conversion(plan, disk_known) for plan in todo if not plan.done),
                from_gguf=_from_gguf(todo, planner.catalog, ollama_names, disk_known),
            )
        )
    return Checklist(choice, plan, tuple(tiers))


def _conversion(plan: ConversionPlan, disk_known: bool) -> Conversion:
    hub = plan.source.startswith("hf:")
    return Conversion(
        command=f"npu-convert {plan.source} --device {plan.device}",
        source=HUB if hub else PACKAGES if plan.source.startswith("pkg:") else "offline",
        needs_model_hub=hub,
        disk_known=disk_known,
        peak_memory=plan.needs.peak_memory,
        disk=plan.needs.disk,
        output=plan.needs.output,
        seconds=plan.needs.seconds,
        problems=tuple(plan.problems()),
    )


def _from_gguf(
    todo: Collection[ConversionPlan], catalog: Catalog, ollama_names: Collection[str], disk_known: bool
) -> Conversion | None:
    """The tier's model from its GGUF in Ollama's store on the bounded path (pulled first when
    the store lacks it), when the catalog's own source for it is a Hugging Face model (the float
    path, costlier)."""
    model_plan = next(iter(todo), None)
    if model_plan is None or model_plan.done or model_plan.source_format != "hf":
        return None
    model = next((m for m in catalog.models.values() if f"hf:{m.hf}" == model_plan.source), None)
    if model is None or model.ollama is None:
        return None
    stored = in_ollama_store(model.ollama, ollama_names)
    recipe = replace(model_plan.recipe, path="gguf-direct")
    needs = conversion_needs(model_plan.weights, "gguf", recipe)
    bounded = replace(model_plan, needs=needs, recipe=recipe)
    return Conversion(
        command=("" if stored else f"ollama pull {model.ollama} && ")
        + f"npu-convert ollama:{model.ollama} --device {model_plan.device}",
        source="from your Ollama store: offline" if stored else "ollama pull downloads it: needs the network",
        needs_model_hub=not stored,
        disk_known=disk_known,
        peak_memory=needs.peak_memory,
        disk=needs.disk,
        output=needs.output,
        seconds=needs.seconds,
        problems=tuple(bounded.problems()),
    )


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
