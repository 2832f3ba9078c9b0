"""The doctor's store checks: each model against its manifest (as the engine checks it at load) and
its signature when signed, folders that are not models, compiled caches of removed models, what
interrupted conversions left, and the disk: per model, in all, and free."""

import shlex

from npu_engine.doctor_report import Finding
from npu_engine.errors import ReceiptError
from npu_engine.files import folder_size, human_bytes, mount_point
from npu_engine.manifest import Manifest
from npu_engine.model_signature import check_model_signature, signature_path
from npu_engine.receipt_keys import ReceiptKeys
from npu_engine.store import ModelStore

# Below this, converting a 1.5B model (its staging copy beside the old one at the swap) may not fit.
LOW_DISK_BYTES = 5_000_000_000
SWEPT = "the next npu-convert conversion clears it up (a half-swapped model is put back)"


def store_findings(store: ModelStore, first_model: str) -> list[Finding]:
    """Every model of `store` checked, then what else is in the store, then the disk.
    `first_model` is the command that converts a first model, said of an empty store."""
    root = store.root
    if root.exists() and not root.is_dir():
        return [
            Finding("store", "fix", f"the model store {root} is not a folder", "point NPU_ENGINE_HOME at one")
        ]
    if not root.is_dir():
        return [Finding("store", "note", f"no model store at {root} yet", first_model)]
    findings = [
        Finding(
            "store",
            "fix",
            f"{name}: not a model ({why})",
            # npu-convert rm removes model folders; a stray file is the user's to delete.
            f"npu-convert rm {name}"
            if (store.models_dir / name).is_dir()
            else f"rm {store.models_dir / name}",
        )
        for name, why in store.broken()
    ]
    manifests = store.manifests()
    if not manifests:
        findings.append(Finding("store", "note", f"no models in {store.models_dir}", first_model))
    cached, orphaned_bytes = store.cache_usage()
    keys = ReceiptKeys(root)
    for manifest in manifests:
        findings += _model(store, manifest, cached.get(manifest.name, 0), keys)
    findings += _orphans(store, orphaned_bytes)
    findings += _leftovers(store)
    findings += _disk(store, manifests, sum(cached.values()))
    return findings


def _model(store: ModelStore, manifest: Manifest, cache_bytes: int, keys: ReceiptKeys) -> list[Finding]:
    name = manifest.name
    try:
        problems = store.file_problems(manifest)
    except OSError as error:
        problems = [f"cannot be read ({error.strerror or error})"]
    if problems:
        return [Finding("store", "fix", f"{name}: {'; '.join(problems)}", reconvert_command(manifest))]
    signed = ""
    if signature_path(store, name).is_file():
        try:
            check_model_signature(store, name, keys.public_key())
        except ReceiptError as error:
            fix = f"npu-convert verify {name}, then npu-convert sign {name} if the files are yours"
            return [Finding("store", "fix", f"{name}: its signature does not hold: {error}", fix)]
        signed = ", signed"
    cache = f", compiled cache {human_bytes(cache_bytes)}" if cache_bytes else ""
    size = human_bytes(manifest.size)
    files = f"{len(manifest.files)} file{'' if len(manifest.files) == 1 else 's'}"
    return [Finding("store", "ok", f"{name}: {files}, {size} match the manifest{signed}{cache}")]


def reconvert_command(manifest: Manifest) -> str:
    """The npu-convert command that makes `manifest`'s model again, in its place."""
    words = ["npu-convert", "convert", manifest.source.id, "--device", manifest.device]
    if manifest.recipe.path != "stored":  # a pre-converted IR keeps its own recipe
        words += ["--recipe", manifest.recipe.name]
    return shlex.join([*words, "--name", manifest.name, "--force"])


def _orphans(store: ModelStore, size: int) -> list[Finding]:
    orphans = store.orphaned_cache()
    if not orphans:
        return []
    names = ", ".join(entry.name for entry in orphans[:3]) + (", ..." if len(orphans) > 3 else "")
    return [
        Finding(
            "store",
            "fix",
            f"{human_bytes(size)} of compiled cache belongs to no model in the store ({names})",
            "npu-convert prune-cache",
        )
    ]


def _leftovers(store: ModelStore) -> list[Finding]:
    interrupted = store.interrupted()
    findings = [
        Finding("store", "note", f"{entry} was left by an interrupted conversion or removal", SWEPT)
        for entry in interrupted
    ]
    under_way = [entry for entry in store.debris() if entry.is_dir() and entry not in interrupted]
    findings += [
        Finding(
            "store",
            "note",
            f"a conversion is under way in {entry} ({human_bytes(folder_size(entry))} so far)",
        )
        for entry in under_way
    ]
    return findings


def _disk(store: ModelStore, manifests: list[Manifest], cache_bytes: int) -> list[Finding]:
    used = sum(folder_size(store.path(manifest.name)) for manifest in manifests)
    free = store.disk_free()
    models = f"{len(manifests)} model{'' if len(manifests) == 1 else 's'}"
    message = (
        f"{models}, {human_bytes(used)} in {store.models_dir} (+ {human_bytes(cache_bytes)} compiled cache); "
        f"{human_bytes(free)} free on {mount_point(store.root)}"
    )
    if free < LOW_DISK_BYTES:
        return [
            Finding(
                "store",
                "note",
                f"{message}: too little for another conversion",
                "free some space, or point NPU_ENGINE_HOME at a bigger disk",
            )
        ]
    return [Finding("store", "ok", message)]
