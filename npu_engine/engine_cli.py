"""`npu-engine`: the command line over the engine's Python API."""

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import get_args

from npu_engine.attest_verify import read_receipt_file, verify_receipt
from npu_engine.backends.remote import ollama_base_url
from npu_engine.catalog import TIERS, load_catalog
from npu_engine.cli_support import run_cli
from npu_engine.conversion_needs import SystemMemory
from npu_engine.convert import ConversionPlan, Converter
from npu_engine.device_profile import profile_path, read_profile
from npu_engine.devices import Inventory, discover, read_inventory
from npu_engine.doctor import diagnose
from npu_engine.engine import Engine, fast_tier_generate
from npu_engine.errors import NpuEngineError, ReceiptError, UserInputError
from npu_engine.files import human_bytes, write_text_atomically
from npu_engine.generation import Message
from npu_engine.gguf_source import source_gguf_path
from npu_engine.machine import package_version
from npu_engine.manifest import Manifest
from npu_engine.plan_checklist import checklist
from npu_engine.planner import Planner
from npu_engine.progress import SilentReporter
from npu_engine.readiness import DEFAULT_TIER, ProfileChoice, choose_profile, tier_command
from npu_engine.receipt_keys import ReceiptKeys, load_public_key
from npu_engine.recipes import DeviceClass, load_recipe_book
from npu_engine.request import BackendChoice, GenerateRequest, GenerationResult
from npu_engine.router import Router, load_rules, model_classifier
from npu_engine.scheduler import TierPlacement, default_budget
from npu_engine.server.config import DEFAULT_PORT, ServerConfig, is_loopback, keep_alive_seconds
from npu_engine.settings import (
    api_key_setting,
    engine_home,
    ollama_host,
    ollama_models_dir,
    profile_setting,
    router_rules_path,
)
from npu_engine.sources.ollama import installed_models
from npu_engine.store import ModelStore
from npu_engine.wiring import configured_remote_tiers, with_emulated_npu

