"""The planner: every decision the engine executes, from what it is given. It holds the profile,
the catalog, the recipes, the machine's inventory, the memory budget and the measured speeds, and
answers where each tier runs (the plan), which devices a tier's request tries in turn, which
conversion runs on a device, and which decoding mode a request gets. It reads no file and loads no
model: the converted models are passed in."""

from collections.abc import Sequence
from dataclasses import dataclass, replace

from npu_engine.backends.pipeline_spec import LLAMA_CPP_CHUNK, Backend, DecodingMode
from npu_engine.catalog import Catalog, Profile, TierSpec
from npu_engine.demands import manifest_for, tier_demands
from npu_engine.devices import Device, DeviceKind, Inventory
from npu_engine.errors import UserInputError
from npu_engine.manifest import Manifest
from npu_engine.readiness import TierReadiness, tier_readiness
from npu_engine.recipes import RecipeBook
from npu_engine.remote_tiers import RemoteTier
from npu_engine.request import BackendChoice, Decoding
from npu_engine.scheduler import Measurement, Plan, plan, with_remote

# Unmeasured, a CPU tier runs on llama.cpp where its source GGUF is here: on both machine classes
# measured (2 and 16 cores), llama.cpp decoded as fast or faster on the same weights (README).
DEFAULT_CPU_BACKEND: Backend = "llama.cpp"
# A conversation that continues is costed over this request and this many after it, each reading
# the shared prompt again: an agent's session runs turn after turn (the bench's has 5), an
# editor's completions keystroke after keystroke. With OpenVINO reading prompts 3 times as fast as
# llama.cpp (measured here), llama.cpp's kept prompt pays from the fourth request on (README).
FORESEEN_REQUESTS = 3
# A backend whose measured pass@1 trails the other's by more than this never answers by default,
# however fast: speed never at the cost of correctness.
QUALITY_MARGIN = 0.03


@dataclass(frozen=True)
class BackendPick:
    """Which backend runs a request on a device, with which decoding mode, and why, in words."""

    backend: Backend
    mode: DecodingMode
    reason: str


@dataclass(frozen=True)
class RequestShape:
    """What the backend choice weighs: the prompt's tokens (estimated), the most new tokens, and
    the prompt tokens llama.cpp's loaded pipeline holds already (read back, not evaluated).

    `shared_next` is how many of the prompt's first tokens the next request is expected to start
    with (a conversation's next turn, an editor's next keystroke: see Job.next_shared), 0 when no
    next request is expected."""

    prompt_tokens: int
    new_tokens: int
    llama_cpp_cached: int = 0
    shared_next: int = 0

    def next_request(self, backend: str) -> "RequestShape | None":
        """What the next request costs `backend` beyond what both backends pay alike (the text
        added to the prompt, the answer): reading this prompt again, less the whole chunks of its
        shared part that llama.cpp keeps (OpenVINO keeps none); None when none is expected."""
        if not self.shared_next:
            return None
        kept = self.shared_next // LLAMA_CPP_CHUNK * LLAMA_CPP_CHUNK if backend == "llama.cpp" else 0
        return RequestShape(self.prompt_tokens, 0, kept)


# `npu-engine plan`'s two shapes: a chat turn with more to come, and an editor's infill whose
# next keystroke shares the 1,500-token prefix before its 300-token suffix.
CHAT_SHAPE = RequestShape(prompt_tokens=300, new_tokens=512, shared_next=300)
AUTOCOMPLETE_SHAPE = RequestShape(prompt_tokens=1800, new_tokens=64, shared_next=1500)


