"""`npu-bench`: measure the engine on this machine and write a device profile the scheduler reads."""

import argparse
import json
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import get_args

from npu_engine.bench import bench_prompts, markdown_table, measure_speed, to_measurements
from npu_engine.catalog import TIERS
from npu_engine.cli_support import run_cli
from npu_engine.device_profile import DeviceProfile, profile_path, write_profile
from npu_engine.devices import DEVICE_KINDS, Inventory, discover
from npu_engine.engine import Decoding, Engine
from npu_engine.errors import UserInputError
from npu_engine.settings import catalog_profile, engine_home


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="npu-bench", description="Measure npu-engine on this machine.")
    commands = parser.add_subparsers(dest="command", required=True)
    speed = commands.add_parser(
        "speed", help="tokens/s, first-token time and load time per tier, device and mode"
    )
    speed.add_argument(
        "--profile", default=None, help="catalog profile (default: $NPU_ENGINE_PROFILE or plan)"
    )
    speed.add_argument("--tiers", default="code", help="comma-separated tiers")
    speed.add_argument("--devices", default="", help="comma-separated device kinds (default: every one here)")
    speed.add_argument("--modes", default="plain", help="comma-separated: plain, speculative, prompt_lookup")
    speed.add_argument("--kinds", default="", help="comma-separated prompt kinds from bench/prompts.jsonl")
    speed.add_argument("--runs", type=int, default=3)
    speed.add_argument("--max-new-tokens", type=int, default=128)
    speed.add_argument(
        "--emulate-npu", action="store_true", help="also run the NPU path on the CPU (never a figure)"
    )
    speed.add_argument(
        "--out", type=Path, default=None, help="results folder (default: npu-bench-results/<time>)"
    )
    speed.add_argument("--no-profile", action="store_true", help="do not write the device profile")
    return parser


def _split(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    for item in items:
        if item not in allowed:
            raise UserInputError(f"unknown {what} {item!r} (known: {', '.join(allowed)})")
    return items


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _speed(args))


def _speed(args: argparse.Namespace) -> int:
    tiers = _split(args.tiers, TIERS, "tier")
    modes: list[Decoding] = _split(args.modes, get_args(Decoding)[1:], "mode")  # type: ignore[assignment]
    kinds = _split(args.kinds, tuple(sorted({p.kind for p in bench_prompts()})), "prompt kind") or None
    if args.runs < 1 or args.max_new_tokens < 1:
        raise UserInputError("--runs and --max-new-tokens must be at least 1")
    here = discover()
    wanted = [
        kind
        for kind in DEVICE_KINDS
        if kind in (_split(args.devices, DEVICE_KINDS, "device kind") or DEVICE_KINDS)
    ]
    profile = args.profile or catalog_profile()
    prompts = bench_prompts(kinds)
    summaries = []
    for kind in wanted:
        devices = here.of_kind(kind)
        emulate = kind == "npu" and not devices and args.emulate_npu
        if not devices and not emulate:
            continue
        # One device at a time: the engine sees only it, so the plan puts every tier there.
        only = Inventory(
            here.description, here.memory_bytes, here.cpu_cores, tuple(devices or here.of_kind("cpu"))
        )
        engine = Engine(profile=profile, inventory=only, emulate_npu=emulate, remotes={}, measurements=[])
        for tier in tiers:
            for mode in modes:
                started = time.monotonic()
                try:
                    summary = measure_speed(engine, tier, mode, prompts, args.runs, args.max_new_tokens)
                except UserInputError as error:  # a mode this tier or device cannot run
                    print(f"skipped {tier} {mode} on {kind.upper()}: {error}", file=sys.stderr)
                    continue
                if emulate and "emulated" not in summary.device:
                    continue  # the emulated NPU could not take it; the CPU answered, measured elsewhere
                summaries.append(summary)
                print(
                    f"measured {tier} on {summary.device} ({mode}) in {time.monotonic() - started:.0f}s",
                    file=sys.stderr,
                )
    print(markdown_table(summaries))
    out = args.out or Path("npu-bench-results") / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.json").write_text(
        json.dumps({"machine": here.description, "results": [asdict(s) for s in summaries]}, indent=2) + "\n"
    )
    (out / "speed.md").write_text(markdown_table(summaries) + "\n")
    measurements = to_measurements(summaries)
    if measurements and not args.no_profile:
        path = profile_path(engine_home())
        write_profile(
            path,
            DeviceProfile(
                here.description, datetime.now(UTC).isoformat(timespec="seconds"), tuple(measurements)
            ),
        )
        print(f"device profile written to {path}", file=sys.stderr)
    print(f"results in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
