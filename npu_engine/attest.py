"""Receipts for generations: the engine asks an Attestor to sign what a local model wrote, and the
Attestor wraps a statement of it (receipt.py) in a DSSE envelope signed with this machine's key
(receipt_keys.py). Checking a receipt is attest_verify.py's."""

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from securesystemslib.dsse import Envelope

from npu_engine.errors import ReceiptError
from npu_engine.files import sha256_file
from npu_engine.generation import SamplingOptions
from npu_engine.machine import package_version
from npu_engine.manifest import MANIFEST_NAME, Manifest
from npu_engine.pipelines import LLAMA_CPP
from npu_engine.receipt import PAYLOAD_TYPE, Receipt, ReceiptPredicate, statement_payload, text_sha256
from npu_engine.receipt_keys import ReceiptKeys
from npu_engine.request import GenerationResult

# The packages a receipt names the versions of; llama-cpp-python only for what llama.cpp ran.
RUNTIME_PACKAGES = ("npu-engine", "openvino", "openvino-genai", "openvino-tokenizers")
LLAMA_CPP_PACKAGE = "llama-cpp-python"


def manifest_sha256(folder: Path) -> str:
    """The sha256 of a model folder's manifest.json bytes, as they are on disk; ReceiptError when
    it cannot be read (the model was removed meanwhile)."""
    try:
        return sha256_file(folder / MANIFEST_NAME)
    except OSError as error:
        raise ReceiptError(
            f"cannot read the manifest of {folder.name}: {error.strerror or error}", "model"
        ) from None


def utc_now() -> datetime:
    return datetime.now(UTC)


def installed_versions() -> dict[str, str]:
    """The installed versions of the engine and its runtimes (those not installed are left out)."""
    found = {name: package_version(name) for name in (*RUNTIME_PACKAGES, LLAMA_CPP_PACKAGE)}
    return {name: version for name, version in found.items() if version}


class Attestor:
    """Signs receipts with `keys` (made on first use); `now` is the clock a receipt's time comes
    from, `versions` the package versions it names (None: those installed)."""

    def __init__(
        self,
        keys: ReceiptKeys,
        now: Callable[[], datetime] = utc_now,
        versions: Mapping[str, str] | None = None,
    ) -> None:
        self.keys = keys
        self._now = now
        self._versions = dict(installed_versions() if versions is None else versions)

    def attest(
        self,
        result: GenerationResult,
        manifest: Manifest,
        manifest_digest: str,
        options: SamplingOptions,
        prompt_sha256: str,
    ) -> Receipt:
        """The signed receipt of `result`, written by the converted model `manifest` (whose
        manifest.json hashes to `manifest_digest`) with `options`, from the prompt whose text, as
        the model saw it, hashes to `prompt_sha256`."""
        versions = {
            name: version
            for name, version in self._versions.items()
            if name != LLAMA_CPP_PACKAGE or result.backend == LLAMA_CPP
        }
        predicate = ReceiptPredicate(
            model=manifest.name,
            weights=manifest.model,
            manifest_sha256=manifest_digest,
            recipe=manifest.recipe.name,
            tier=result.tier,
            device=result.device,
            backend=result.backend,
            decoding=result.decoding,
            sampling=options,
            prompt_sha256=prompt_sha256,
            finish_reason=result.finish_reason,
            time=self._now().astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            versions=versions,
            tool_calls=tuple({"name": call.name, "arguments": call.arguments} for call in result.tool_calls),
        )
        return self.sign(text_sha256(result.text), predicate)

    def sign(self, output_sha256: str, predicate: ReceiptPredicate) -> Receipt:
        """The receipt stating that the text hashing to `output_sha256` came of `predicate`."""
        envelope = Envelope(statement_payload(output_sha256, predicate), PAYLOAD_TYPE, {})
        envelope.sign(self.keys.signer())
        return Receipt(envelope.to_dict(), output_sha256, predicate)
