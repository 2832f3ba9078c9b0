"""`npu-bench run` and `speed` as one library call: an engine per device kind, then the engine's
throughput, llama.cpp and Ollama beside it, the memory-bandwidth ceiling, latency under concurrency,
load times and pass@1; then the results folder and the device profile the scheduler reads.

The collaborators are arguments: the store (files: model folders, GGUF sources, manifests), the
catalog, the machine's inventory, what makes engines, and `say`, which hears each line of progress.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeVar

from npu_engine.backends.pipeline_spec import Backend
from npu_engine.bench import (
    QUALITY_MAX_NEW_TOKENS,
    ConcurrencyPoint,
    QualitySummary,
    SpeedSummary,
    measure_concurrency,
    measure_load,
    measure_quality,
    measure_speed,
    to_measurements,
    until_code_block,
)
from npu_engine.bench_baselines import measure_baselines
from npu_engine.bench_correct import measure_correct
from npu_engine.bench_plan import RunPlan
from npu_engine.bench_report import BenchResults, BenchRun, write_results
from npu_engine.catalog import Catalog
from npu_engine.device_profile import DeviceProfile, profile_path, read_profile, write_profile
from npu_engine.devices import DEVICE_KINDS, DeviceKind, Inventory
from npu_engine.engine import Engine
from npu_engine.errors import NpuEngineError, UserInputError
from npu_engine.generation import TextSink
from npu_engine.machine import decode_ceiling, decode_read_bytes, machine_facts, measure_read_bandwidth
from npu_engine.manifest import Manifest
from npu_engine.request import BackendChoice
from npu_engine.scheduler import Measurement
from npu_engine.store import ModelStore

_T = TypeVar("_T")
Engines = list[tuple[DeviceKind, Engine]]


class EngineFactory(Protocol):
    """Makes an engine for `profile` that sees only the devices of `inventory`, plus an NPU that
    runs on the CPU when `emulate_npu` and there is none."""

    def __call__(
        self,
        inventory: Inventory,
        *,
        profile: str,
        emulate_npu: bool = False,
        continuous_batching: bool = False,
        prefix_reuse: bool = False,
        measurements: Sequence[Measurement] = (),
    ) -> Engine: ...


def bench_engines(store: ModelStore, catalog: Catalog) -> EngineFactory:
    """Engines over `store` and `catalog` as the bench measures them: no remote fallback (a figure is
    the device's own), no device profile read (the bench writes it; it never plans by an old one,
    only by the `measurements` of its own run when given) and no prefix reuse (every prompt
    evaluated whole, so that first-token times measure prefill; what reuse saves is measured by
    the autocomplete and agent rows)."""

    def make(
        inventory: Inventory,
        *,
        profile: str,
        emulate_npu: bool = False,
        continuous_batching: bool = False,
        prefix_reuse: bool = False,
        measurements: Sequence[Measurement] = (),
    ) -> Engine:
        return Engine.from_settings(
            profile,
            store=store,
            catalog=catalog,
            inventory=inventory,
            emulate_npu=emulate_npu,
            remotes=(),
            measurements=list(measurements),
            continuous_batching=continuous_batching,
            prefix_reuse=prefix_reuse,
        )

    return make


def run_bench(
    plan: RunPlan,
    *,
    store: ModelStore,
    catalog: Catalog,
    inventory: Inventory,
    engines: EngineFactory,
    say: Callable[[str], None],
    out: Path | None = None,
    write_device_profile: bool = True,
) -> BenchRun:
    """Every part of `plan` in order, each part's failure a note rather than the end of the run;
    the results in `out` (default: npu-bench-results/<time>) and, unless told not to, the engine's
    own figures as the device profile in the store's home.

    Raises UserInputError when none of the device kinds asked for is here."""
    started = time.monotonic()
    results = BenchResults(machine_facts(inventory))
    measured = engines_per_kind(plan, inventory, engines)
    if not measured:
        raise UserInputError(
            f"none of the devices asked for is here (this machine has: {inventory.description})"
        )
    _speed(plan, measured, results, say)
    manifests = {m.name: m for m in store.manifests()}
    used = {s.model: manifests[s.model] for s in results.speed if s.model in manifests}
    if "baselines" in plan.parts:
        measure_baselines(plan, catalog, store, used, results, say)
    if "speed" in plan.parts and results.speed:
        _ceilings(plan, catalog, store, used, results, say)
    real = [(kind, engine) for kind, engine in measured if not engine.emulates_npu]
    if "concurrency" in plan.parts and real:
        results.concurrency = _concurrency(plan, *real[0], results, say)
    if "load" in plan.parts:
        _load(real, used, results, say)
    if "quality" in plan.parts and real:
        _quality_runs(plan, catalog, store, real[0][1], results, say)
    if "correct" in plan.parts and real:
        # The routed engine as a user runs it after this bench: prefix reuse on (as llama.cpp's
        # cache is beside it), planning by the speeds and pass@1 this run just measured.
        engine = engines(
            real[0][1].inventory,
            profile=plan.profile,
            prefix_reuse=True,
            measurements=to_measurements(results.speed, results.quality),
        )
        results.correct = _guarded(
            results, say, lambda: measure_correct(engine, catalog, store, plan.tasks, say), None
        )
    results.seconds = time.monotonic() - started
    folder = write_results(out, results)
    written = None
    measurements = to_measurements(results.speed, results.quality)
    if measurements and write_device_profile:
        written = profile_path(store.root)
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        kept = read_profile(written)  # what `npu-bench tune` chose stays
        tuned = kept.tuned if kept is not None else ()
        write_profile(written, DeviceProfile(inventory.description, stamp, tuple(measurements), tuned))
    return BenchRun(results, folder, written)


def engines_per_kind(plan: RunPlan, inventory: Inventory, engines: EngineFactory) -> Engines:
    """One engine per device kind asked for, each seeing only that device, so the plan puts every
    tier there; the emulated NPU when asked and no NPU is here."""
    made: Engines = []
    for kind in DEVICE_KINDS:
        if kind not in plan.device_kinds:
            continue
        devices = inventory.of_kind(kind)
        emulate = kind == "npu" and not devices and plan.emulate_npu
        if not devices and not emulate:
            continue
        only = Inventory(
            inventory.description,
            inventory.memory_bytes,
            inventory.cpu_cores,
            tuple(devices or inventory.of_kind("cpu")),
        )
        engine = engines(
            only,
            profile=plan.profile,
            emulate_npu=emulate,
            continuous_batching=plan.continuous_batching,
        )
        made.append((kind, engine))
    return made


def _speed(plan: RunPlan, engines: Engines, results: BenchResults, say: Callable[[str], None]) -> None:
    """Each tier and mode on each device, and on the CPU each backend (llama.cpp decodes plainly);
    tiers that share a model (and draft) are measured once. A tier remote-tiers.json places on a
    server is measured there too, plainly, once (beside the CPU, which every machine has)."""
    for kind, engine in engines:
        measured: dict[tuple[str, str | None, str, str], SpeedSummary] = {}
        for tier in plan.tiers:
            spec = engine.tier(tier)
            for mode in plan.modes:
                if mode == "speculative" and spec.draft is None:
                    continue
                backends: list[BackendChoice] = ["openvino"]
                if kind == "cpu" and mode == "plain" and not engine.emulates_npu:
                    backends.append("llama.cpp")
                if kind == "cpu" and mode == "plain" and engine.placed_server(tier):
                    backends.append("remote")
                for backend in backends:
                    key = (spec.model, spec.draft if mode == "speculative" else None, mode, backend)
                    if key in measured and backend != "remote":  # each tier has its own server
                        results.speed.append(replace(measured[key], tier=tier))
                        continue
                    began = time.monotonic()
                    try:
                        summary = measure_speed(
                            engine, tier, mode, plan.prompts, plan.runs, plan.max_new_tokens, backend
                        )
                    except NpuEngineError as error:  # a mode, backend or model this device lacks
                        note = f"{tier} {mode} on {kind.upper()} ({backend}) not measured: {error}"
                        results.notes.append(note)
                        say(note)
                        continue
                    if engine.emulates_npu and not summary.emulated:
                        continue  # the emulated NPU could not take it; the CPU answered, measured on its own
                    measured[key] = summary
                    results.speed.append(summary)
                    engine.unload()  # each mode's peak memory is its own
                    say(
                        f"measured {tier} on {summary.device} ({mode}, {backend}): "
                        f"{summary.tokens_per_second} tokens/s in {time.monotonic() - began:.0f}s"
                    )


def _ceilings(
    plan: RunPlan,
    catalog: Catalog,
    store: ModelStore,
    used: dict[str, Manifest],
    results: BenchResults,
    say: Callable[[str], None],
) -> None:
    say("memory bandwidth")
    results.bandwidth = measure_read_bandwidth(plan.bandwidth_bytes)
    weights = {name: decode_read_bytes(store.path(name) / "openvino_model.xml") for name in used}
    for i, s in enumerate(results.speed):
        manifest = used.get(s.model)
        if s.system != "npu-engine" or manifest is None or not s.runs:
            continue
        # Mean context while decoding: the prompt plus half the answer.
        context = (s.input_tokens + s.output_tokens / 2) / s.runs
        kv = (
            catalog.model(manifest.model).kv_bytes_per_token * context
            if manifest.model in catalog.models
            else 0
        )
        results.speed[i] = replace(
            s, ceiling_tokens_per_second=decode_ceiling(results.bandwidth, weights[s.model], int(kv))
        )


def _concurrency(
    plan: RunPlan, kind: DeviceKind, engine: Engine, results: BenchResults, say: Callable[[str], None]
) -> list[ConcurrencyPoint]:
    """Latency and throughput at each level of simultaneous requests, on the code tier if measured."""
    tier = "code" if "code" in plan.tiers else plan.tiers[0]
    say(f"concurrency: {plan.concurrency} simultaneous requests on {tier} ({kind.upper()})")
    return _guarded(
        results,
        say,
        lambda: measure_concurrency(
            engine, tier, plan.prompts[0].prompt, plan.concurrency, plan.concurrency_tokens
        ),
        [],
    )


def _load(
    engines: Engines, used: dict[str, Manifest], results: BenchResults, say: Callable[[str], None]
) -> None:
    """Cold and warm load of each measured model on each real device kind it was converted for."""
    for kind, engine in engines:
        for manifest in used.values():
            if manifest.device == kind or kind in manifest.recipe.devices:
                device = engine.device_of_kind(kind)
                say(f"load: {manifest.name} on {device}, cold then warm")
                results.load.append(measure_load(engine, manifest.name, device))


def _quality_runs(
    plan: RunPlan,
    catalog: Catalog,
    store: ModelStore,
    engine: Engine,
    results: BenchResults,
    say: Callable[[str], None],
) -> None:
    """pass@1 for each distinct model of the tiers (plain greedy decoding), on OpenVINO, then on
    llama.cpp (the engine's other CPU backend, on the GGUF the model was converted from, with the
    same chat template) where the GGUF is here: the same weights, the prompt identical."""
    seen: set[str] = set()
    for tier in plan.tiers:
        model = engine.tier(tier).model
        if model in seen:
            continue
        seen.add(model)
        for backend in ("openvino", "llama.cpp"):
            row = _quality_on(plan, store, engine, tier, backend, results, say)
            if row is not None:
                results.quality.append(row)
            engine.unload()


def _quality_on(
    plan: RunPlan,
    store: ModelStore,
    engine: Engine,
    tier: str,
    backend: Backend,
    results: BenchResults,
    say: Callable[[str], None],
) -> QualitySummary | None:
    def ours(prompt: str, sink: TextSink) -> str:
        return engine.generate(
            prompt,
            tier=tier,
            max_new_tokens=QUALITY_MAX_NEW_TOKENS,
            decoding="plain",
            backend=backend,
            on_text=sink,
        ).text

    probe = _guarded(
        results, say, lambda: engine.generate("hi", tier=tier, max_new_tokens=1, backend=backend), None
    )
    if probe is None:
        return None
    manifest = next((m for m in store.manifests() if m.name == probe.model), None)
    recipe = manifest.recipe.name if manifest else "?"
    say(f"quality: {len(plan.tasks)} tasks on {probe.model} ({probe.device}, {backend})")
    return measure_quality(
        "npu-engine", tier, probe.model, recipe, probe.device, until_code_block(ours), plan.tasks, backend
    )


def _guarded(results: BenchResults, say: Callable[[str], None], body: Callable[[], _T], fallback: _T) -> _T:
    """`body()`, or `fallback` with the engine's refusal kept as a note."""
    try:
        return body()
    except NpuEngineError as error:
        results.notes.append(str(error))
        say(f"skipped: {error}")
        return fallback
