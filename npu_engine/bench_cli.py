"""`npu-bench`: measure the engine on this machine beside llama.cpp, and write the device profile the
scheduler reads.

    npu-bench run [--quick]           throughput, baselines, concurrency, load, quality: everything
    npu-bench speed                   throughput only (the engine's own figures)
    npu-bench quality --recipes ...   pass@1 of one model converted with several recipes
    npu-bench routing                 the router's accuracy on labelled prompts (train and held-out)
    npu-bench soak --url URL          concurrent clients against a running server: requests/s,
                                      latency percentiles, statuses, the server's RSS
"""

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar, cast, get_args

from npu_engine.backends.openvino_genai import OpenVinoPipeline
from npu_engine.backends.pipeline_spec import PipelineSpec
from npu_engine.backends.remote import OllamaBackend, ollama_base_url
from npu_engine.baselines import LlamaCppModel, ollama_available, source_gguf
from npu_engine.bench import (
    QUALITY_MAX_NEW_TOKENS,
    BenchPrompt,
    QualitySummary,
    SpeedSummary,
    bench_prompts,
    chat_answerer,
    measure_baseline,
    measure_concurrency,
    measure_load,
    measure_quality,
    measure_speed,
    to_measurements,
    until_code_block,
)
from npu_engine.bench_report import BenchResults, markdown, speed_table, write_plots
from npu_engine.catalog import TIERS, Catalog, load_catalog
from npu_engine.cli_support import run_cli
from npu_engine.coding_tasks import LANGUAGES, CodingTask, load_tasks
from npu_engine.device_profile import DeviceProfile, profile_path, write_profile
from npu_engine.devices import DEVICE_KINDS, DeviceKind, Inventory, discover
from npu_engine.engine import Engine, fast_tier_generate
from npu_engine.errors import NpuEngineError, UserInputError
from npu_engine.files import write_text_atomically
from npu_engine.generation import Message, RawGeneration, SamplingOptions, TextSink
from npu_engine.machine import decode_ceiling, decode_read_bytes, machine_facts, measure_read_bandwidth
from npu_engine.manifest import Manifest
from npu_engine.request import Decoding
from npu_engine.router import Router, load_rules, model_classifier
from npu_engine.router_fit import confusion_table, evaluate, fit, load_labelled
from npu_engine.settings import catalog_profile, engine_home, ollama_host
from npu_engine.soak import SoakSettings, local_server, run_soak
from npu_engine.store import ModelStore

