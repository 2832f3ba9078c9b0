"""`npu-bench`: measure the engine on this machine beside llama.cpp, and write the device profile the
scheduler reads. The command line over npu_engine.bench_run, bench_quality, bench_routing and soak.

    npu-bench run [--quick]           throughput, baselines, concurrency, load, quality: everything
    npu-bench speed                   throughput only (the engine's own figures)
    npu-bench quality --recipes ...   pass@1 of one model converted with several recipes
    npu-bench routing                 the router's accuracy on labelled prompts (train and held-out)
    npu-bench tools --tiers code      the tool-call success rate on bench/tool_prompts.jsonl
    npu-bench soak --url URL          concurrent clients against a running server: requests/s,
                                      latency percentiles, statuses, the server's RSS
    npu-bench autocomplete            fill-in-the-middle as an editor asks: first text and total
                                      time per tier (bench/autocomplete.jsonl)
    npu-bench tune                    the CPU runtime settings per model, measured; the fastest
                                      that answer as the defaults do go into the device profile
"""

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import cast, get_args

from npu_engine.backends.factory import OpenVinoPipelineFactory
from npu_engine.bench import bench_prompts
from npu_engine.bench_autocomplete import AUTOCOMPLETE_MAX_NEW_TOKENS, autocomplete_report, autocomplete_table
from npu_engine.bench_plan import PARTS, checked, run_plan
from npu_engine.bench_quality import quality_per_recipe
from npu_engine.bench_report import markdown, speed_table
from npu_engine.bench_routing import routing_report
from npu_engine.bench_run import bench_engines, run_bench
from npu_engine.bench_tools import tool_bench
from npu_engine.bench_tune import keep_tuned, tune, tune_table
from npu_engine.catalog import load_catalog
from npu_engine.cli_support import run_cli
from npu_engine.coding_tasks import LANGUAGES
from npu_engine.device_profile import profile_path
from npu_engine.devices import discover
from npu_engine.engine import Engine, fast_tier_generate
from npu_engine.errors import UserInputError
from npu_engine.recipes import load_recipe_book
from npu_engine.request import BackendChoice
from npu_engine.router import load_rules
from npu_engine.router_fit import load_labelled
from npu_engine.settings import catalog_profile, engine_home
from npu_engine.soak import SoakSettings, soak
from npu_engine.store import ModelStore


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
    tools = commands.add_parser("tools", help="the tool-call success rate per tier (20 prompts)")
    tools.add_argument("--profile", default=None, help="catalog profile (default: $NPU_ENGINE_PROFILE)")
    tools.add_argument("--tiers", default="code", help="comma-separated tiers (default: code)")
    tools.add_argument("--out", type=Path, default=None)
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
    autocomplete = commands.add_parser(
        "autocomplete", help="fill-in-the-middle latency per tier: first token, first text, total"
    )
    autocomplete.add_argument(
        "--profile", default=None, help="catalog profile (default: $NPU_ENGINE_PROFILE)"
    )
    autocomplete.add_argument(
        "--tiers", default="", help="comma-separated (default: every tier that infills)"
    )
    autocomplete.add_argument("--runs", type=int, default=1, help="passes over the cases after the warm-up")
    autocomplete.add_argument("--max-new-tokens", type=int, default=AUTOCOMPLETE_MAX_NEW_TOKENS)
    autocomplete.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    autocomplete.add_argument(
        "--backends",
        default="auto",
        help="comma-separated: auto, openvino, llama.cpp (one row pair each; default: auto)",
    )
    autocomplete.add_argument(
        "--no-reuse", action="store_true", help="evaluate every prompt whole (no prefix reuse)"
    )
    tuning = commands.add_parser(
        "tune", help="CPU runtime settings per model (OpenVINO, speculation, llama.cpp threads), measured"
    )
    tuning.add_argument("--profile", default=None, help="catalog profile (default: $NPU_ENGINE_PROFILE)")
    tuning.add_argument(
        "--kinds", default="", help="comma-separated prompt kinds from bench/prompts.jsonl (default: all)"
    )
    tuning.add_argument("--max-new-tokens", type=int, default=64)
    tuning.add_argument("--out", type=Path, default=None, help="also write the trials as JSON here")
    tuning.add_argument("--no-profile", action="store_true", help="do not write the device profile")
    return parser


