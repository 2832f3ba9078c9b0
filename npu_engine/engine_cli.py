"""`npu-engine`: the command line over the engine's Python API."""

import argparse
import sys

from npu_engine.catalog import TIERS
from npu_engine.cli_support import run_cli
from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.files import human_bytes
from npu_engine.settings import catalog_profile


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="npu-engine", description="Local coder models on NPU, GPU or CPU.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="answer one prompt and print tier, model, device and speed")
    run.add_argument("prompt")
    run.add_argument("--tier", choices=TIERS, default="code")
    run.add_argument("--profile", default=None, help="catalog profile (default: $NPU_ENGINE_PROFILE or plan)")
    run.add_argument("--max-new-tokens", type=int, default=512)
    run.add_argument("--temperature", type=float, default=0.0)
    run.add_argument("--seed", type=int, default=None)
    run.add_argument(
        "--emulate-npu",
        action="store_true",
        help="run NPU placements through NPUW on the CPU (slow; for testing)",
    )
    commands.add_parser("devices", help="list the devices OpenVINO sees")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    if args.command == "devices":
        for device in discover():
            kind = "integrated" if device.integrated else "discrete"
            print(
                f"{device.name:8} {device.kind.upper():4} {kind:10} "
                f"{human_bytes(device.memory_bytes):>9}  {device.full_name}"
            )
        return 0
    engine = Engine(profile=args.profile or catalog_profile(), emulate_npu=args.emulate_npu)
    result = engine.generate(
        args.prompt,
        tier=args.tier,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
    )
    print(result.text)
    m = result.metrics
    print(
        f"\n[tier {result.tier} | model {result.model} | device {result.device} | "
        f"{m.tokens_per_second:.1f} tokens/s | first token {m.ttft_ms:.0f} ms | "
        f"{m.input_tokens} in, {m.output_tokens} out | load {m.load_seconds:.1f}s | {result.finish_reason}]",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