_T = TypeVar("_T")
PARTS = ("speed", "baselines", "concurrency", "load", "quality")
MODES: tuple[str, ...] = get_args(Decoding)[1:]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="npu-bench", description="Measure npu-engine on this machine.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run", help="everything: throughput beside llama.cpp, concurrency, load, pass@1"
    )
    speed = commands.add_parser("speed", help="the engine's tokens/s, first-token time and load time only")
    for sub in (run, speed):
        sub.add_argument(
            "--profile", default=None, help="catalog profile (default: $NPU_ENGINE_PROFILE or plan)"
        )
        sub.add_argument(
            "--tiers", default="", help="comma-separated tiers (default: every tier of the profile)"
        )
        sub.add_argument(
            "--devices", default="", help="comma-separated device kinds (default: every one here)"
        )
        sub.add_argument(
            "--modes",
            default="",
            help="comma-separated: plain, speculative, prompt_lookup (default: all a tier has)",
        )
        sub.add_argument("--kinds", default="", help="comma-separated prompt kinds from bench/prompts.jsonl")
        sub.add_argument("--runs", type=int, default=1, help="passes over the prompt set after the warm-up")
        sub.add_argument("--max-new-tokens", type=int, default=128)
        sub.add_argument(
            "--emulate-npu", action="store_true", help="also run the NPU path on the CPU (never a figure)"
        )
        sub.add_argument(
            "--out", type=Path, default=None, help="results folder (default: npu-bench-results/<time>)"
        )
        sub.add_argument("--no-profile", action="store_true", help="do not write the device profile")
        sub.add_argument(
            "--continuous-batching",
            action="store_true",
            help="measure the engine with continuous batching on",
        )
    run.add_argument(
        "--quick", action="store_true", help="smoke run on the tiny profile (SmolLM2), under a minute"
    )
    run.add_argument("--skip", default="", help=f"comma-separated parts to leave out: {', '.join(PARTS[1:])}")
    run.add_argument("--concurrency", default="1,2,4,8", help="simultaneous requests to measure")
    run.add_argument(
        "--languages", default="", help=f"quality task languages (default: {', '.join(LANGUAGES)})"
    )
    routing = commands.add_parser(
        "routing", help="the router's accuracy per task, confusion matrix and time per decision"
    )
    routing.add_argument(
        "--rules", type=Path, default=None, help="router rules file (default: the shipped one)"
    )
    routing.add_argument("--prompts", type=Path, default=None, help="labelled JSONL (default: bench/routing)")
    routing.add_argument(
        "--fit",
        type=Path,
        default=None,
        metavar="OUT",
        help="fit weights on the training split, write rules to OUT",
    )
    routing.add_argument(
        "--second-stage", action="store_true", help="ask the fast tier's model when the rules are unsure"
    )
    routing.add_argument("--profile", default=None)
    routing.add_argument("--out", type=Path, default=None)
    quality = commands.add_parser("quality", help="pass@1 of one model converted with several recipes")
    quality.add_argument("model", help="catalog model name, e.g. qwen2.5-coder-0.5b-instruct")
    quality.add_argument("--recipes", required=True, help="comma-separated recipes, each already converted")
    quality.add_argument("--languages", default="")
    quality.add_argument("--baseline", action="store_true", help="also llama.cpp on the source GGUF")
    quality.add_argument("--out", type=Path, default=None)
    soak = commands.add_parser(
        "soak", help="concurrent mixed chats against a server on this machine, for a while"
    )
    target = soak.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running server, e.g. http://127.0.0.1:11435 (loopback only)")
    target.add_argument(
        "--serve", action="store_true", help="start `npu-engine serve` on a free port and soak that"
    )
    soak.add_argument("--pid", type=int, default=None, help="the server's process id, to read its RSS")
    soak.add_argument("--profile", default=None, help="with --serve: the catalog profile")
    soak.add_argument("--seconds", type=float, default=300.0)
    soak.add_argument("--clients", type=int, default=4)
    soak.add_argument("--max-requests", type=int, default=100_000)
    soak.add_argument("--model", default="code", help="the model name the clients ask for")
    soak.add_argument("--max-tokens", type=int, default=32)
    soak.add_argument("--out", type=Path, default=None, help="also write the report as JSON here")
    return parser


