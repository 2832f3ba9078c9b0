"""`npu-convert`: the command line over npu_engine.convert and the model store."""

import argparse
import sys
from pathlib import Path
from typing import get_args

from npu_engine.catalog import EMBED_TIER, TIERS, load_catalog
from npu_engine.cli_support import run_cli
from npu_engine.convert import Converter, ConvertRequest, describe, describe_plan
from npu_engine.errors import ConversionMemoryError, StoreError
from npu_engine.files import human_bytes
from npu_engine.manifest import verify_files
from npu_engine.model_signature import check_model_signature, sign_model, signature_path
from npu_engine.ovms_export import OVMS_DEVICES, OvmsRequest, export_ovms
from npu_engine.progress import Reporter, RichReporter, SilentReporter
from npu_engine.receipt_keys import ReceiptKeys, load_public_key
from npu_engine.recipes import DeviceClass, load_recipe_book
from npu_engine.settings import catalog_profile, engine_home, ollama_models_dir
from npu_engine.sources import SPEC_HELP
from npu_engine.store import ModelStore

COMMANDS = ("convert", "tier", "list", "verify", "sign", "rm", "prune-cache", "export-ovms")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="npu-convert",
        description="Convert coder models to OpenVINO IR for NPU, GPU or CPU, and manage the model store.",
        epilog=f"A bare `npu-convert SOURCE` means `npu-convert convert SOURCE`. SOURCE is {SPEC_HELP}.",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="print only results and errors")
    parser.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="also show what the libraries print during a step (warnings, their own tables and bars)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def conversion_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--device", choices=get_args(DeviceClass), default="cpu", help="device class to convert for"
        )
        sub.add_argument(
            "--recipe", help="a recipe from convert/recipes.json (default: the device's default)"
        )
        sub.add_argument("--force", action="store_true", help="redo the conversion, replacing the model")
        sub.add_argument(
            "--dry-run",
            action="store_true",
            help="print the memory and disk the conversion needs and whether they fit; convert nothing",
        )

    convert = commands.add_parser("convert", help="convert one model source")
    convert.add_argument("source", help=SPEC_HELP)
    conversion_options(convert)
    convert.add_argument("--name", help="store name (default: <source>-<recipe>)")
    convert.add_argument("--trust-remote-code", action="store_true", help="allow code shipped with the model")
    convert.add_argument(
        "--dequantize",
        action="store_true",
        help="convert a GGUF through a float model even where it can be built from its quantized tensors "
        "(same weights for data-free recipes; about 5-8 bytes of memory per weight instead of ~3x the file)",
    )

    tier = commands.add_parser("tier", help="convert what a catalog tier needs (its model and draft)")
    tier.add_argument("tier", choices=(*TIERS, EMBED_TIER))
    tier.add_argument(
        "--profile", default=None, help="catalog profile (default: $NPU_ENGINE_PROFILE or plan)"
    )
    conversion_options(tier)

    listing = commands.add_parser("list", help="list the models in the store")
    listing.add_argument("--cache", action="store_true", help="also show each model's compiled-model cache")
    commands.add_parser("prune-cache", help="delete compiled-model caches of models no longer in the store")
    verify = commands.add_parser(
        "verify", help="re-hash every file of a model against its manifest, and check its signature if signed"
    )
    verify.add_argument("name")
    verify.add_argument(
        "--key", type=Path, metavar="PUB", help="the signer's public key (default: this engine home's)"
    )
    sign = commands.add_parser(
        "sign",
        help="sign a model's manifest and files with this engine home's key (npu-engine key prints it)",
    )
    sign.add_argument("name")
    remove = commands.add_parser("rm", help="remove a model from the store")
    remove.add_argument("name")
    ovms = commands.add_parser(
        "export-ovms",
        help="write a converted model into an OpenVINO Model Server repository (config.json, graph.pbtxt)",
    )
    ovms.add_argument("name", help="a model in the store")
    ovms.add_argument(
        "directory", type=Path, help="the repository folder (created; its config.json is updated)"
    )
    ovms.add_argument("--servable", help="the name OVMS serves it under (default: the model's name)")
    ovms.add_argument(
        "--device",
        type=str.upper,
        choices=OVMS_DEVICES,
        help="OVMS target device (default: the one it was converted for)",
    )
    ovms.add_argument("--draft", help="a model in the store to draft for it (speculative decoding)")
    ovms.add_argument(
        "--force", action="store_true", help="replace a servable of that name in the repository"
    )
    return parser


