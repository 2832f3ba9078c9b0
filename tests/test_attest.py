"""Receipts without a model: the key made on first use, a receipt signed over a fake model folder,
and each way verification fails, through the library and through `npu-engine verify` and `key`.
The receipts of real answers, through the engine and the HTTP APIs, are in test_attest_slow.py."""

import base64
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from npu_engine.attest import Attestor, manifest_sha256
from npu_engine.attest_verify import verify_receipt
from npu_engine.backends.remote import OllamaBackend
from npu_engine.catalog import load_catalog
from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.engine_cli import main
from npu_engine.errors import ReceiptError, UserInputError
from npu_engine.generation import GenerationMetrics, SamplingOptions
from npu_engine.manifest import MANIFEST_NAME, Manifest
from npu_engine.receipt import PREDICATE_TYPE, STATEMENT_TYPE, Receipt, text_sha256
from npu_engine.receipt_keys import ReceiptKeys, load_public_key
from npu_engine.request import GenerationResult
from npu_engine.scheduler import OLLAMA
from npu_engine.server.anthropic_schemas import MessagesRequest
from npu_engine.server.schemas import ChatCompletionRequest, OllamaChatRequest
from npu_engine.store import ModelStore
from npu_engine.targets import RemoteTarget
from npu_engine.tools import ToolCall
from tests.fake_manifest import write_fake_model
from tests.fake_ollama import fake_ollama

TEXT = "def is_prime(n):\n    return n > 1 and all(n % d for d in range(2, n))\n"
MODEL = "fake-coder"


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "home")


@pytest.fixture
def manifest(store: ModelStore) -> Manifest:
    return write_fake_model(store.models_dir / MODEL, MODEL, marker="weights")


@pytest.fixture
def keys(store: ModelStore) -> ReceiptKeys:
    return ReceiptKeys(store.root)


def sign(keys: ReceiptKeys, store: ModelStore, manifest: Manifest, text: str = TEXT) -> Receipt:
    result = GenerationResult(
        text, "stop", "code", MODEL, "CPU", "plain", GenerationMetrics(10.0, 5.0, 200.0, 12, 30)
    )
    options = SamplingOptions(64, 0.7, 0.9, ("\n\n",), 7)
    return Attestor(keys).attest(
        result, manifest, manifest_sha256(store.path(MODEL)), options, text_sha256("<prompt>")
    )


def failure(
    document: str | bytes, keys: ReceiptKeys, store: ModelStore, text: str | None = TEXT
) -> ReceiptError:
    key, encoded = keys.public_key(), text.encode() if text is not None else None
    with pytest.raises(ReceiptError) as raised:
        verify_receipt(document, key, store, load_catalog(), encoded)
    return raised.value


def with_payload(receipt: Receipt, change: Any) -> str:
    """The receipt's envelope with its statement changed by `change` and serialised again, the
    signature kept."""
    envelope = dict(receipt.envelope)
    statement = json.loads(base64.b64decode(envelope["payload"]))
    change(statement)
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    return json.dumps(envelope)


# -- the key ---------------------------------------------------------------------------------------


def test_the_key_is_made_on_first_use_private_and_then_reused(keys: ReceiptKeys) -> None:
    assert not keys.private_path.exists()
    first = keys.signer()
    assert keys.private_path.stat().st_mode & 0o777 == 0o600
    assert keys.private_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert keys.public_path.read_text() == keys.public_pem()
    assert keys.public_pem().startswith("-----BEGIN PUBLIC KEY-----")
    written = keys.private_path.read_bytes(), keys.private_path.stat().st_mtime_ns
    # Another process (another ReceiptKeys) finds the same key, and writes nothing.
    again = ReceiptKeys(keys.home)
    assert again.signer().public_key.keyid == first.public_key.keyid
    assert (keys.private_path.read_bytes(), keys.private_path.stat().st_mtime_ns) == written
    assert load_public_key(keys.public_path).keyid == first.public_key.keyid
    assert [p.name for p in keys.home.iterdir() if "partial" in p.name] == []