def _split(text: str, allowed: Sequence[str], what: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    for item in items:
        if item not in allowed:
            raise UserInputError(f"unknown {what} {item!r} (known: {', '.join(allowed)})")
    return items


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class RunPlan:
    profile: str
    tiers: list[str]
    modes: list[Decoding]
    device_kinds: list[str]
    prompts: list[BenchPrompt]
    runs: int
    max_new_tokens: int
    parts: list[str]
    concurrency: list[int]
    concurrency_tokens: int
    tasks: list[CodingTask]
    bandwidth_bytes: int
    emulate_npu: bool
    continuous_batching: bool


def _run_plan(args: argparse.Namespace, catalog: Catalog) -> RunPlan:
    quick = getattr(args, "quick", False)
    profile = args.profile or ("tiny" if quick else catalog_profile())
    known_tiers = tuple(catalog.profile(profile).tiers)
    tiers = _split(args.tiers, TIERS, "tier") or (["code"] if quick else list(known_tiers))
    for tier in tiers:
        if tier not in known_tiers:
            raise UserInputError(
                f"profile {profile!r} has no tier {tier!r} (it has: {', '.join(known_tiers)})"
            )
    kinds = _split(args.kinds, sorted({p.kind for p in bench_prompts()}), "prompt kind") or None
    if args.runs < 1 or args.max_new_tokens < 1:
        raise UserInputError("--runs and --max-new-tokens must be at least 1")
    if args.command == "speed":
        parts = ["speed"]
    else:
        skipped = _split(args.skip, PARTS[1:], "part")
        parts = [part for part in PARTS if part not in skipped]
    levels = [int(x) for x in getattr(args, "concurrency", "1").split(",") if x.strip().isdigit()]
    if not levels or min(levels) < 1:
        raise UserInputError("--concurrency takes positive numbers, e.g. 1,2,4,8")
    languages = _split(getattr(args, "languages", ""), LANGUAGES, "language") or None
    tasks = load_tasks(languages)
    prompts = bench_prompts(kinds)
    if quick:
        tasks = [
            next(t for t in tasks if t.language == lang)
            for lang in LANGUAGES
            if any(t.language == lang for t in tasks)
        ]
        prompts = prompts[:1]
    return RunPlan(
        profile=profile,
        tiers=tiers,
        modes=cast(
            list[Decoding], _split(args.modes, MODES, "mode") or (["plain"] if quick else list(MODES))
        ),
        device_kinds=_split(args.devices, DEVICE_KINDS, "device kind") or list(DEVICE_KINDS),
        prompts=prompts,
        runs=args.runs,
        max_new_tokens=16 if quick and args.max_new_tokens == 128 else args.max_new_tokens,
        parts=parts,
        concurrency=[1, 2] if quick and args.concurrency == "1,2,4,8" else levels,
        concurrency_tokens=16 if quick else 64,
        tasks=tasks,
        bandwidth_bytes=(256 << 20) if quick else (1 << 30),
        emulate_npu=args.emulate_npu,
        continuous_batching=args.continuous_batching,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "quality":
        return run_cli(lambda: _quality(args))
    if args.command == "routing":
        return run_cli(lambda: _routing(args))
    if args.command == "soak":
        return run_cli(lambda: _soak(args))
    return run_cli(lambda: _run(args))


def _soak(args: argparse.Namespace) -> int:
    settings = SoakSettings(
        url=args.url or "",
        seconds=args.seconds,
        clients=args.clients,
        max_requests=args.max_requests,
        model=args.model,
        max_tokens=args.max_tokens,
        server_pid=args.pid,
    )
    if args.serve:
        profile = args.profile or catalog_profile()
        log = _results_folder(None) / "soak-server.log"
        _say(f"soak: starting npu-engine serve --profile {profile} (its log: {log})")
        with local_server(profile, log) as (url, pid):
            report = run_soak(replace(settings, url=url, server_pid=pid))
    else:
        report = run_soak(settings)
    if args.out:
        write_text_atomically(args.out, report.to_json())
    print(report.table())
    return 0


def _run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    catalog = load_catalog()
    plan = _run_plan(args, catalog)
    store = ModelStore(engine_home())
    here = discover()
    results = BenchResults(machine_facts(here))
    engines = _engines(plan, here, store, catalog)
    if not engines:
        raise UserInputError(f"none of the devices asked for is here (this machine has: {here.description})")
    _speed(plan, engines, results)
    manifests = {m.name: m for m in store.manifests()}
    used = {s.model: manifests[s.model] for s in results.speed if s.model in manifests}
    if "baselines" in plan.parts:
        _baselines(plan, catalog, store, used, results)
    if "speed" in plan.parts and results.speed:
        _ceilings(plan, catalog, store, used, results)
    real = [(kind, engine) for kind, engine in engines if not engine.emulates_npu]
    if "concurrency" in plan.parts and real:
        kind, engine = real[0]
        tier = "code" if "code" in plan.tiers else plan.tiers[0]
        _say(f"concurrency: {plan.concurrency} simultaneous requests on {tier} ({kind.upper()})")
        results.concurrency = _guarded(
            results,
            lambda: measure_concurrency(
                engine, tier, plan.prompts[0].prompt, plan.concurrency, plan.concurrency_tokens
            ),
            [],
        )
    if "load" in plan.parts:
        for kind, engine in real:
            for manifest in used.values():
                if manifest.device == kind or kind in manifest.recipe.devices:
                    device = engine.device_of_kind(kind)
                    _say(f"load: {manifest.name} on {device}, cold then warm")
                    results.load.append(measure_load(manifest.name, store.path(manifest.name), device))
    if "quality" in plan.parts and real:
        _quality_runs(plan, catalog, store, real[0][1], results)
    results.seconds = time.monotonic() - started
    out = _write(args.out, results)
    if results.speed:
        print(speed_table(results.speed))
    measurements = to_measurements(results.speed)
    if measurements and not args.no_profile:
        path = profile_path(store.root)
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        write_profile(path, DeviceProfile(here.description, stamp, tuple(measurements)))
        _say(f"device profile written to {path}")
    _say(f"results in {out} ({results.seconds:.0f} s)")
    return 0


def _engines(
    plan: RunPlan, here: Inventory, store: ModelStore, catalog: Catalog
) -> list[tuple[DeviceKind, Engine]]:
    """One engine per device kind asked for, each seeing only that device, so the plan puts every
    tier there; the emulated NPU when asked and no NPU is here."""
    engines = []
    for kind in DEVICE_KINDS:
        if kind not in plan.device_kinds:
            continue
        devices = here.of_kind(kind)
        emulate = kind == "npu" and not devices and plan.emulate_npu
        if not devices and not emulate:
            continue
        only = Inventory(
            here.description, here.memory_bytes, here.cpu_cores, tuple(devices or here.of_kind("cpu"))
        )
        engine = Engine.from_settings(
            plan.profile,
            store=store,
            catalog=catalog,
            inventory=only,
            emulate_npu=emulate,
            remotes=(),
            measurements=[],
            continuous_batching=plan.continuous_batching,
        )
        engines.append((kind, engine))
    return engines


def _speed(plan: RunPlan, engines: list[tuple[DeviceKind, Engine]], results: BenchResults) -> None:
    """Each tier and mode on each device; tiers that share a model (and draft) are measured once."""
    for kind, engine in engines:
        measured: dict[tuple[str, str | None, str], SpeedSummary] = {}
        for tier in plan.tiers:
            spec = engine.tier(tier)
            for mode in plan.modes:
                if mode == "speculative" and spec.draft is None:
                    continue
                key = (spec.model, spec.draft if mode == "speculative" else None, mode)
                if key in measured:
                    results.speed.append(replace(measured[key], tier=tier))
                    continue
                began = time.monotonic()
                try:
                    summary = measure_speed(
                        engine,
                        tier,
                        mode,
                        plan.prompts,
                        plan.runs,
                        plan.max_new_tokens,
                    )
                except NpuEngineError as error:  # a mode this tier or device cannot run, a missing model
                    note = f"{tier} {mode} on {kind.upper()} not measured: {error}"
                    results.notes.append(note)
                    _say(note)
                    continue
                if engine.emulates_npu and not summary.emulated:
                    continue  # the emulated NPU could not take it; the CPU answered, measured on its own
                measured[key] = summary
                results.speed.append(summary)
                engine.unload()  # each mode's peak memory is its own
                _say(
                    f"measured {tier} on {summary.device} ({mode}): {summary.tokens_per_second} tokens/s "
                    f"in {time.monotonic() - began:.0f}s"
                )


def _baselines(
    plan: RunPlan, catalog: Catalog, store: ModelStore, used: dict[str, Manifest], results: BenchResults
) -> None:
    """llama.cpp on each measured model's source GGUF (plain and prompt lookup; it has no draft-model
    mode), and Ollama when one answers with the model."""
    ours = [s for s in results.speed if s.system == "npu-engine" and not s.emulated]
    models = sorted({s.model for s in ours})
    context = max(plan.max_new_tokens + 2048, 4096)
    for name in models:
        manifest = used.get(name)
        gguf = source_gguf(manifest, catalog, store) if manifest else None
        tiers = sorted({s.tier for s in ours if s.model == name})
        if gguf is None:
            results.notes.append(f"llama.cpp baseline skipped for {name}: no GGUF of the same weights here")
            continue
        for mode in ("plain", "prompt_lookup"):
            if mode not in plan.modes:
                continue
            try:
                summary = _llama_speed(plan, gguf, tiers[0], mode, context)
            except Exception as error:  # a third-party baseline failing must not end the whole run
                results.notes.append(
                    f"llama.cpp {mode} on {gguf.name} failed: {type(error).__name__}: {error}"
                )
                continue
            results.speed += [replace(summary, tier=tier) for tier in tiers]
        _ollama_baseline(plan, catalog, manifest, tiers, results)


def _llama_speed(plan: RunPlan, gguf: Path, tier: str, mode: str, context: int) -> SpeedSummary:
    llama = LlamaCppModel(gguf, context=context, lookup=mode == "prompt_lookup")
    try:
        _say(f"llama.cpp: {gguf.name} ({mode}, {llama.threads} threads)")
        return measure_baseline(
            "llama.cpp",
            llama.generate,
            tier,
            mode,
            gguf.name,
            plan.prompts,
            plan.runs,
            plan.max_new_tokens,
            llama.load_seconds,
        )
    finally:
        llama.close()


def _ollama_baseline(
    plan: RunPlan, catalog: Catalog, manifest: Manifest | None, tiers: list[str], results: BenchResults
) -> None:
    tag = catalog.model(manifest.model).ollama if manifest and manifest.model in catalog.models else None
    if tag is None or "plain" not in plan.modes:
        return
    backend = OllamaBackend(ollama_base_url(ollama_host()))
    missing = ollama_available(backend, tag)
    if missing:
        results.notes.append(f"Ollama baseline skipped: {missing}")
        return

    def generate(
        messages: Sequence[Message], options: SamplingOptions, on_text: TextSink | None = None
    ) -> RawGeneration:
        return backend.generate(tag, messages, options, on_text)

    summary = measure_baseline(
        "ollama", generate, tiers[0], "plain", tag, plan.prompts, plan.runs, plan.max_new_tokens, 0.0
    )
    results.speed += [replace(summary, tier=tier) for tier in tiers]


def _ceilings(
    plan: RunPlan, catalog: Catalog, store: ModelStore, used: dict[str, Manifest], results: BenchResults
) -> None:
    _say("memory bandwidth")
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


def _quality_runs(
    plan: RunPlan, catalog: Catalog, store: ModelStore, engine: Engine, results: BenchResults
) -> None:
    """pass@1 for each distinct model of the tiers (plain greedy decoding), then llama.cpp on its GGUF."""
    seen: set[str] = set()
    for tier in plan.tiers:
        model = engine.tier(tier).model
        if model in seen:
            continue
        seen.add(model)

        def ours(prompt: str, sink: TextSink, tier: str = tier) -> str:
            return engine.generate(
                prompt, tier=tier, max_new_tokens=QUALITY_MAX_NEW_TOKENS, decoding="plain", on_text=sink
            ).text

        probe = _guarded(results, lambda tier=tier: engine.generate("hi", tier=tier, max_new_tokens=1), None)  # type: ignore[misc]
        if probe is None:
            continue
        manifest = next((m for m in store.manifests() if m.name == probe.model), None)
        recipe = manifest.recipe.name if manifest else "?"
        _say(f"quality: {len(plan.tasks)} tasks on {probe.model} ({probe.device})")
        results.quality.append(
            measure_quality(
                "npu-engine",
                tier,
                probe.model,
                recipe,
                probe.device,
                until_code_block(ours),
                plan.tasks,
            )
        )
        engine.unload()
        gguf = source_gguf(manifest, catalog, store) if "baselines" in plan.parts and manifest else None
        if gguf is not None:
            _say(f"quality: {len(plan.tasks)} tasks on llama.cpp {gguf.name}")
            results.quality.append(_llama_quality(gguf, tier, plan.tasks))


def _llama_quality(gguf: Path, tier: str, tasks: list[CodingTask]) -> QualitySummary:
    llama = LlamaCppModel(gguf, context=4096)
    try:
        return measure_quality(
            "llama.cpp", tier, gguf.name, llama.quantization, "CPU", chat_answerer(llama.generate), tasks
        )
    finally:
        llama.close()


def _guarded(results: BenchResults, body: Callable[[], _T], fallback: _T) -> _T:
    try:
        return body()
    except NpuEngineError as error:
        results.notes.append(str(error))
        _say(f"skipped: {error}")
        return fallback


def _quality(args: argparse.Namespace) -> int:
    """pass@1 per recipe: each conversion of the model opened directly on the CPU."""
    started = time.monotonic()
    catalog = load_catalog()
    if args.model not in catalog.models:
        raise UserInputError(f"unknown model {args.model!r} (known: {', '.join(sorted(catalog.models))})")
    store = ModelStore(engine_home())
    conversions = {m.recipe.name: m for m in store.manifests() if m.model == args.model}
    recipes = _split(args.recipes, list(conversions), "converted recipe")
    tasks = load_tasks(_split(args.languages, LANGUAGES, "language") or None)
    results = BenchResults(machine_facts(discover()))
    for recipe in recipes:
        manifest = conversions[recipe]
        pipeline = OpenVinoPipeline(PipelineSpec(store.path(manifest.name), "CPU", cache_dir=store.cache_dir))
        _say(f"quality: {len(tasks)} tasks on {manifest.name}")
        results.quality.append(
            measure_quality(
                "npu-engine", "-", manifest.name, recipe, "CPU", chat_answerer(pipeline.generate), tasks
            )
        )
        del pipeline
    if args.baseline:
        gguf = source_gguf(next(iter(conversions.values())), catalog, store)
        if gguf is None:
            results.notes.append(f"llama.cpp baseline skipped: no GGUF of {args.model}'s weights here")
        else:
            results.quality.append(_llama_quality(gguf, "-", tasks))
    results.seconds = time.monotonic() - started
    out = _write(args.out, results)
    print(markdown(results))
    _say(f"results in {out}")
    return 0


def _routing(args: argparse.Namespace) -> int:
    """Accuracy on both splits (the held-out one is never fitted on), or a fit on the training split."""
    rules = load_rules(args.rules)
    prompts = load_labelled(args.prompts)
    if args.fit is not None:
        fitted = fit(rules, [p for p in prompts if p.split == "train"])
        write_text_atomically(args.fit, json.dumps(fitted.to_dict(), indent=1) + "\n")
        _say(
            f"rules fitted on {sum(p.split == 'train' for p in prompts)} training prompts "
            f"written to {args.fit}"
        )
        rules = fitted
    profile_name = args.profile or catalog_profile()
    catalog = load_catalog()
    router = Router(rules, catalog.profile(profile_name))
    if args.second_stage:
        engine = Engine.from_settings(profile_name, catalog=catalog)
        router = Router(rules, router.profile, model_classifier(fast_tier_generate(engine)))
    reports = [evaluate(router, prompts, split) for split in ("train", "heldout")]
    parts = ["# Router accuracy" + (" (rules, then the fast model when unsure)" if args.second_stage else "")]
    for report in reports:
        parts += [
            f"## {report.split}: {report.accuracy:.1%} ({report.correct}/{report.total}), "
            f"{report.microseconds_per_decision / 1000:.3f} ms per decision",
            confusion_table(report),
        ]
    text = "\n\n".join(parts) + "\n"
    print(text)
    folder = _results_folder(args.out)
    (folder / "routing.md").write_text(text)
    (folder / "routing.json").write_text(
        json.dumps([asdict(r) | {"accuracy": r.accuracy} for r in reports], indent=2) + "\n"
    )
    _say(f"results in {folder}")
    return 0


def _results_folder(out: Path | None) -> Path:
    """`out`, else npu-bench-results/<UTC time>; created."""
    folder = out or Path("npu-bench-results") / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _write(out: Path | None, results: BenchResults) -> Path:
    folder = _results_folder(out)
    write_plots(results, folder)
    (folder / "results.json").write_text(results.to_json())
    (folder / "summary.md").write_text(markdown(results))
    return folder


if __name__ == "__main__":
    sys.exit(main())
