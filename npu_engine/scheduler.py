"""The device scheduler: decides where each tier runs, and why. It never loads or runs a model.

Rules it knows:
- the NPU runs only symmetric-INT4 conversions with static shapes, serves one request at a time
  (so it hosts one model), and shares system RAM with the CPU and an integrated GPU;
- a model needs its weights plus its KV cache at the tier's planned context, and every tier kept
  loaded together must fit: one budget for system RAM, one per discrete GPU; a model that serves two
  tiers on one device is counted once;
- a model that fits nowhere is reported, never planned into swap;
- measured speed on this machine, where `npu-bench` has measured it, beats the built-in preferences.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from npu_engine.devices import GB, Device, DeviceKind, Inventory
from npu_engine.remote_tiers import REMOTE_TIERS_NAME

# Built-in preferences, used where nothing was measured.
PREFERENCES: dict[str, tuple[DeviceKind, ...]] = {
    "fast": ("npu", "gpu", "cpu"),
    "code": ("gpu", "npu", "cpu"),
    "large": ("gpu", "cpu", "npu"),
    "review": ("gpu", "cpu", "npu"),
    "embed": ("cpu", "gpu"),
}
WHY_PREFERRED: dict[str, str] = {
    "fast": "small always-on tier: the NPU serves it at low power and leaves the GPU and CPU free",
    "code": "the GPU decodes mid-size INT4 models fastest and batches concurrent requests",
    "large": "the GPU, else the CPU: large models need memory bandwidth and batching more than low power",
    "review": "the GPU, else the CPU: the largest model, rarely used, needs the most memory",
    "embed": "a small embedding model: the CPU runs it well and leaves the GPU to the chat tiers",
}
OLLAMA = "ollama"
RESERVED_BYTES = 8 * GB
# What a measurement was taken on: a kind of device here, or a tier's remote server (whose name
# is the measurement's backend).
MeasuredOn = DeviceKind | Literal["remote"]
REMOTE: MeasuredOn = "remote"


@dataclass(frozen=True)
class TierDemand:
    """What one tier needs. `weight_bytes` holds, per device kind, the size of the model that would
    run there (a converted model's files, or an estimate); a kind absent from it cannot run the tier."""

    tier: str
    model: str
    weight_bytes: dict[DeviceKind, int]
    kv_bytes: int
    context: int
    ollama: str | None = None
    missing: dict[DeviceKind, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Measurement:
    """A device profile entry: a tier's measured decode speed, first-token time and prompt
    (prefill) speed on a device kind, with one decoding mode (plain, speculative, prompt_lookup)
    and one backend (openvino, llama.cpp), and the pass@1 the tier's model scored there on
    bench/tasks (None: not measured), in all and per language. A prefill speed of 0 was not
    measured. A tier's remote server is measured as device `remote`, its backend the server's name."""

    tier: str
    device: MeasuredOn
    tokens_per_second: float
    ttft_ms: float
    mode: str = "plain"
    backend: str = "openvino"
    prompt_tokens_per_second: float = 0.0
    pass_at_1: float | None = None
    # pass@1 per language of bench/tasks (python, javascript, sql, shell), as (language, rate).
    pass_at_1_by_language: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class TierPlacement:
    """Where a tier runs. `fallback_devices` are the other devices it fits on, in order; `ollama`
    is the Ollama model that can answer it when no device can (None: the catalog names none).
    `remote` is the server remote-tiers.json places the tier on (None: none), tried before the
    devices when `remote_first`, after them otherwise."""

    tier: str
    model: str
    device: str | None
    memory_bytes: int
    reason: str
    fallback_devices: tuple[str, ...]
    resident: bool
    ollama: str | None = None
    remote: str | None = None
    remote_first: bool = False

    @property
    def serves(self) -> str | None:
        """What answers first: the remote server or the device."""
        return self.remote if self.remote_first else self.device

    @property
    def fallback(self) -> tuple[str, ...]:
        """The fallback chain as the plan describes it: the devices (the placed one too, when the
        remote goes first), the remote server where it goes last, then Ollama where it can help."""
        if self.remote_first:
            devices = ((self.device,) if self.device else ()) + self.fallback_devices
        else:
            devices = self.fallback_devices + ((self.remote,) if self.remote else ())
        return devices + ((OLLAMA,) if self.ollama else ())


@dataclass(frozen=True)
class Plan:
    inventory: Inventory
    placements: tuple[TierPlacement, ...]
    system_budget: int
    system_used: int
    measured: bool

    def placement(self, tier: str) -> TierPlacement:
        for placement in self.placements:
            if placement.tier == tier:
                return placement
        raise KeyError(tier)

    def explain(self) -> str:
        """The plan in words, a paragraph per tier."""
        lines = [
            f"Plan for {self.inventory.description}: "
            f"{self.system_used / GB:.1f} of {self.system_budget / GB:.1f} GB of system memory planned"
            + (
                ", using measured speeds from a device profile."
                if self.measured
                else ", from built-in preferences."
            ),
        ]
        for p in self.placements:
            where = f"{p.remote} (remote)" if p.remote_first else p.device or "no local device"
            chain = " -> ".join(p.fallback) or "none"
            size = f"{p.memory_bytes / GB:.1f} GB" + ("" if p.resident else ", on demand")
            if p.remote_first and p.device is None:
                size = "no memory here"
            lines.append(f"  {p.tier:7} {p.model} on {where} ({size}). {p.reason}")
            lines.append(f"          fallback: {chain}")
        return "\n".join(lines)


def with_remote(
    placement: TierPlacement,
    server: str,
    local: DeviceKind | None,
    converted: bool,
    measurements: Sequence[Measurement],
) -> TierPlacement:
    """`placement` with the tier's remote server in its chain. The server goes first unless a
    converted model runs the tier on its placed device (of kind `local`) measured faster than
    the server: configuration put the tier there, and the laptop's device stays as its fallback."""

    def best(device: MeasuredOn, backend: str | None) -> Measurement | None:
        found = [
            m
            for m in measurements
            if m.tier == placement.tier and m.device == device and backend in (None, m.backend)
        ]
        return max(found, key=lambda m: m.tokens_per_second, default=None)

    theirs = best(REMOTE, server)
    ours = best(local, None) if local is not None and placement.device else None
    if placement.device is None:
        first, why = True, "no device here can run it"
    elif not converted:
        first, why = True, f"{placement.model} is not converted for {placement.device} here"
    elif theirs is not None and ours is not None:
        first = theirs.tokens_per_second > ours.tokens_per_second
        why = (
            f"measured {theirs.tokens_per_second:.1f} tokens/s on {server} vs "
            f"{ours.tokens_per_second:.1f} on {placement.device}"
        )
    else:
        first, why = True, f"placed there by {REMOTE_TIERS_NAME}; not measured against {placement.device}"
    where = f"{server} first" if first else f"{placement.device} first, {server} after it"
    reason = f"Remote tier: {where} ({why})." + (f" Here: {placement.reason}" if placement.device else "")
    return replace(placement, remote=server, remote_first=first, reason=reason)


def _gb(size: int) -> str:
    return f"{size / GB:.1f} GB"


class _Budget:
    """Memory left: one pool for system RAM (CPU, integrated GPU, NPU), one per discrete GPU."""

    def __init__(self, inventory: Inventory, system_budget: int, gpu_fraction: float) -> None:
        self.left = {"system": system_budget}
        for device in inventory.devices:
            if not device.shares_system_memory:
                self.left[device.name] = int(device.memory_bytes * gpu_fraction)

    def pool(self, device: Device) -> str:
        return "system" if device.shares_system_memory else device.name


def default_budget(inventory: Inventory, reserve: int = RESERVED_BYTES) -> int:
    """System memory the engine may plan with: all RAM but a reserve for the OS, the desktop and the
    small general model the user already runs in Ollama."""
    return max(inventory.memory_bytes - reserve, inventory.memory_bytes // 4)


def plan(
    inventory: Inventory,
    demands: list[TierDemand],
    system_budget: int,
    measurements: list[Measurement] | None = None,
    gpu_fraction: float = 0.9,
) -> Plan:
    """Place every tier, in tier order (the always-on small tiers first). Each takes the first
    device, by measured speed or else by preference, that can run it and has room beside the tiers
    already placed; failing that, the first where it fits alone (it then loads on demand, unloading
    the least recently used tier); failing that, it is reported as fitting nowhere."""
    # A tier's server is ordered against its device afterwards (with_remote), never placed here.
    local = [m for m in measurements or [] if m.device != REMOTE]
    placer = _Placer(inventory, best_by_device(local), system_budget, gpu_fraction)
    placements = tuple(placer.place(demand) for demand in demands)
    used = system_budget - placer.budget.left["system"]
    return Plan(inventory, placements, system_budget, used, bool(placer.measured))


# Why a device was passed over, in words, with its kind: the kind tells which refusals explain a choice.
Refusal = tuple[DeviceKind, str]


class _Placer:
    """Places tiers one after another, remembering what the tiers before took."""

    def __init__(
        self,
        inventory: Inventory,
        measured: dict[tuple[str, MeasuredOn], Measurement],
        system_budget: int,
        gpu_fraction: float,
    ) -> None:
        self.inventory = inventory
        self.measured = measured
        self.system_budget = system_budget
        self.gpu_fraction = gpu_fraction
        self.budget = _Budget(inventory, system_budget, gpu_fraction)
        self.loaded: dict[tuple[str, str], str] = {}  # (model, device name) -> the tier that loaded it
        self.npu_model: dict[str, str] = {}  # NPU device name -> the one model it hosts

    def place(self, demand: TierDemand) -> TierPlacement:
        candidates, usable, refusals = self._usable(demand)

        def need(device: Device) -> int:
            return demand.weight_bytes[device.kind] + demand.kv_bytes

        resident = [
            d
            for d in usable
            if (demand.model, d.name) in self.loaded or need(d) <= self.budget.left[self.budget.pool(d)]
        ]
        alone = [d for d in usable if need(d) <= self._pool_size(d)]
        for device in usable:
            if device not in resident and device in alone:
                left = self.budget.left[self.budget.pool(device)]
                refusals.append(
                    (
                        device.kind,
                        f"{device.name}: needs {_gb(need(device))}, {_gb(left)} left beside the tiers above",
                    )
                )
        if not alone:
            smallest = min((need(d) for d in candidates), default=0)
            reason = f"fits nowhere: needs {_gb(smallest)} (weights + KV cache at {demand.context} tokens)"
            if refusals:
                reason += "; " + "; ".join(text for _, text in refusals)
            return TierPlacement(demand.tier, demand.model, None, 0, reason + ".", (), False, demand.ollama)
        chosen = resident[0] if resident else alone[0]
        shared_with = self.loaded.get((demand.model, chosen.name))
        if resident and shared_with is None:
            self.budget.left[self.budget.pool(chosen)] -= need(chosen)
            self.loaded[(demand.model, chosen.name)] = demand.tier
        if chosen.kind == "npu":
            self.npu_model[chosen.name] = demand.model
        reason = _reason(demand, chosen, self.measured, shared_with, self._passed(demand, chosen, refusals))
        if not resident:
            reason += (
                " Does not fit beside the tiers above: loads on demand, unloading the least recently used."
            )
        return TierPlacement(
            demand.tier,
            demand.model,
            chosen.name,
            need(chosen),
            reason,
            tuple(d.name for d in alone if d.name != chosen.name),
            bool(resident),
            demand.ollama,
        )

    def _usable(self, demand: TierDemand) -> tuple[list[Device], list[Device], list[Refusal]]:
        """The devices that can run the tier, in order; those of them free to take it; and why
        the others were refused."""
        candidates = [
            device
            for kind in _order(demand, self.measured)
            for device in self.inventory.of_kind(kind)
            if kind in demand.weight_bytes
        ]
        refusals: list[Refusal] = [
            (kind, f"{kind.upper()}: {why}")
            for kind, why in demand.missing.items()
            if self.inventory.of_kind(kind)
        ]
        usable = []
        for device in candidates:
            hosted = self.npu_model.get(device.name, demand.model)
            if device.kind == "npu" and hosted != demand.model:
                refusals.append(
                    (device.kind, f"{device.name}: already hosts {hosted} (one request at a time)")
                )
            else:
                usable.append(device)
        return candidates, usable, refusals

    def _pool_size(self, device: Device) -> int:
        if device.shares_system_memory:
            return self.system_budget
        return int(device.memory_bytes * self.gpu_fraction)

    def _passed(self, demand: TierDemand, chosen: Device, refusals: list[Refusal]) -> list[str]:
        """Only what stood before the chosen device in the order explains the choice."""
        order = _order(demand, self.measured)
        earlier = order[: order.index(chosen.kind)]
        passed = [text for kind, text in refusals if kind in earlier]
        return passed + [
            f"no {kind.upper()} on this machine" for kind in earlier if not self.inventory.of_kind(kind)
        ]


def best_by_device(measurements: list[Measurement]) -> dict[tuple[str, MeasuredOn], Measurement]:
    """The fastest measurement of each (tier, device kind), whatever its decoding mode."""
    best: dict[tuple[str, MeasuredOn], Measurement] = {}
    for m in measurements:
        key = (m.tier, m.device)
        if key not in best or m.tokens_per_second > best[key].tokens_per_second:
            best[key] = m
    return best


def _order(demand: TierDemand, measured: dict[tuple[str, MeasuredOn], Measurement]) -> list[DeviceKind]:
    preference = list(PREFERENCES.get(demand.tier, ("gpu", "cpu", "npu")))
    speeds = {
        kind: measured[(demand.tier, kind)].tokens_per_second
        for kind in preference
        if (demand.tier, kind) in measured
    }
    by_speed = sorted(speeds, key=lambda kind: -speeds[kind])
    return by_speed + [kind for kind in preference if kind not in speeds]


def _reason(
    demand: TierDemand,
    device: Device,
    measured: dict[tuple[str, MeasuredOn], Measurement],
    shared_with: str | None,
    refusals: list[str],
) -> str:
    mine = measured.get((demand.tier, device.kind))
    if mine is not None:
        others = [
            f"{m.tokens_per_second:.1f} on {m.device.upper()}"
            for (tier, kind), m in measured.items()
            if tier == demand.tier and kind != device.kind
        ]
        reason = f"measured fastest here: {mine.tokens_per_second:.1f} tokens/s"
        if others:
            reason += " (vs " + ", ".join(others) + ")"
        if refusals:
            reason += "; passed over: " + "; ".join(refusals)
    else:
        # Unmeasured, the machine decides first (what it lacks, what is taken or not converted),
        # then the tier's built-in order.
        order = ", ".join(kind.upper() for kind in PREFERENCES.get(demand.tier, ("gpu", "cpu", "npu")))
        first = "; ".join(refusals) + f": so the {device.kind.upper()}, next" if refusals else "first"
        why = WHY_PREFERRED.get(demand.tier, "built-in preference")
        reason = f"{first} in the tier's order {order} (no speeds measured here; {why})"
    if shared_with is not None:
        reason += f"; shares the model loaded for tier {shared_with}"
    return reason + "."