def test_keys_made_at_once_are_one_key(tmp_path: Path) -> None:
    made: list[str] = []
    homes = [ReceiptKeys(tmp_path / "home") for _ in range(8)]
    threads = [threading.Thread(target=lambda k=k: made.append(k.signer().public_key.keyid)) for k in homes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == 1 and len(made) == 8
    assert load_public_key(homes[0].public_path).keyid == made[0]


def test_a_lost_public_key_is_written_again_from_the_private_one(keys: ReceiptKeys) -> None:
    keyid = keys.signer().public_key.keyid
    keys.public_path.unlink()
    assert ReceiptKeys(keys.home).public_key().keyid == keyid  # read from the private key, not made
    assert ReceiptKeys(keys.home).signer().public_key.keyid == keyid
    assert load_public_key(keys.public_path).keyid == keyid


def test_key_problems_are_one_line(keys: ReceiptKeys, tmp_path: Path) -> None:
    with pytest.raises(ReceiptError, match="no receipt key in"):
        keys.public_key()  # verifying never makes a key
    assert not keys.private_path.exists()
    keys.home.mkdir(parents=True)
    keys.private_path.write_text("not a key")
    with pytest.raises(ReceiptError, match="is not an unencrypted Ed25519 private key"):
        keys.signer()
    (tmp_path / "other.pem").write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ReceiptError, match="is not an Ed25519 public key"):
        load_public_key(tmp_path / "other.pem")


# -- the receipt -----------------------------------------------------------------------------------


def test_a_receipt_is_an_in_toto_statement_in_a_signed_dsse_envelope(
    keys: ReceiptKeys, store: ModelStore, manifest: Manifest
) -> None:
    receipt = sign(keys, store, manifest)
    envelope = json.loads(receipt.to_json())
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    assert [s["keyid"] for s in envelope["signatures"]] == [keys.signer().public_key.keyid]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["_type"] == STATEMENT_TYPE and statement["predicateType"] == PREDICATE_TYPE
    assert statement["subject"] == [{"name": "output.txt", "digest": {"sha256": text_sha256(TEXT)}}]
    predicate = statement["predicate"]
    assert predicate["model"] == MODEL and predicate["recipe"] == "int8" and predicate["device"] == "CPU"
    assert predicate["manifest_sha256"] == manifest_sha256(store.path(MODEL))
    assert predicate["sampling"] == {
        "max_new_tokens": 64,
        "temperature": 0.7,
        "top_p": 0.9,
        "stop": ["\n\n"],
        "seed": 7,
        "include_stop": False,
    }
    assert predicate["prompt_sha256"] == text_sha256("<prompt>")
    assert {"npu-engine", "openvino", "openvino-genai"} <= set(predicate["versions"])
    assert predicate["time"].endswith("Z")

    verified = verify_receipt(receipt.to_json(), keys.public_key(), store, load_catalog(), TEXT.encode())
    assert verified.receipt.predicate == receipt.predicate and verified.text_checked
    line = verified.summary()
    assert line.startswith("ok: ") and "\n" not in line and MODEL in line and "text matches" in line


def test_tool_calls_are_recorded(keys: ReceiptKeys, store: ModelStore, manifest: Manifest) -> None:
    call = ToolCall("call_1", "get_weather", {"city": "Oslo"})
    result = GenerationResult(
        "", "tool_calls", "code", MODEL, "CPU", "plain", GenerationMetrics(1, 1, 1, 1, 1), tool_calls=(call,)
    )
    receipt = Attestor(keys).attest(result, manifest, "0" * 64, SamplingOptions(), "1" * 64)
    assert receipt.predicate.tool_calls == ({"name": "get_weather", "arguments": {"city": "Oslo"}},)


