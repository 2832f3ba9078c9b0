"""Receipts of real answers (SmolLM2 on this machine's CPU): through the Python API, an engine that
signs every answer, the OpenAI, Ollama and Anthropic APIs (whole and streamed), `npu-engine run
--receipt` and `verify`, and a model file changed after the receipt was signed (in a copy of the
model: the shared build/ store is never touched)."""

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from npu_engine.attest import Attestor, manifest_sha256
from npu_engine.attest_verify import Verified, verify_receipt
from npu_engine.catalog import load_catalog
from npu_engine.devices import discover
from npu_engine.engine import Engine
from npu_engine.engine_cli import main
from npu_engine.errors import ReceiptError
from npu_engine.manifest import Manifest
from npu_engine.receipt import text_sha256
from npu_engine.receipt_keys import ReceiptKeys
from npu_engine.server.app import create_app
from npu_engine.server.config import ServerConfig
from npu_engine.store import ModelStore
from tests.test_server import ServerThread

pytestmark = pytest.mark.slow

QUESTION = "Write a Python function that adds two numbers."
MESSAGES = [{"role": "user", "content": QUESTION}]
ASK = {"npu_engine": {"receipt": True}}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> ReceiptKeys:
    return ReceiptKeys(tmp_path_factory.mktemp("receipt-home"))


@pytest.fixture(scope="module")
def engine(cache_store: ModelStore, smollm_cpu: Manifest, keys: ReceiptKeys) -> Engine:
    """The tiny profile over SmolLM2, signing with a key of its own (not one in build/)."""
    return Engine.from_settings(
        store=cache_store, profile="tiny", inventory=discover(), remotes=(), attestor=Attestor(keys)
    )


@pytest.fixture(scope="module")
def served(engine: Engine) -> Iterator[ServerThread]:
    with ServerThread(create_app(engine, ServerConfig())) as server:
        yield server


def verified(envelope: dict[str, Any], text: str, keys: ReceiptKeys, store: ModelStore) -> Verified:
    return verify_receipt(json.dumps(envelope), keys.public_key(), store, load_catalog(), text.encode())


def test_a_receipt_names_the_model_files_settings_and_prompt(
    engine: Engine, cache_store: ModelStore, smollm_cpu: Manifest, keys: ReceiptKeys
) -> None:
    import openvino_genai

    result = engine.generate(QUESTION, tier="code", max_new_tokens=24, seed=5, receipt=True)
    receipt = result.receipt
    assert receipt is not None and receipt.text_sha256 == text_sha256(result.text)
    p = receipt.predicate
    assert (p.model, p.weights, p.recipe) == (smollm_cpu.name, smollm_cpu.model, smollm_cpu.recipe.name)
    assert p.manifest_sha256 == manifest_sha256(cache_store.path(smollm_cpu.name))
    assert (p.tier, p.device, p.backend, p.decoding) == (
        "code",
        result.device,
        result.backend,
        result.decoding,
    )
    assert p.sampling.max_new_tokens == 24 and p.sampling.temperature == 0 and p.sampling.seed == 5
    assert p.finish_reason == result.finish_reason
    # The prompt as the model saw it: its own chat template, rendered here independently.
    tokenizer = openvino_genai.Tokenizer(str(cache_store.path(smollm_cpu.name)))
    rendered = tokenizer.apply_chat_template(openvino_genai.ChatHistory(MESSAGES), add_generation_prompt=True)
    assert p.prompt_sha256 == result.prompt_sha256 == text_sha256(rendered)
    assert verified(receipt.envelope, result.text, keys, cache_store).summary().startswith("ok: ")
    with pytest.raises(ReceiptError, match="the text differs") as raised:
        verified(receipt.envelope, result.text[:-1] + chr(ord(result.text[-1]) ^ 1), keys, cache_store)
    assert raised.value.reason == "text"


def test_no_receipt_unless_asked_and_every_one_when_the_engine_signs_all(
    engine: Engine, cache_store: ModelStore, keys: ReceiptKeys
) -> None:
    plain = engine.generate(QUESTION, tier="code", max_new_tokens=8)
    assert plain.receipt is None and plain.prompt_sha256 is None
    signing = Engine.from_settings(
        store=cache_store,
        profile="tiny",
        inventory=discover(),
        remotes=(),
        attestor=Attestor(keys),
        receipts=True,
    )
    result = signing.generate(QUESTION, tier="code", max_new_tokens=8)
    assert result.receipt is not None
    verified(result.receipt.envelope, result.text, keys, cache_store)
    completion = signing.complete("def add(a, b):", tier="code", max_new_tokens=8)
    assert completion.receipt is not None and completion.prompt_sha256 == text_sha256("def add(a, b):")
    verified(completion.receipt.envelope, completion.text, keys, cache_store)
    signing.unload()


# -- HTTP -------------------------------------------------------------------------------------------


def test_openai_chat_carries_the_receipt_whole_and_streamed(
    served: ServerThread, cache_store: ModelStore, keys: ReceiptKeys
) -> None:
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(
        model="code",
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=16,
        extra_body=ASK,
    )
    extension = (reply.model_extra or {})["npu_engine"]
    text = reply.choices[0].message.content or ""
    assert verified(extension["receipt"], text, keys, cache_store).receipt.predicate.tier == "code"
    unasked = client.chat.completions.create(model="code", messages=MESSAGES, max_tokens=4)  # type: ignore[arg-type]
    assert "receipt" not in (unasked.model_extra or {})["npu_engine"]

    pieces: list[str] = []
    final: dict[str, Any] = {}
    body = {"model": "code", "messages": MESSAGES, "max_tokens": 16, "stream": True, **ASK}
    with httpx.stream("POST", f"{served.url}/v1/chat/completions", json=body, timeout=120) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line.removeprefix("data: "))
            pieces.append(event["choices"][0]["delta"].get("content") or "")
            if "npu_engine" in event:
                final = event
    assert final["choices"][0]["finish_reason"] in ("stop", "length")
    verified(final["npu_engine"]["receipt"], "".join(pieces), keys, cache_store)