def normalize(argv: list[str]) -> list[str]:
    """Insert the implied `convert` before a bare source."""
    for index, arg in enumerate(argv):
        if arg in ("-q", "--quiet", "-v", "--verbose"):
            continue
        if arg.startswith("-") or arg in COMMANDS:
            return argv
        return [*argv[:index], "convert", *argv[index:]]
    return argv


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(normalize(list(sys.argv[1:] if argv is None else argv)))
    return run_cli(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    store = ModelStore(engine_home())
    reporter: Reporter = SilentReporter() if args.quiet else RichReporter(verbose=args.verbose)
    if args.command in ("convert", "tier"):
        converter = Converter(store, load_catalog(), load_recipe_book(), reporter, ollama_models_dir())
        if args.dry_run:
            return _dry_run(converter, args)
        if args.command == "convert":
            results = [converter.convert(_request(args))]
        else:
            profile = args.profile or catalog_profile()
            results = converter.convert_tier(profile, args.tier, args.device, args.recipe, args.force)
        for result in results:
            if not result.already_done:
                # A model converted anew is not the one its signature (if any) was made for.
                signature_path(store, result.manifest.name).unlink(missing_ok=True)
            print(describe(result))
        return 0
    if args.command == "list":
        return _list(store, args.cache)
    if args.command == "prune-cache":
        print(f"freed {human_bytes(store.prune_cache())} in {store.cache_dir}")
        return 0
    if args.command == "verify":
        return _verify(store, args.name, reporter, args.key)
    if args.command == "sign":
        signature = sign_model(store, args.name, ReceiptKeys(store.root))
        print(f"{args.name}: signed with key {signature.keyid[:16]} in {signature.path}")
        return 0
    if args.command == "export-ovms":
        return _export_ovms(store, args)
    manifest = store.remove(args.name)
    signature_path(store, args.name).unlink(missing_ok=True)
    if manifest is None:
        print(f"removed {args.name} (it was not a complete model)")
    else:
        print(f"removed {manifest.name} ({human_bytes(manifest.size)})")
    return 0


def _request(args: argparse.Namespace) -> ConvertRequest:
    return ConvertRequest(
        source=args.source,
        device=args.device,
        recipe=args.recipe,
        name=args.name,
        force=args.force,
        trust_remote_code=args.trust_remote_code,
        dequantize=args.dequantize,
    )


def _dry_run(converter: Converter, args: argparse.Namespace) -> int:
    """Print each planned conversion's needs; exit 5 when one of them does not fit."""
    if args.command == "convert":
        plans = [converter.plan(_request(args))]
    else:
        plans = converter.plan_tier(args.profile or catalog_profile(), args.tier, args.device, args.recipe)
    for plan in plans:
        print("\n".join(describe_plan(plan)))
    return ConversionMemoryError.exit_code if any(plan.problems() for plan in plans) else 0


def _list(store: ModelStore, cache: bool) -> int:
    manifests = store.manifests()
    for name, why in store.broken():
        print(f"{name}: not a model ({why}); npu-convert rm {name} removes it", file=sys.stderr)
    if not manifests:
        print(f"no models in {store.models_dir}")
        return 0
    per_model, rest = store.cache_usage() if cache else ({}, 0)
    head = ("NAME", "SIZE", *(("CACHE",) if cache else ()), "RECIPE", "DEVICE", "SOURCE")
    rows = [head] + [
        (
            m.name,
            human_bytes(m.size),
            *((human_bytes(per_model.get(m.name, 0)),) if cache else ()),
            m.recipe.name,
            m.device.upper(),
            m.source.id,
        )
        for m in manifests
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(head) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    if cache:
        print(
            f"compiled-model cache in {store.cache_dir}: {human_bytes(sum(per_model.values()) + rest)}, "
            f"{human_bytes(rest)} of it no model's (npu-convert prune-cache deletes that)"
        )
    return 0


def _export_ovms(store: ModelStore, args: argparse.Namespace) -> int:
    request = OvmsRequest(args.name, args.directory, args.servable, args.device, args.draft, force=args.force)
    catalog = load_catalog()
    model = catalog.models.get(store.get(args.name).model)
    done = export_ovms(store, request, model.family if model is not None else None)
    print(
        f"{done.servable}: {human_bytes(done.size)} in {done.folder} for {done.device}, "
        f"listed in {done.config} "
        f"(serve with: ovms --rest_port 8000 --config_path {done.config})"
    )
    return 0


def _verify(store: ModelStore, name: str, reporter: Reporter, key: Path | None = None) -> int:
    manifest = store.get(name)
    with reporter.step(f"verifying {name}", total=manifest.size) as advance:
        problems = verify_files(store.path(name), manifest, advance)
    if problems:
        raise StoreError(f"{name} failed verification: " + "; ".join(problems))
    signature = None
    if signature_path(store, name).is_file():
        public = load_public_key(key) if key is not None else ReceiptKeys(store.root).public_key()
        signature = check_model_signature(store, name, public)
    signed = (
        f", signed with key {signature.keyid[:16]} at {signature.signed}" if signature else ", not signed"
    )
    print(f"{name}: ok, {len(manifest.files)} files, {human_bytes(manifest.size)} match the manifest{signed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