ALLOW_MODIFIED_HELP = "serve model files that no longer match their manifest (with a warning)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="npu-engine", description="Local coder models on NPU, GPU or CPU.")
    parser.add_argument("--verbose", "-v", action="store_true", help="log each fallback step as it happens")
    commands = parser.add_subparsers(dest="command", required=True)

    def engine_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--tier", choices=(*TIERS, "auto"), default="code", help="a tier, or auto: the router chooses"
        )
        sub.add_argument(
            "--profile",
            default=None,
            help="catalog profile (default: $NPU_ENGINE_PROFILE, else chosen from what is converted here)",
        )
        sub.add_argument("--max-new-tokens", type=int, default=512)
        sub.add_argument("--temperature", type=float, default=0.0)
        sub.add_argument("--seed", type=int, default=None)
        sub.add_argument(
            "--decoding", choices=("auto", "plain", "speculative", "prompt_lookup"), default="auto"
        )
        sub.add_argument(
            "--backend",
            choices=get_args(BackendChoice),
            default="auto",
            help="what runs a CPU tier (default: the one measured faster for the request); "
            "remote: the tier's server in remote-tiers.json",
        )
        sub.add_argument(
            "--emulate-npu",
            action="store_true",
            help="run NPU placements through NPUW on the CPU (slow; for testing)",
        )
        sub.add_argument("--allow-modified-models", action="store_true", help=ALLOW_MODIFIED_HELP)

    run = commands.add_parser(
        "run", help="answer one prompt, streaming, then print tier, model, device and speed"
    )
    run.add_argument("prompt")
    engine_options(run)
    run.add_argument(
        "--receipt", type=Path, metavar="FILE", help="write the answer's signed receipt (DSSE JSON) to FILE"
    )
    run.add_argument("--output", type=Path, metavar="FILE", help="also write the answer's exact text to FILE")
    chat = commands.add_parser("chat", help="an interactive chat; an empty line or Ctrl-D ends it")
    engine_options(chat)
    planning = commands.add_parser("plan", help="explain where each tier would run, and why")
    planning.add_argument("--profile", default=None)
    planning.add_argument("--inventory", type=Path, help="plan for the machine described in this JSON file")
    planning.add_argument("--json", action="store_true", help="the checklist as JSON, for scripts")
    commands.add_parser("devices", help="list the devices OpenVINO sees")
    doctor = commands.add_parser(
        "doctor",
        help="check the install, the devices, the model store and Ollama; print what to fix "
        "(exit 1 when something needs fixing)",
    )
    doctor.add_argument("--json", action="store_true", help="print the findings as JSON")
    serve = commands.add_parser("serve", help="serve the OpenAI and Ollama HTTP APIs (127.0.0.1 by default)")
    serve.add_argument("--profile", default=None)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument(
        "--allow-remote", action="store_true", help="required to bind an address other than loopback"
    )
    serve.add_argument("--api-key", default=None, help="require this key (default: $NPU_ENGINE_API_KEY)")
    serve.add_argument(
        "--allowed-host", action="append", default=[], help="a Host name to accept besides loopback"
    )
    serve.add_argument("--allowed-origin", action="append", default=[], help="a browser origin for CORS")
    serve.add_argument("--max-body-bytes", type=int, default=1 << 20)
    serve.add_argument("--max-waiting", type=int, default=8, help="requests queued per model before 503")
    serve.add_argument(
        "--keep-alive", default="5m", help="how long an idle model stays loaded (Ollama syntax)"
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        default=1000,
        help="open connections at most (also kept under half the open-file limit)",
    )
    serve.add_argument(
        "--header-timeout",
        type=float,
        default=15.0,
        help="seconds a client has to send a request head, from connecting or the last response",
    )
    serve.add_argument("--body-timeout", type=float, default=30.0, help="seconds to send a request body")
    serve.add_argument(
        "--connection-keep-alive", type=float, default=5.0, help="seconds an idle connection stays open"
    )
    serve.add_argument("--emulate-npu", action="store_true")
    serve.add_argument("--allow-modified-models", action="store_true", help=ALLOW_MODIFIED_HELP)
    serve.add_argument(
        "--continuous-batching",
        action="store_true",
        help="decode concurrent requests together (faster under load; OpenVINO GenAI 2026.4 leaks there)",
    )
    serve.add_argument(
        "--receipts", action="store_true", help="sign every answer: its `npu_engine` field has the receipt"
    )
    serve.add_argument(
        "--log-prompts",
        action="store_true",
        help="show each request's prompt (escaped, cut at 500 characters) in the access log",
    )
    verify = commands.add_parser(
        "verify", help="check a receipt: its signature, the text it names, and the model that wrote it"
    )
    verify.add_argument("receipt", type=Path)
    verify.add_argument("--text", type=Path, metavar="FILE", help="the text the receipt should be for")
    verify.add_argument(
        "--key", type=Path, metavar="PUB", help="the signer's public key (default: this engine home's)"
    )
    key = commands.add_parser("key", help="print the public key receipts are signed with (made on first use)")
    key.add_argument("--out", type=Path, metavar="FILE", help="write it to FILE instead")
    routing = commands.add_parser("route", help="say which task, tier and decoding the router picks, and why")
    routing.add_argument("prompt")
    routing.add_argument("--profile", default=None)
    routing.add_argument(
        "--second-stage",
        action="store_true",
        help="when the rules are unsure, ask the fast tier's model (needs it converted)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The result and the error already tell every fallback step; the log repeats them with -v.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(name)s: %(message)s")
    return run_cli(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    if args.command == "devices":
        _print_inventory(discover())
        return 0
    if args.command == "doctor":
        return _doctor(args.json)
    if args.command == "key":
        return _key(args.out)
    if args.command == "verify":
        return _verify(args.receipt, args.text, args.key)
    if args.command == "plan":
        return _plan(args)
    store = ModelStore(engine_home())
    inventory = discover()
    if getattr(args, "emulate_npu", False) and not inventory.of_kind("npu"):
        inventory = with_emulated_npu(inventory)
    choice = _choose_profile(args.profile, store, inventory)
    profile = choice.name
    if args.command == "route":
        return _route(args.prompt, profile, args.second_stage)
    if args.command == "serve":
        return _serve(args, choice)
    print(choice.line(), file=sys.stderr)
    engine = Engine.from_settings(
        profile, emulate_npu=args.emulate_npu, allow_modified_models=args.allow_modified_models
    )
    if args.command == "run":
        for path in (args.receipt, args.output):
            _check_writable(path)
        result = _answer(engine, args.prompt, args, receipt=args.receipt is not None)
        _keep(result, args.receipt, args.output)
        return 0
    history: list[Message] = []
    while True:
        try:
            line = input(">>> ").strip()
        except EOFError:
            print()
            return 0
        if not line:
            return 0
        try:
            result = _answer(engine, [*history, {"role": "user", "content": line}], args)
        except NpuEngineError as error:
            # The turn is dropped and the chat goes on: the next message may well be answered.
            print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
            continue
        history += [{"role": "user", "content": line}, {"role": "assistant", "content": result.text}]


def _choose_profile(asked: str | None, store: ModelStore, inventory: Inventory) -> ProfileChoice:
    """The profile a command runs: --profile, $NPU_ENGINE_PROFILE, else from what is converted
    here (see readiness.choose_profile)."""
    kinds = {device.kind for device in inventory.devices}
    return choose_profile(
        asked, profile_setting(), load_catalog(), load_recipe_book(), store.manifests(), kinds
    )


def _plan(args: argparse.Namespace) -> int:
    """The checklist of where each tier runs, what is converted, and what converting the rest takes."""
    catalog, recipes = load_catalog(), load_recipe_book()
    store = ModelStore(engine_home())
    # A described machine is planned with this store's models but without this machine's speeds.
    inventory = read_inventory(args.inventory) if args.inventory else discover()
    choice = _choose_profile(args.profile, store, inventory)
    manifests = store.manifests()
    measured = None if args.inventory else read_profile(profile_path(store.root))
    planner = Planner(
        catalog.profile(choice.name),
        catalog,
        recipes,
        inventory,
        default_budget(inventory),
        list(measured.measurements) if measured else [],
        configured_remote_tiers(store),
    )
    converter = Converter(store, catalog, recipes, SilentReporter(), ollama_models_dir())

    def cpu_backend(placement: TierPlacement) -> str | None:
        if placement.device is None or inventory.device(placement.device).kind != "cpu":
            return None
        if catalog.model(placement.model).family.embedding:
            return None
        here = _gguf_here(manifests, placement.model, planner, store)
        words = planner.cpu_backends(placement.tier, here)
        conversion = planner.conversion(manifests, placement.model, "cpu")
        tuned = measured.tuned_for(conversion.name, "CPU") if measured and conversion else None
        return words + (f"; settings (npu-bench tune): {tuned.why}" if tuned is not None else "")

    def conversions(tier: str, device: DeviceClass) -> list[ConversionPlan]:
        plans = converter.plan_tier(choice.name, tier, device, None)
        if not args.inventory:
            return plans
        # What converting takes is weighed against the described machine's memory (its disk is
        # not described).
        described = SystemMemory(inventory.memory_bytes, inventory.memory_bytes)
        return [replace(plan, memory=described, disk_free=plan.needs.disk) for plan in plans]

    found = checklist(
        choice,
        planner,
        manifests,
        conversions,
        cpu_backend,
        frozenset(installed_models(ollama_models_dir())),
        disk_known=not args.inventory,
    )
    print(json.dumps(found.to_json(), indent=2) if args.json else found.text())
    return 0


def _serve(args: argparse.Namespace, choice: ProfileChoice) -> int:
    if args.receipts:
        ReceiptKeys(engine_home()).signer()  # a key that cannot be made fails here, not per answer
    from npu_engine.server.access_log import enable_access_log
    from npu_engine.server.app import create_app
    from npu_engine.server.connections import raise_descriptor_limit, serve_app
    from npu_engine.server.log_limit import limit_log_rate

    if not is_loopback(args.host) and not args.allow_remote:
        raise UserInputError(
            f"refusing to bind {args.host}: pass --allow-remote to serve beyond this machine"
        )
    api_key = args.api_key or api_key_setting()
    if not is_loopback(args.host) and not api_key:
        print(
            f"warning: serving on {args.host} without an API key: anyone who can reach it can use it "
            "(set --api-key or $NPU_ENGINE_API_KEY)",
            file=sys.stderr,
        )
    if args.max_waiting < 1 or args.max_body_bytes < 1024:
        raise UserInputError("--max-waiting must be at least 1 and --max-body-bytes at least 1024")
    timeouts = (args.header_timeout, args.body_timeout, args.connection_keep_alive)
    if args.max_connections < 1 or not all(0 < t < 86400 for t in timeouts):
        raise UserInputError(
            "--max-connections must be at least 1, and every timeout between 0 and 86400 seconds"
        )
    keep = keep_alive_seconds(args.keep_alive)
    print(choice.line(), file=sys.stderr)  # after the checks: a refusal stays one line
    engine = Engine.from_settings(
        choice.name,
        emulate_npu=args.emulate_npu,
        max_waiting=args.max_waiting,
        keep_alive_seconds=keep if keep is not None else 300.0,
        continuous_batching=args.continuous_batching,
        allow_modified_models=args.allow_modified_models,
        receipts=args.receipts,
    )
    config = ServerConfig(
        host=args.host,
        port=args.port,
        api_key=api_key,
        allowed_hosts=tuple(args.allowed_host),
        allowed_origins=tuple(args.allowed_origin),
        max_body_bytes=args.max_body_bytes,
        version=package_version("npu-engine") or "0.0.0",
        max_connections=args.max_connections,
        header_timeout_seconds=args.header_timeout,
        body_timeout_seconds=args.body_timeout,
        connection_keep_alive_seconds=args.connection_keep_alive,
        log_prompts=args.log_prompts,
    )
    limiter = limit_log_rate(logging.getLogger(), config.log_lines_per_second)
    enable_access_log()  # one line per request on stderr, with or without -v
    descriptors = raise_descriptor_limit()
    print(f"npu-engine serving profile {choice.name!r} on http://{args.host}:{args.port}", file=sys.stderr)
    serve_app(create_app(engine, config), config, descriptors)
    if limiter.dropped_total:  # the last flood's count may not have been said yet
        print(f"{limiter.dropped_total} repeated log lines were dropped in all", file=sys.stderr)
    return 0


def _route(prompt: str, profile: str, second_stage: bool) -> int:
    store = ModelStore(engine_home())
    catalog = load_catalog()
    router = Router(load_rules(router_rules_path(store.root)), catalog.profile(profile))
    if second_stage:
        engine = Engine.from_settings(profile, store=store, catalog=catalog)
        router = Router(router.rules, router.profile, model_classifier(fast_tier_generate(engine)))
    print(router.route(prompt).describe())
    return 0


def _answer(
    engine: Engine, prompt: str | list[Message], args: argparse.Namespace, receipt: bool = False
) -> GenerationResult:
    request = GenerateRequest.of(
        prompt,
        tier=args.tier,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
        decoding=args.decoding,
        backend=args.backend,
        receipt=receipt,
    )
    result: GenerationResult | None = None
    for chunk in engine.stream(request):
        print(chunk.text, end="", flush=True)
        result = chunk.result or result
    assert result is not None
    m = result.metrics
    print()
    for step in result.fallback:
        print(f"[fallback: {step.target} {step.reason}]", file=sys.stderr)
    if result.route is not None:
        print(f"[router: {result.route.describe()}]", file=sys.stderr)
    print(
        f"[tier {result.tier} | model {result.model} | device {result.device} | {result.backend} | "
        f"{result.decoding} | "
        f"{m.tokens_per_second:.1f} tokens/s | first token {m.ttft_ms:.0f} ms | "
        f"{m.input_tokens} in"
        + (f" ({m.cached_tokens} cached)" if m.cached_tokens else "")
        + f", {m.output_tokens} out"
        + (
            f" ({m.accepted_tokens} accepted from the draft or prompt)"
            if m.accepted_tokens is not None
            else ""
        )
        + f" | load {m.load_seconds:.1f}s | {result.finish_reason}]",
        file=sys.stderr,
    )
    return result


def _check_writable(path: Path | None) -> None:
    """UserInputError, before any work, when a file `path` names cannot be written there."""
    if path is None:
        return
    if path.is_dir():
        raise UserInputError(f"{path} is a folder: name a file to write")
    if not path.parent.is_dir():
        raise UserInputError(f"cannot write {path}: the folder {path.parent} does not exist")


def _write(path: Path, text: str) -> None:
    _check_writable(path)
    try:
        write_text_atomically(path, text)
    except OSError as error:
        raise UserInputError(f"cannot write {path}: {error.strerror or error}") from None


def _keep(result: GenerationResult, receipt: Path | None, output: Path | None) -> None:
    """Write the answer's exact text and its receipt where `run` was asked to."""
    if output is not None:
        _write(output, result.text)
    if receipt is None:
        return
    if result.receipt is None:
        raise ReceiptError(f"no receipt: {result.device} answered, not a model of this machine", "remote")
    _write(receipt, result.receipt.to_json())
    print(f"[receipt: {receipt} | key {result.receipt.keyid[:16]}]", file=sys.stderr)


def _doctor(as_json: bool) -> int:
    store = ModelStore(engine_home())
    # The first model to convert: the code tier of the profile npu-engine would choose here.
    choice = _choose_profile(None, store, discover())
    catalog = load_catalog()
    first = tier_command(DEFAULT_TIER, catalog.profile(choice.name), catalog).words()
    report = diagnose(store, ollama_models_dir(), ollama_base_url(ollama_host()), first)
    if as_json:
        print(report.to_json())
    else:
        # A terminal that cannot print the arrow (a Latin-1 locale) gets ASCII, not a traceback.
        arrow = "→" if _encodes(sys.stdout, "→") else "->"
        for finding in report.findings:
            print(finding.line(arrow))
        print(report.summary())
    return 1 if report.needs_fixing else 0


def _encodes(stream: object, text: str) -> bool:
    try:
        text.encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _key(out: Path | None) -> int:
    pem = ReceiptKeys(engine_home()).public_pem()
    if out is None:
        print(pem, end="")
    else:
        _write(out, pem)
    return 0


def _verify(receipt: Path, text: Path | None, key: Path | None) -> int:
    store = ModelStore(engine_home())
    public = load_public_key(key) if key is not None else ReceiptKeys(store.root).public_key()
    try:
        expected = text.read_bytes() if text is not None else None
    except OSError as error:
        raise UserInputError(f"cannot read {text}: {error.strerror or error}") from None
    verified = verify_receipt(read_receipt_file(receipt), public, store, load_catalog(), expected)
    print(verified.summary())
    return 0


def _print_inventory(inventory: Inventory) -> None:
    print(f"{inventory.description}: {human_bytes(inventory.memory_bytes)} RAM, {inventory.cpu_cores} cores")
    for device in inventory.devices:
        kind = "integrated" if device.integrated else "discrete"
        print(
            f"  {device.name:8} {device.kind.upper():4} {kind:10} "
            f"{human_bytes(device.memory_bytes):>9}  {device.full_name}"
        )


def _gguf_here(manifests: list[Manifest], model: str, planner: Planner, store: ModelStore) -> bool:
    """Whether the CPU conversion of `model` has its source GGUF on this machine."""
    manifest = planner.conversion(manifests, model, "cpu")
    path = source_gguf_path(manifest, planner.catalog, store.root) if manifest else None
    return path is not None and path.is_file()


def _embeds(planner: Planner, model: str) -> bool:
    return planner.catalog.model(model).family.embedding


if __name__ == "__main__":
    sys.exit(main())
