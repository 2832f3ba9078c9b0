"""What an `npu-bench run` or `speed` measures: the `RunPlan`, built and checked from plain values."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast, get_args

from npu_engine.bench import BenchPrompt, bench_prompts
from npu_engine.catalog import TIERS, Catalog
from npu_engine.coding_tasks import LANGUAGES, CodingTask, load_tasks
from npu_engine.devices import DEVICE_KINDS, DeviceKind
from npu_engine.errors import UserInputError
from npu_engine.request import Decoding
from npu_engine.settings import catalog_profile

PARTS = ("speed", "baselines", "concurrency", "load", "quality", "correct")
# Parts a quick (smoke) run leaves out: minutes even on the tiny profile.
SLOW_PARTS = ("correct",)
MODES: tuple[str, ...] = get_args(Decoding)[1:]
DEFAULT_MAX_NEW_TOKENS = 128
DEFAULT_CONCURRENCY = (1, 2, 4, 8)


@dataclass(frozen=True)
class RunPlan:
    """Everything a run measures, checked: which tiers, modes and device kinds, on which prompts,
    how often, and which parts beyond the engine's own speed."""

    profile: str
    tiers: list[str]
    modes: list[Decoding]
    device_kinds: list[DeviceKind]
    prompts: list[BenchPrompt]
    runs: int
    max_new_tokens: int
    parts: list[str]
    concurrency: list[int]  # simultaneous requests, one measurement per level
    concurrency_tokens: int
    tasks: list[CodingTask]  # the quality part's coding tasks
    bandwidth_bytes: int  # read by the memory-bandwidth measurement
    emulate_npu: bool
    continuous_batching: bool


def checked(items: Sequence[str], allowed: Sequence[str], what: str) -> list[str]:
    """`items` as a list once each is one of `allowed`; else UserInputError naming the first that
    is not."""
    for item in items:
        if item not in allowed:
            raise UserInputError(f"unknown {what} {item!r} (known: {', '.join(allowed)})")
    return list(items)


def run_plan(
    catalog: Catalog,
    *,
    profile: str | None = None,
    quick: bool = False,
    speed_only: bool = False,
    tiers: Sequence[str] = (),
    modes: Sequence[str] = (),
    device_kinds: Sequence[str] = (),
    prompt_kinds: Sequence[str] = (),
    runs: int = 1,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    skip: Sequence[str] = (),
    concurrency: Sequence[int] = DEFAULT_CONCURRENCY,
    languages: Sequence[str] = (),
    emulate_npu: bool = False,
    continuous_batching: bool = False,
) -> RunPlan:
    """The plan of a run (every part but those in `skip`) or, with `speed_only`, of the engine's
    throughput alone. An empty sequence means all: every tier of the profile, every mode, device
    kind, prompt kind and language. `profile` None is $NPU_ENGINE_PROFILE (or plan).

    `quick` is a smoke run: the tiny profile, the code tier, plain decoding, one prompt, one task
    per language, none of the SLOW_PARTS, and, where left at their defaults, 16 new tokens and 1
    and 2 simultaneous requests. Raises UserInputError naming the first value that is not known
    or not positive.
    """
    profile = profile or ("tiny" if quick else catalog_profile())
    # The bench measures generation: an embedding tier has nothing to decode.
    known_tiers = tuple(
        tier
        for tier, spec in catalog.profile(profile).tiers.items()
        if not catalog.model(spec.model).family.embedding
    )
    chosen_tiers = checked(tiers, TIERS, "tier") or (["code"] if quick else list(known_tiers))
    for tier in chosen_tiers:
        if tier not in known_tiers:
            raise UserInputError(
                f"profile {profile!r} has no tier {tier!r} (it has: {', '.join(known_tiers)})"
            )
    kinds = checked(prompt_kinds, sorted({p.kind for p in bench_prompts()}), "prompt kind") or None
    if runs < 1 or max_new_tokens < 1:
        raise UserInputError("--runs and --max-new-tokens must be at least 1")
    if speed_only:
        parts = ["speed"]
    else:
        skipped = checked(skip, PARTS[1:], "part")
        parts = [part for part in PARTS if part not in skipped and not (quick and part in SLOW_PARTS)]
    levels = list(concurrency)
    if not levels or min(levels) < 1:
        raise UserInputError("--concurrency takes positive numbers, e.g. 1,2,4,8")
    tasks = load_tasks(checked(languages, LANGUAGES, "language") or None)
    prompts = bench_prompts(kinds)
    if quick:
        tasks = [
            next(t for t in tasks if t.language == lang)
            for lang in LANGUAGES
            if any(t.language == lang for t in tasks)
        ]
        prompts = prompts[:1]
    chosen_modes = checked(modes, MODES, "mode") or (["plain"] if quick else list(MODES))
    kinds_here = checked(device_kinds, DEVICE_KINDS, "device kind") or list(DEVICE_KINDS)
    return RunPlan(
        profile=profile,
        tiers=chosen_tiers,
        modes=cast(list[Decoding], chosen_modes),
        device_kinds=cast(list[DeviceKind], kinds_here),
        prompts=prompts,
        runs=runs,
        max_new_tokens=16 if quick and max_new_tokens == DEFAULT_MAX_NEW_TOKENS else max_new_tokens,
        parts=parts,
        concurrency=[1, 2] if quick and tuple(levels) == DEFAULT_CONCURRENCY else levels,
        concurrency_tokens=16 if quick else 64,
        tasks=tasks,
        bandwidth_bytes=(256 << 20) if quick else (1 << 30),
        emulate_npu=emulate_npu,
        continuous_batching=continuous_batching,
    )