def test_ollama_chat_carries_the_receipt_whole_and_streamed(
    served: ServerThread, cache_store: ModelStore, keys: ReceiptKeys
) -> None:
    body = {"model": "code", "messages": MESSAGES, "options": {"num_predict": 16}, **ASK}
    whole = httpx.post(f"{served.url}/api/chat", json={**body, "stream": False}, timeout=120).json()
    verified(whole["npu_engine"]["receipt"], whole["message"]["content"], keys, cache_store)

    lines = []
    with httpx.stream("POST", f"{served.url}/api/chat", json=body, timeout=120) as stream:
        lines = [json.loads(line) for line in stream.iter_lines() if line]
    assert lines[-1]["done"] and all("npu_engine" not in line for line in lines[:-1])
    text = "".join(line["message"]["content"] for line in lines)
    verified(lines[-1]["npu_engine"]["receipt"], text, keys, cache_store)


def test_anthropic_messages_carry_the_receipt_whole_and_streamed(
    served: ServerThread, cache_store: ModelStore, keys: ReceiptKeys
) -> None:
    body = {"model": "code", "max_tokens": 16, "messages": MESSAGES, **ASK}
    whole = httpx.post(f"{served.url}/v1/messages", json=body, timeout=120).json()
    text = "".join(block["text"] for block in whole["content"] if block["type"] == "text")
    verified(whole["npu_engine"]["receipt"], text, keys, cache_store)

    pieces: list[str] = []
    delta: dict[str, Any] = {}
    with httpx.stream(
        "POST", f"{served.url}/v1/messages", json={**body, "stream": True}, timeout=120
    ) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line.removeprefix("data: "))
            if event["type"] == "content_block_delta":
                pieces.append(event["delta"]["text"])
            elif event["type"] == "message_delta":
                delta = event
    verified(delta["npu_engine"]["receipt"], "".join(pieces), keys, cache_store)


# -- the command line, and a model changed after signing --------------------------------------------


@pytest.fixture
def home(tmp_path: Path, cache_store: ModelStore, smollm_cpu: Manifest) -> ModelStore:
    """An engine home of its own holding a copy of SmolLM2, free to be changed."""
    store = ModelStore(tmp_path / "home")
    shutil.copytree(cache_store.path(smollm_cpu.name), store.path(smollm_cpu.name))
    return store


def flip_a_weight_byte(store: ModelStore, manifest: Manifest) -> Path:
    """Change one byte in the middle of the model's largest file (its weights); that file."""
    weights = max(store.path(manifest.name).glob("*.bin"), key=lambda f: f.stat().st_size)
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    return weights


def test_npu_engine_run_writes_a_receipt_that_verify_checks_until_a_model_file_changes(
    home: ModelStore,
    smollm_cpu: Manifest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("NPU_ENGINE_HOME", str(home.root))
    receipt, text = tmp_path / "answer.receipt.json", tmp_path / "answer.txt"
    run = ["run", QUESTION, "--profile", "tiny", "--max-new-tokens", "16"]
    assert main([*run, "--receipt", str(receipt), "--output", str(text)]) == 0
    out, err = capsys.readouterr()
    assert out == text.read_text() + "\n" and f"[receipt: {receipt}" in err
    keys = ReceiptKeys(home.root)
    assert keys.private_path.stat().st_mode & 0o777 == 0o600
    assert json.loads(receipt.read_text())["signatures"][0]["keyid"] == keys.public_key().keyid

    assert main(["verify", str(receipt), "--text", str(text)]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("ok: ") and smollm_cpu.name in out and out.count("\n") == 1

    # A second run signs with the same key.
    assert main([*run, "--receipt", str(tmp_path / "second.json")]) == 0
    capsys.readouterr()
    second = json.loads((tmp_path / "second.json").read_text())
    assert second["signatures"][0]["keyid"] == keys.public_key().keyid

    weights = flip_a_weight_byte(home, smollm_cpu)
    assert main(["verify", str(receipt), "--text", str(text)]) == ReceiptError.exit_code
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert (
        f"the files of {smollm_cpu.name} no longer match its manifest: {weights.name}: sha256 differs" in err
    )


def test_a_model_served_despite_changed_files_answers_but_is_never_signed(
    home: ModelStore, smollm_cpu: Manifest, keys: ReceiptKeys
) -> None:
    """--allow-modified-models serves a model whose files differ from its manifest; a receipt
    would name the manifest's files, so none is signed for it."""
    flip_a_weight_byte(home, smollm_cpu)
    engine = Engine.from_settings(
        store=home,
        profile="tiny",
        inventory=discover(),
        remotes=(),
        attestor=Attestor(keys),
        allow_modified_models=True,
    )
    assert engine.generate(QUESTION, tier="code", max_new_tokens=4).text
    with pytest.raises(ReceiptError, match="no receipt: model .* does not match its manifest") as raised:
        engine.generate(QUESTION, tier="code", max_new_tokens=4, receipt=True)
    assert raised.value.reason == "files"
