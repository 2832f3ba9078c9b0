"""Signed converted models: an in-toto Statement whose subjects are a model's manifest.json and
every file it lists (with the sha256 the manifest records), in a DSSE envelope signed with the
receipts' key (receipt_keys.py). It lives beside the store's models, in
`$NPU_ENGINE_HOME/signatures/<name>.dsse.json`, so the model's folder holds what its manifest lists.

`npu-convert sign NAME` writes one (after re-hashing the files); `npu-convert verify NAME` checks
it when there is one: the signature, and that the manifest is still the one signed."""

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey

from npu_engine.attest import manifest_sha256, utc_now
from npu_engine.attest_verify import check_signature, read_envelope
from npu_engine.errors import ReceiptError, StoreError
from npu_engine.files import write_text_atomically
from npu_engine.manifest import MANIFEST_NAME, verify_files
from npu_engine.receipt import PAYLOAD_TYPE, STATEMENT_TYPE
from npu_engine.receipt_keys import ReceiptKeys
from npu_engine.store import ModelStore

MODEL_PREDICATE_TYPE = "https://npu-engine.dev/model/v1"


@dataclass(frozen=True)
class ModelSignature:
    path: Path
    keyid: str
    signed: str  # when, UTC ISO 8601


def signature_path(store: ModelStore, name: str) -> Path:
    return store.root / "signatures" / f"{name}.dsse.json"


def sign_model(
    store: ModelStore, name: str, keys: ReceiptKeys, now: Callable[[], datetime] = utc_now
) -> ModelSignature:
    """Sign model `name` of `store` with `keys`, once its files verify against its manifest;
    StoreError naming the files that do not."""
    manifest = store.get(name)
    folder = store.path(name)
    problems = verify_files(folder, manifest)
    if problems:
        raise StoreError(f"{name} does not match its manifest, so it is not signed: " + "; ".join(problems))
    signed = now().isoformat(timespec="seconds").replace("+00:00", "Z")
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": MANIFEST_NAME, "digest": {"sha256": manifest_sha256(folder)}},
            *({"name": f.path, "digest": {"sha256": f.sha256}} for f in manifest.files),
        ],
        "predicateType": MODEL_PREDICATE_TYPE,
        "predicate": {
            "model": name,
            "weights": manifest.model,
            "recipe": manifest.recipe.name,
            "device": manifest.device,
            "source": manifest.source.id,
            "signed": signed,
        },
    }
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode("utf-8")
    envelope = Envelope(payload, PAYLOAD_TYPE, {})
    signer = keys.signer()
    envelope.sign(signer)
    path = signature_path(store, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(envelope.to_dict(), indent=2) + "\n")
    return ModelSignature(path, keys.public_key().keyid, signed)


def check_model_signature(store: ModelStore, name: str, key: SSlibKey) -> ModelSignature | None:
    """The signature of model `name` when it has one and it holds: signed by `key`, over the
    manifest the model has now. None when the model was never signed; ReceiptError saying what
    failed otherwise. (That the files match the manifest is verify_files's to say.)"""
    path = signature_path(store, name)
    what = f"the signature of {name}"
    try:
        document = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ReceiptError(f"cannot read {path}: {error.strerror or error}", "malformed") from None
    envelope, _ = read_envelope(document, what)
    check_signature(envelope, key, what)
    statement = json.loads(envelope.payload)
    subjects = statement.get("subject") if isinstance(statement, dict) else None
    first = subjects[0] if isinstance(subjects, list) and subjects else {}
    if statement.get("predicateType") != MODEL_PREDICATE_TYPE or first.get("name") != MANIFEST_NAME:
        raise ReceiptError(f"{what} is not a model signature of npu-engine's", "malformed")
    if first.get("digest", {}).get("sha256") != manifest_sha256(store.path(name)):
        raise ReceiptError(
            f"the manifest of {name} has changed since it was signed (reconverted or edited)", "manifest"
        )
    return ModelSignature(path, key.keyid, str(statement["predicate"].get("signed", "")))