def _items(text: str) -> list[str]:
    """The items of a comma-separated option."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "quality":
        return run_cli(lambda: _quality(args))
    if args.command == "routing":
        return run_cli(lambda: _routing(args))
    if args.command == "soak":
        return run_cli(lambda: _soak(args))
    if args.command == "tools":
        return run_cli(lambda: _tools(args))
    if args.command == "autocomplete":
        return run_cli(lambda: _autocomplete(args))
    if args.command == "tune":
        return run_cli(lambda: _tune(args))
    return run_cli(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    catalog = load_catalog()
    plan = run_plan(
        catalog,
        profile=args.profile,
        quick=args.command == "run" and args.quick,
        speed_only=args.command == "speed",
        tiers=_items(args.tiers),
        modes=_items(args.modes),
        device_kinds=_items(args.devices),
        prompt_kinds=_items(args.kinds),
        runs=args.runs,
        max_new_tokens=args.max_new_tokens,
        skip=_items(getattr(args, "skip", "")),
        concurrency=[int(x) for x in getattr(args, "concurrency", "1").split(",") if x.strip().isdigit()],
        languages=_items(getattr(args, "languages", "")),
        emulate_npu=args.emulate_npu,
        continuous_batching=args.continuous_batching,
    )
    store = ModelStore(engine_home())
    done = run_bench(
        plan,
        store=store,
        catalog=catalog,
        inventory=discover(),
        engines=bench_engines(store, catalog),
        say=_say,
        out=args.out,
        write_device_profile=not args.no_profile,
    )
    if done.results.speed:
        print(speed_table(done.results.speed))
    if done.device_profile is not None:
        _say(f"device profile written to {done.device_profile}")
    _say(f"results in {done.folder} ({done.results.seconds:.0f} s)")
    return 0


def _quality(args: argparse.Namespace) -> int:
    catalog = load_catalog()
    store = ModelStore(engine_home())
    done = quality_per_recipe(
        args.model,
        _items(args.recipes),
        languages=_items(args.languages),
        baseline=args.baseline,
        store=store,
        catalog=catalog,
        inventory=discover(),
        engines=bench_engines(store, catalog),
        say=_say,
        out=args.out,
    )
    print(markdown(done.results))
    _say(f"results in {done.folder}")
    return 0


def _routing(args: argparse.Namespace) -> int:
    rules = load_rules(args.rules)
    prompts = load_labelled(args.prompts)
    profile = args.profile or catalog_profile()
    catalog = load_catalog()
    done = routing_report(
        rules,
        prompts,
        profile,
        catalog=catalog,
        say=_say,
        fit_to=args.fit,
        fast_model=(
            (lambda: fast_tier_generate(Engine.from_settings(profile, catalog=catalog)))
            if args.second_stage
            else None
        ),
        out=args.out,
    )
    print(done.text)
    _say(f"results in {done.folder}")
    return 0


def _tools(args: argparse.Namespace) -> int:
    engine = Engine.from_settings(args.profile or catalog_profile(), remotes=())
    reports, folder = tool_bench(engine, _items(args.tiers), say=_say, out=args.out)
    for report in reports:
        print(f"{report.tier} ({report.model}): {report.rate:.0%} of {len(report.outcomes)} prompts")
    _say(f"results in {folder}")
    return 0


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
    serve_profile = (args.profile or catalog_profile()) if args.serve else None
    report = soak(settings, say=_say, serve_profile=serve_profile, out=args.out)
    print(report.table())
    return 0


def _autocomplete(args: argparse.Namespace) -> int:
    engine = Engine.from_settings(args.profile or catalog_profile(), prefix_reuse=not args.no_reuse)
    backends = checked(_items(args.backends), get_args(BackendChoice), "backend")
    rows = autocomplete_report(
        engine,
        _items(args.tiers),
        args.runs,
        args.max_new_tokens,
        say=_say,
        backends=cast(list[BackendChoice], backends),
    )
    print(autocomplete_table(rows))
    if args.out is not None:
        args.out.write_text(json.dumps([asdict(row) for row in rows], indent=2) + "\n", encoding="utf-8")
    return 0


def _tune(args: argparse.Namespace) -> int:
    catalog = load_catalog()
    store = ModelStore(engine_home())
    prompts = bench_prompts(_items(args.kinds) or None)
    if not prompts or args.max_new_tokens < 2:
        raise UserInputError("tune needs at least one prompt (--kinds) and --max-new-tokens of 2 or more")
    inventory = discover()
    result = tune(
        catalog.profile(args.profile or catalog_profile()),
        catalog,
        store,
        load_recipe_book(),
        prompts,
        OpenVinoPipelineFactory(),
        _say,
        max_new_tokens=args.max_new_tokens,
    )
    print(tune_table(result))
    for kept in result.tuned:
        print(f"{kept.model}: {kept.why}")
    if args.out is not None:
        args.out.write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    if result.tuned and not args.no_profile:
        path = profile_path(store.root)
        keep_tuned(path, inventory.description, result)
        _say(f"device profile written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