@pytest.mark.parametrize(
    ("name", "tamper", "reason", "message"),
    [
        (
            "one changed character of the output",
            lambda receipt, keys, store: (receipt.to_json(), TEXT.replace("prime", "prima")),
            "text",
            "the text differs from the one the receipt was signed for",
        ),
        (
            "one changed predicate field",
            lambda receipt, keys, store: (
                with_payload(receipt, lambda s: s["predicate"].update(device="NPU")),
                TEXT,
            ),
            "signature",
            "signature does not verify: it was changed after it was signed",
        ),
        (
            "another subject",
            lambda receipt, keys, store: (
                with_payload(receipt, lambda s: s["subject"][0]["digest"].update(sha256=text_sha256("x"))),
                "x",
            ),
            "signature",
            "signature does not verify",
        ),
        (
            "a truncated envelope",
            lambda receipt, keys, store: (receipt.to_json()[: len(receipt.to_json()) // 2], TEXT),
            "malformed",
            "the receipt is not valid JSON (truncated or damaged?)",
        ),
        (
            "an envelope of another kind",
            lambda receipt, keys, store: (
                json.dumps({**receipt.envelope, "payloadType": "text/plain"}),
                TEXT,
            ),
            "malformed",
            "payloadType is 'text/plain'",
        ),
        (
            "no signatures",
            lambda receipt, keys, store: (json.dumps({**receipt.envelope, "signatures": []}), TEXT),
            "malformed",
            "the receipt has no signatures",
        ),
        (
            "a payload that is not base64",
            lambda receipt, keys, store: (json.dumps({**receipt.envelope, "payload": "%%%"}), TEXT),
            "malformed",
            "not a well-formed DSSE envelope",
        ),
    ],
)
def test_each_tampering_fails_with_its_own_message(
    keys: ReceiptKeys,
    store: ModelStore,
    manifest: Manifest,
    name: str,
    tamper: Any,
    reason: str,
    message: str,
) -> None:
    document, text = tamper(sign(keys, store, manifest), keys, store)
    error = failure(document, keys, store, text)
    assert error.reason == reason, name
    assert message in str(error) and "\n" not in str(error)


def test_another_key_fails(keys: ReceiptKeys, store: ModelStore, manifest: Manifest, tmp_path: Path) -> None:
    other = ReceiptKeys(tmp_path / "another-machine")
    receipt = sign(other, store, manifest)
    keys.signer()  # this machine has a key of its own
    error = failure(receipt.to_json(), keys, store)
    assert error.reason == "key"
    assert "signed by another key" in str(error) and other.signer().public_key.keyid[:16] in str(error)
    # With the signer's key named, it verifies.
    verify_receipt(
        receipt.to_json(), load_public_key(other.public_path), store, load_catalog(), TEXT.encode()
    )


def test_a_changed_model_fails(keys: ReceiptKeys, store: ModelStore, manifest: Manifest) -> None:
    receipt = sign(keys, store, manifest).to_json()
    (store.path(MODEL) / "marker").write_text("weightz")
    error = failure(receipt, keys, store)
    assert error.reason == "files"
    assert f"the files of {MODEL} no longer match its manifest: marker: sha256 differs" in str(error)
    # The engine's own check (the page's badge) hashes only what changed since: it sees it too.
    with pytest.raises(ReceiptError, match="marker has changed"):
        verify_receipt(receipt, keys.public_key(), store, load_catalog(), TEXT.encode(), rehash=False)
    (store.path(MODEL) / "marker").write_text("weights")
    verify_receipt(receipt, keys.public_key(), store, load_catalog(), TEXT.encode())
    verify_receipt(receipt, keys.public_key(), store, load_catalog(), TEXT.encode(), rehash=False)
    (store.path(MODEL) / "extra.bin").write_text("")
    assert "extra.bin: not in the manifest" in str(failure(receipt, keys, store))


def test_a_changed_manifest_fails(keys: ReceiptKeys, store: ModelStore, manifest: Manifest) -> None:
    receipt = sign(keys, store, manifest).to_json()
    path = store.path(MODEL) / MANIFEST_NAME
    path.write_text(path.read_text().replace("2026-01-01", "2026-01-02"))
    error = failure(receipt, keys, store)
    assert error.reason == "manifest"
    assert f"the manifest of {MODEL} has changed since the receipt was signed" in str(error)


def test_a_model_gone_fails(keys: ReceiptKeys, store: ModelStore, manifest: Manifest) -> None:
    receipt = sign(keys, store, manifest).to_json()
    store.remove(MODEL)
    error = failure(receipt, keys, store)
    assert error.reason == "model" and f"the model {MODEL!r} that wrote the text is no longer" in str(error)


# -- the command line ------------------------------------------------------------------------------


def test_npu_engine_verify_and_key(
    keys: ReceiptKeys,
    store: ModelStore,
    manifest: Manifest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("NPU_ENGINE_HOME", str(store.root))
    receipt_file, text_file = tmp_path / "answer.receipt.json", tmp_path / "answer.txt"
    receipt_file.write_text(sign(keys, store, manifest).to_json())
    text_file.write_text(TEXT)

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = run("verify", str(receipt_file), "--text", str(text_file))
    assert code == 0 and out.startswith("ok: ") and out.count("\n") == 1 and err == ""
    code, out, _ = run("verify", str(receipt_file))
    assert code == 0 and "text not checked" in out

    code, out, _ = run("key")
    assert code == 0 and out == keys.public_pem()
    code, _, _ = run("key", "--out", str(tmp_path / "machine.pub.pem"))
    assert code == 0 and (tmp_path / "machine.pub.pem").read_text() == keys.public_pem()
    code, out, _ = run("verify", str(receipt_file), "--key", str(tmp_path / "machine.pub.pem"))
    assert code == 0
    # A folder, or a file in a folder that is not there: one line, nothing left behind.
    for where, said in ((tmp_path, "is a folder"), (tmp_path / "no" / "key.pem", "does not exist")):
        code, out, err = run("key", "--out", str(where))
        assert code == UserInputError.exit_code and out == "" and said in err and err.count("\n") == 1
    assert not list(tmp_path.glob("*.partial"))

    failures = {
        "text": lambda: text_file.write_text(TEXT + " "),
        "malformed": lambda: receipt_file.write_text(receipt_file.read_text()[:-40]),
    }
    for reason, damage in failures.items():
        saved = receipt_file.read_text(), text_file.read_text()
        damage()
        code, out, err = run("verify", str(receipt_file), "--text", str(text_file))
        assert code == ReceiptError.exit_code and out == "", reason
        assert err.startswith("error: ") and err.count("\n") == 1, err
        receipt_file.write_text(saved[0])
        text_file.write_text(saved[1])

    other = ReceiptKeys(tmp_path / "elsewhere")
    other_pub = tmp_path / "elsewhere.pub.pem"
    other_pub.write_text(other.public_pem())
    code, _, err = run("verify", str(receipt_file), "--key", str(other_pub))
    assert code == ReceiptError.exit_code and "signed by another key" in err
    code, _, err = run("verify", str(tmp_path / "missing.json"))
    assert code == ReceiptError.exit_code and "cannot read the receipt" in err
    code, _, err = run("verify", str(receipt_file), "--text", str(tmp_path / "missing.txt"))
    assert code == 2 and "cannot read" in err
    (store.path(MODEL) / "marker").write_text("changed")
    code, _, err = run("verify", str(receipt_file), "--text", str(text_file))
    assert code == ReceiptError.exit_code and "no longer match its manifest" in err


# -- the HTTP bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "body"),
    [
        (ChatCompletionRequest, {"model": "code", "messages": [{"role": "user", "content": "hi"}]}),
        (OllamaChatRequest, {"model": "code", "messages": [{"role": "user", "content": "hi"}]}),
        (
            MessagesRequest,
            {"model": "code", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
        ),
    ],
)
def test_request_bodies_ask_for_a_receipt_in_their_npu_engine_object(
    schema: Any, body: dict[str, Any]
) -> None:
    assert not schema.model_validate(body).receipt_asked()
    assert not schema.model_validate({**body, "npu_engine": {}}).receipt_asked()
    assert schema.model_validate({**body, "npu_engine": {"receipt": True}}).receipt_asked()
    with pytest.raises(ValueError, match="receipt"):
        schema.model_validate({**body, "npu_engine": {"receipt": "yes"}})


def test_an_answer_from_a_remote_server_has_no_receipt(tmp_path: Path) -> None:
    """No model of this machine wrote it: there is nothing local to attest."""
    with fake_ollama({"smollm2:135m": "def add(a, b): return a + b"}) as (url, _seen):
        remote = RemoteTarget(OLLAMA, OllamaBackend(url), lambda _model: "smollm2:135m")
        engine = Engine.from_settings(
            store=ModelStore(tmp_path / "empty"),
            profile="tiny",
            inventory=discover(),
            remotes=[remote],
            attestor=Attestor(ReceiptKeys(tmp_path / "keys")),
        )
        result = engine.generate("Write add", tier="code", max_new_tokens=20, receipt=True)
    assert result.device == OLLAMA and result.text == "def add(a, b): return a + b"
    assert result.receipt is None and result.prompt_sha256 is None
    assert not (tmp_path / "keys").exists()
