"""Checking a receipt: its DSSE signature against a public key, its subject against a text, and the
model it names against the store (the manifest it recorded, and the files that manifest lists).
Each failure is a ReceiptError whose `reason` and one-line message say what failed."""

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import FormatError, UnverifiedSignatureError
from securesystemslib.signer import Signature, SSlibKey

from npu_engine.attest import manifest_sha256
from npu_engine.catalog import Catalog
from npu_engine.errors import ModelNotFoundError, ReceiptError, UserInputError
from npu_engine.files import sha256_file
from npu_engine.gguf_source import source_gguf_path
from npu_engine.manifest import Manifest, verify_files
from npu_engine.pipelines import LLAMA_CPP
from npu_engine.receipt import (
    MAX_RECEIPT_BYTES,
    PAYLOAD_TYPE,
    Receipt,
    ReceiptPredicate,
    envelope_payload,
    parse_statement,
)
from npu_engine.store import ModelStore


@dataclass(frozen=True)
class Verified:
    """A receipt that verified: what it says, and whether its text was checked too."""

    receipt: Receipt
    text_checked: bool
    keyid: str  # the key whose signature verified (an envelope may carry others)

    def summary(self) -> str:
        """One line: the text's digest, who wrote it, with what key, and what was checked."""
        p = self.receipt.predicate
        text = "text matches" if self.text_checked else "text not checked (no --text)"
        return (
            f"ok: output sha256 {self.receipt.text_sha256[:16]} written by {p.model} "
            f"({p.recipe}, {p.device}, {p.backend}, {p.decoding}) at {p.time}; "
            f"signed by key {self.keyid[:16]}; {text}; the model's files match its manifest"
        )


def read_receipt_file(path: Path) -> bytes:
    """A receipt file's bytes; ReceiptError when it cannot be read or is too large to be one."""
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_RECEIPT_BYTES + 1)
    except OSError as error:
        reason = error.strerror or error
        raise ReceiptError(f"cannot read the receipt {path}: {reason}", "malformed") from None
    if len(data) > MAX_RECEIPT_BYTES:
        raise ReceiptError(f"{path} is larger than a receipt ({MAX_RECEIPT_BYTES:,} bytes)", "malformed")
    return data


def verify_receipt(
    document: bytes | str,
    key: SSlibKey,
    store: ModelStore,
    catalog: Catalog,
    text: bytes | None = None,
    rehash: bool = True,
) -> Verified:
    """Check a receipt (a DSSE envelope's JSON) in this order: it is one; it is signed by `key`; its
    subject is the sha256 of `text` (when given: the text's exact bytes); the model it names is in
    `store`, its manifest.json has the sha256 recorded, and its files match that manifest (for an
    answer from llama.cpp, the source GGUF too). The first failure raises ReceiptError.
    `rehash` False hashes a file again only when it changed since the store last hashed it (the
    check the engine makes when it loads a model), instead of every file every time."""
    envelope, raw = read_envelope(document)
    check_signature(envelope, key)
    try:
        output_sha256, predicate = parse_statement(envelope.payload)
    except ValueError as error:
        message = f"the receipt is signed but not one of npu-engine's: {error}"
        raise ReceiptError(message, "malformed") from None
    if text is not None and hashlib.sha256(text).hexdigest() != output_sha256:
        raise ReceiptError(
            f"the text differs from the one the receipt was signed for (its sha256 is "
            f"{hashlib.sha256(text).hexdigest()[:16]}, the receipt's {output_sha256[:16]})",
            "text",
        )
    _check_model(predicate, store, catalog, rehash)
    return Verified(Receipt(raw, output_sha256, predicate), text is not None, key.keyid)


def read_envelope(document: bytes | str, what: str = "the receipt") -> tuple[Envelope, dict[str, Any]]:
    """The DSSE envelope of `document` (and its JSON); ReceiptError naming `what` is malformed."""
    try:
        raw = json.loads(document)
    except (ValueError, RecursionError) as error:
        raise ReceiptError(
            f"{what} is not valid JSON (truncated or damaged?): {error}", "malformed"
        ) from None
    if not isinstance(raw, dict):
        raise ReceiptError(f"{what} is not a DSSE envelope (a JSON object)", "malformed")
    if raw.get("payloadType") != PAYLOAD_TYPE:
        raise ReceiptError(
            f"{what}'s payloadType is {raw.get('payloadType')!r}, not {PAYLOAD_TYPE!r}", "malformed"
        )
    signatures = raw.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise ReceiptError(f"{what} has no signatures", "malformed")
    try:
        envelope_payload(raw)
        # from_dict rewrites the signatures it is given: it gets a copy.
        envelope = Envelope.from_dict(copy.deepcopy(raw))
    except (ValueError, KeyError, TypeError, AttributeError, FormatError) as error:
        raise ReceiptError(f"{what} is not a well-formed DSSE envelope: {error}", "malformed") from None
    return envelope, raw


def check_signature(envelope: Envelope, key: SSlibKey, what: str = "the receipt") -> None:
    """ReceiptError unless `envelope` carries a signature by `key` over its payload."""
    signatures: dict[str, Signature] = envelope.signatures
    mine = signatures.get(key.keyid)
    if mine is None:
        others = ", ".join(keyid[:16] for keyid in signatures)
        raise ReceiptError(f"{what} was signed by another key ({others}), not by key {key.keyid[:16]}", "key")
    try:
        key.verify_signature(mine, envelope.pae())
    except UnverifiedSignatureError as error:
        raise ReceiptError(
            f"{what}'s signature does not verify: it was changed after it was signed", "signature"
        ) from error


def _check_model(predicate: ReceiptPredicate, store: ModelStore, catalog: Catalog, rehash: bool) -> None:
    try:
        manifest = store.get(predicate.model)
    except (ModelNotFoundError, UserInputError):
        raise ReceiptError(
            f"the model {predicate.model!r} that wrote the text is no longer in the store {store.root}",
            "model",
        ) from None
    folder = store.path(manifest.name)
    if manifest_sha256(folder) != predicate.manifest_sha256:
        raise ReceiptError(
            f"the manifest of {manifest.name} has changed since the receipt was signed "
            "(the model was reconverted or edited)",
            "manifest",
        )
    problems = verify_files(folder, manifest) if rehash else store.file_problems(manifest)
    if predicate.backend == LLAMA_CPP:
        problems += _source_problems(manifest, store, catalog, rehash)
    if problems:
        raise ReceiptError(
            f"the files of {manifest.name} no longer match its manifest: {'; '.join(problems)}", "files"
        )


def _source_problems(manifest: Manifest, store: ModelStore, catalog: Catalog, rehash: bool) -> list[str]:
    """What is wrong with the source GGUF llama.cpp ran for `manifest`."""
    gguf = source_gguf_path(manifest, catalog, store.root)
    if gguf is None or not gguf.is_file():
        return ["its source GGUF, which llama.cpp ran, is not here"]
    digest = manifest.source.digest
    same = (
        sha256_file(gguf) == digest.removeprefix("sha256:") if rehash else store.source_matches(gguf, digest)
    )
    return [] if same else [f"its source GGUF {gguf.name}: sha256 differs"]