class Planner:
    def __init__(
        self,
        profile: Profile,
        catalog: Catalog,
        recipes: RecipeBook,
        inventory: Inventory,
        memory_budget: int,
        measurements: Sequence[Measurement] = (),
        remote_tiers: Sequence[RemoteTier] = (),
    ) -> None:
        self.profile = profile
        self.catalog = catalog
        self.recipes = recipes
        self.inventory = inventory
        self.memory_budget = memory_budget
        self.measurements = list(measurements)
        self.remote_tiers = {remote.tier: remote for remote in remote_tiers if remote.tier in profile.tiers}

    def tier(self, tier: str) -> TierSpec:
        """The profile's tier; UserInputError naming the profile's tiers when it has no such tier."""
        return self.profile.tier(tier)

    def readiness(self, manifests: Sequence[Manifest]) -> list[TierReadiness]:
        """Each tier of the profile, with the converted models that run it on this machine."""
        kinds = {device.kind for device in self.inventory.devices}
        return tier_readiness(self.profile, self.catalog, self.recipes, manifests, kinds)

    def plan(self, manifests: Sequence[Manifest]) -> Plan:
        """Where each tier runs, given the converted models; a tier remote-tiers.json places on a
        server has it in its chain (see scheduler.with_remote)."""
        demands = tier_demands(self.profile, self.catalog, list(manifests), self.recipes)
        planned = plan(self.inventory, demands, self.memory_budget, self.measurements)
        placements = []
        for placement in planned.placements:
            remote = self.remote_tiers.get(placement.tier)
            if remote is not None:
                kind = self.inventory.device(placement.device).kind if placement.device else None
                converted = kind is not None and self.conversion(manifests, placement.model, kind) is not None
                placement = with_remote(placement, remote.server, kind, converted, self.measurements)
            placements.append(placement)
        return replace(planned, placements=tuple(placements))

    def devices(self, tier: str, manifests: Sequence[Manifest]) -> list[Device]:
        """The devices a request for `tier` tries, in order: where the plan places it, then the
        other devices it fits on."""
        return [target for target in self.targets(tier, manifests) if isinstance(target, Device)]

    def targets(self, tier: str, manifests: Sequence[Manifest]) -> list[Device | RemoteTier]:
        """What a request for `tier` tries, in order: its devices as `devices` gives them, with the
        tier's remote server before or after them as the plan puts it."""
        self.tier(tier)
        placement = self.plan(manifests).placement(tier)
        names = ([placement.device] if placement.device else []) + list(placement.fallback_devices)
        found: list[Device | RemoteTier] = [self.inventory.device(name) for name in names]
        remote = self.remote_tiers.get(tier)
        if remote is not None:
            found.insert(0 if placement.remote_first else len(found), remote)
        return found

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
            if m.tier == tier and m.device == kind and m.mode in usable and m.backend == "openvino"
        }
        best = max(speeds, key=lambda mode: speeds[mode], default="plain")
        return "speculative" if best == "speculative" else "plain"

    def backend(
        self,
        asked: BackendChoice,
        decoding: Decoding,
        tier: str,
        device: Device,
        mode: DecodingMode,
        blocked: str | None,
        shape: RequestShape,
    ) -> BackendPick:
        """The backend a request runs on: OpenVINO on the NPU and the GPU; on the CPU, llama.cpp or
        OpenVINO, whichever the device profile says answers this request sooner (its prompt at
        the measured prefill speed plus its new tokens at the measured decode speed), else
        DEFAULT_CPU_BACKEND. `mode` is OpenVINO's decoding mode for the request (`decoding` as
        asked); llama.cpp decodes plainly, so it is a candidate only when `decoding` is auto or
        plain. `blocked` says why llama.cpp cannot take the request (no source GGUF, structured
        output), None when it can. A backend asked for that cannot answer is the caller's mistake."""
        if decoding not in ("auto", "plain"):
            blocked = blocked or f"{decoding} decoding runs on OpenVINO"
        if device.kind != "cpu":
            blocked = f"llama.cpp runs on the CPU here, not the {device.kind.upper()}"
        if asked == "llama.cpp" and blocked:
            raise UserInputError(f"backend 'llama.cpp' cannot answer this request: {blocked}")
        if asked == "openvino" or blocked:
            return BackendPick("openvino", mode, "asked for" if asked == "openvino" else str(blocked))

        def pick(backend: Backend, reason: str) -> BackendPick:
            return BackendPick(backend, "plain" if backend == "llama.cpp" else mode, reason)

        if asked == "llama.cpp":
            return pick("llama.cpp", "asked for")
        worse = self._answers_worse(tier)
        if worse is not None:
            return pick("openvino" if worse[0] == "llama.cpp" else "llama.cpp", worse[1])
        ours_measured = self._measured(tier, "openvino", mode)
        theirs_measured = self._measured(tier, "llama.cpp", "plain")
        if ours_measured is None or theirs_measured is None:
            return pick(DEFAULT_CPU_BACKEND, "not measured here: the default for CPUs")
        if min(ours_measured.prompt_tokens_per_second, theirs_measured.prompt_tokens_per_second) <= 0:
            shape = replace(shape, shared_next=0)  # kept chunks are weighed only at measured prefill rates
        ours = _seconds(ours_measured, shape)
        theirs = _seconds(theirs_measured, shape)
        counted = (
            f"this request plus reading its prompt again for the {FORESEEN_REQUESTS} expected after it"
            if shape.shared_next
            else "this request"
        )
        reason = f"measured: {theirs:.1f}s on llama.cpp vs {ours:.1f}s on OpenVINO for {counted}"
        if shape.llama_cpp_cached:
            reason += f" ({shape.llama_cpp_cached} prompt tokens in llama.cpp's cache)"
        return pick("llama.cpp" if theirs < ours else "openvino", reason)

    def cpu_backends(self, tier: str, gguf_here: bool) -> str:
        """In words, what runs the tier on the CPU for a typical chat turn and a typical
        autocomplete request (the backend is chosen per request; these are the two shapes)."""
        if not gguf_here:
            return "OpenVINO (no source GGUF here for llama.cpp)"
        cpu = next((d for d in self.inventory.devices if d.kind == "cpu"), None)
        if cpu is None:
            return "no CPU"
        mode = self.decoding("auto", tier, cpu, has_draft=self.tier(tier).draft is not None)
        picks = []
        for label, shape in (("chat", CHAT_SHAPE), ("autocomplete", AUTOCOMPLETE_SHAPE)):
            pick = self.backend("auto", "auto", tier, cpu, mode, None, shape)
            picks.append(f"{label} on {pick.backend} ({pick.mode}; {pick.reason})")
        return ", ".join(picks)

    def _answers_worse(self, tier: str) -> tuple[Backend, str] | None:
        """The CPU backend whose measured pass@1 for the tier trails the other's by more than
        QUALITY_MARGIN, with the figures in words; None when neither does or either is unmeasured."""
        scores: dict[str, float] = {
            m.backend: m.pass_at_1
            for m in self.measurements
            if m.tier == tier and m.device == "cpu" and m.mode == "plain" and m.pass_at_1 is not None
        }
        if len(scores) < 2:
            return None
        ours, theirs = scores.get("openvino", 0.0), scores.get("llama.cpp", 0.0)
        figures = f"pass@1 {theirs:.0%} on llama.cpp vs {ours:.0%} on OpenVINO"
        if theirs < ours - QUALITY_MARGIN:
            return "llama.cpp", f"llama.cpp answers worse here ({figures})"
        if ours < theirs - QUALITY_MARGIN:
            return "openvino", f"OpenVINO answers worse here ({figures})"
        return None

    def _measured(self, tier: str, backend: str, mode: str) -> Measurement | None:
        """The device profile's CPU measurement of `tier` on `backend` in `mode`, if any."""
        for m in self.measurements:
            wanted = (m.tier, m.device, m.backend, m.mode) == (tier, "cpu", backend, mode)
            if wanted and m.tokens_per_second > 0:
                return m
        return None


def _seconds(measured: Measurement, shape: RequestShape) -> float:
    """The expected seconds of a request on the CPU at the `measured` rates, with those of the
    FORESEEN_REQUESTS expected after it on the same backend (see RequestShape.next_request):
    the backend that keeps the prompt pays for it once."""
    following = shape.next_request(measured.backend)
    seconds = _one_request_seconds(measured, shape)
    return (
        seconds
        if following is None
        else seconds + FORESEEN_REQUESTS * _one_request_seconds(measured, following)
    )


def _one_request_seconds(measured: Measurement, shape: RequestShape) -> float:
    cached = shape.llama_cpp_cached if measured.backend == "llama.cpp" else 0
    evaluated = max(shape.prompt_tokens - cached, 1)
    rate = measured.prompt_tokens_per_second
    prefill = evaluated / rate if rate > 0 else measured.ttft_ms / 1000
    return prefill + shape.new_tokens / measured.tokens_per_second
