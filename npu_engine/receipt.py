"""The receipt of a generation, as data: an in-toto Statement v1 whose subject is the sha256 of the
output text and whose predicate says which local model, files and settings produced it, carried in
a DSSE envelope. Making one is attest.py's; checking one is attest_verify.py's."""

import base64
import binascii
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from npu_engine.generation import SamplingOptions

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://npu-engine.dev/receipt/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
SUBJECT_NAME = "output.txt"
# A receipt is a few kilobytes; anything near this is not one of ours.
MAX_RECEIPT_BYTES = 1 << 20


@dataclass(frozen=True)
class ReceiptPredicate:
    """What produced a text: the converted model (its store name, the weights it was converted
    from, the sha256 of its manifest.json, which lists every file's digest, and its recipe), where
    and how it ran (tier, device, backend, decoding, sampling), the sha256 of the prompt exactly as
    the model saw it (after its chat template; for a raw or fill-in-the-middle completion, the text
    it continued), how the answer ended and the tool calls it made, the versions of the engine and
    its runtimes, and when (UTC, ISO 8601)."""

    model: str
    weights: str
    manifest_sha256: str
    recipe: str
    tier: str
    device: str
    backend: str
    decoding: str
    sampling: SamplingOptions
    prompt_sha256: str
    finish_reason: str
    time: str
    versions: dict[str, str] = field(default_factory=dict)
    tool_calls: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["sampling"]["stop"] = list(self.sampling.stop)
        raw["tool_calls"] = list(self.tool_calls)
        return raw

    @classmethod
    def from_dict(cls, raw: Any) -> "ReceiptPredicate":
        """The predicate of a receipt's statement; ValueError naming what is missing or mistyped."""
        if not isinstance(raw, dict):
            raise ValueError("its predicate is not an object")
        texts = ("model", "weights", "manifest_sha256", "recipe", "tier", "device", "backend", "decoding")
        for name in (*texts, "prompt_sha256", "finish_reason", "time"):
            if not isinstance(raw.get(name), str):
                raise ValueError(f"its predicate has no text field {name!r}")
        sampling, versions, calls = raw.get("sampling"), raw.get("versions", {}), raw.get("tool_calls", [])
        if not isinstance(sampling, dict) or not isinstance(sampling.get("stop", []), list):
            raise ValueError("its predicate's sampling is not an object")
        if not isinstance(versions, dict) or not isinstance(calls, list):
            raise ValueError("its predicate's versions or tool_calls are mistyped")
        try:
            options = SamplingOptions(**{**sampling, "stop": tuple(sampling.get("stop", []))})
        except TypeError as error:
            raise ValueError(f"its predicate's sampling is malformed ({error})") from None
        return cls(
            **{name: raw[name] for name in (*texts, "prompt_sha256", "finish_reason", "time")},
            sampling=options,
            versions={str(k): str(v) for k, v in versions.items()},
            tool_calls=tuple(calls),
        )


@dataclass(frozen=True)
class Receipt:
    """A signed receipt: the DSSE envelope as JSON takes it (`payloadType`, the base64 `payload`,
    `signatures` with `keyid` and base64 `sig`), and what its statement says: the output text's
    sha256 and the predicate."""

    envelope: dict[str, Any]
    text_sha256: str
    predicate: ReceiptPredicate

    @property
    def keyid(self) -> str:
        """The id of the key that signed it (securesystemslib's: a sha256 of the public key)."""
        return str(self.envelope["signatures"][0]["keyid"])

    def to_json(self) -> str:
        """The envelope as a receipt file holds it."""
        return json.dumps(self.envelope, indent=2, sort_keys=True) + "\n"


def text_sha256(text: str) -> str:
    """The sha256 of a text's UTF-8 bytes: a receipt's subject, and its prompt's digest."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def statement_payload(text_sha256: str, predicate: ReceiptPredicate) -> bytes:
    """The in-toto Statement's bytes, as signed: canonical JSON (sorted keys, no spaces)."""
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": SUBJECT_NAME, "digest": {"sha256": text_sha256}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate.to_dict(),
    }
    return json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parse_statement(payload: bytes) -> tuple[str, ReceiptPredicate]:
    """The output text's sha256 and the predicate of a statement's bytes; ValueError saying why
    they are not a receipt's statement."""
    try:
        statement = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError):
        raise ValueError("its payload is not JSON") from None
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise ValueError(f"its payload is not an in-toto Statement ({STATEMENT_TYPE})")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise ValueError(f"its predicate is {statement.get('predicateType')!r}, not {PREDICATE_TYPE}")
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or len(subjects) != 1 or not isinstance(subjects[0], dict):
        raise ValueError("its statement does not have one subject")
    digest = subjects[0].get("digest")
    if not isinstance(digest, dict) or not isinstance(digest.get("sha256"), str):
        raise ValueError("its subject has no sha256 digest")
    return digest["sha256"], ReceiptPredicate.from_dict(statement.get("predicate"))


def envelope_payload(envelope: dict[str, Any]) -> bytes:
    """The decoded payload of a DSSE envelope's JSON; ValueError when it is not base64."""
    try:
        return base64.b64decode(str(envelope.get("payload", "")), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("its payload is not base64") from None
