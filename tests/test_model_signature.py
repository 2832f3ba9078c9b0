"""Signed converted models: `npu-convert sign` signs a model's manifest and files with the engine
home's key; `npu-convert verify` checks the signature with the files, and says what failed."""

import base64
import json
import subprocess
from pathlib import Path

import pytest

from npu_engine.errors import ReceiptError, StoreError
from npu_engine.manifest import MANIFEST_NAME
from npu_engine.model_signature import (
    MODEL_PREDICATE_TYPE,
    check_model_signature,
    sign_model,
    signature_path,
)
from npu_engine.receipt_keys import ReceiptKeys
from npu_engine.store import ModelStore
from tests.fake_manifest import write_fake_model
from tests.test_convert_cli import run

MODEL = "fake-coder"


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "home")
    write_fake_model(store.models_dir / MODEL, MODEL, marker="weights")
    return store


def test_a_signature_names_the_manifest_and_every_file_and_holds(store: ModelStore) -> None:
    keys = ReceiptKeys(store.root)
    signed = sign_model(store, MODEL, keys)
    envelope = json.loads(signed.path.read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["predicateType"] == MODEL_PREDICATE_TYPE
    assert [s["name"] for s in statement["subject"]] == [MANIFEST_NAME, "marker"]
    assert statement["predicate"]["model"] == MODEL
    # Beside the store's models: the model's folder still holds only what its manifest lists.
    assert signed.path == signature_path(store, MODEL) and not signed.path.is_relative_to(store.path(MODEL))
    held = check_model_signature(store, MODEL, keys.public_key())
    assert held is not None and held.keyid == signed.keyid


def test_an_unsigned_model_has_no_signature(store: ModelStore) -> None:
    keys = ReceiptKeys(store.root)
    keys.signer()  # the home has a key, and has signed nothing with it
    assert check_model_signature(store, MODEL, keys.public_key()) is None


def test_a_changed_manifest_another_key_or_a_damaged_file_fail(store: ModelStore, tmp_path: Path) -> None:
    keys = ReceiptKeys(store.root)
    signed = sign_model(store, MODEL, keys)
    other = ReceiptKeys(tmp_path / "other").signer().public_key
    with pytest.raises(ReceiptError, match="signed by another key") as raised:
        check_model_signature(store, MODEL, other)
    assert raised.value.reason == "key"
    manifest = store.path(MODEL) / MANIFEST_NAME
    original = manifest.read_text()
    manifest.write_text(original.replace('"context_length": 8', '"context_length": 9'))
    with pytest.raises(ReceiptError, match="has changed since it was signed"):
        check_model_signature(store, MODEL, keys.public_key())
    manifest.write_text(original)
    signed.path.write_text(signed.path.read_text()[:40])
    with pytest.raises(ReceiptError, match="is not valid JSON"):
        check_model_signature(store, MODEL, keys.public_key())


def test_a_model_that_does_not_match_its_manifest_is_not_signed(store: ModelStore) -> None:
    (store.path(MODEL) / "marker").write_text("tampered")
    with pytest.raises(StoreError, match="is not signed: .*marker"):
        sign_model(store, MODEL, ReceiptKeys(store.root))
    assert not signature_path(store, MODEL).exists()


def test_the_command_line_signs_verifies_and_removes(store: ModelStore) -> None:
    home = store.root
    unsigned = run(home, "verify", MODEL)
    assert unsigned.returncode == 0 and "not signed" in unsigned.stdout
    signed = run(home, "sign", MODEL)
    assert signed.returncode == 0 and "signed with key" in signed.stdout
    verified = run(home, "verify", MODEL)
    assert verified.returncode == 0 and ", signed with key" in verified.stdout
    # Checked with the signer's public key given, as on another machine.
    given = run(home, "verify", MODEL, "--key", str(ReceiptKeys(home).public_path))
    assert given.returncode == 0 and ", signed with key" in given.stdout
    manifest = store.path(MODEL) / MANIFEST_NAME
    manifest.write_text(manifest.read_text().replace('"context_length": 8', '"context_length": 9'))
    refused: subprocess.CompletedProcess[str] = run(home, "verify", MODEL)
    assert refused.returncode == ReceiptError.exit_code
    assert refused.stderr.strip().splitlines() == [
        f"error: the manifest of {MODEL} has changed since it was signed (reconverted or edited)"
    ]
    assert run(home, "rm", MODEL).returncode == 0
    assert not signature_path(store, MODEL).exists()
