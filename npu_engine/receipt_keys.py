"""This machine's receipt key: an Ed25519 key made on first use in `$NPU_ENGINE_HOME`, the private
half in `receipt-key.pem` (PKCS#8 PEM, file mode 0600), the public half beside it in
`receipt-key.pub.pem`; and public keys read from files, to verify receipts with."""

import contextlib
import errno
import logging
import os
import threading
import uuid
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)
from securesystemslib.signer import CryptoSigner, SSlibKey

from npu_engine.errors import ReceiptError
from npu_engine.files import write_text_atomically

PRIVATE_NAME = "receipt-key.pem"
PUBLIC_NAME = "receipt-key.pub.pem"
MAX_KEY_BYTES = 64 << 10
# Where a hard link cannot be made, the key is renamed into place instead.
_NO_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV)

log = logging.getLogger("npu_engine")


class ReceiptKeys:
    """The receipt key of the engine home `home`: made on first use, then the same key each time."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._signer: CryptoSigner | None = None
        self._guard = threading.Lock()

    @property
    def private_path(self) -> Path:
        return self.home / PRIVATE_NAME

    @property
    def public_path(self) -> Path:
        return self.home / PUBLIC_NAME

    def signer(self) -> CryptoSigner:
        """The signer of this home's key, made (and written) when there is none yet."""
        with self._guard:
            if self._signer is None:
                self._signer = self._load() or self._create()
                self._write_public(self._signer)
            return self._signer

    def public_pem(self) -> str:
        """The public key in PEM (SubjectPublicKeyInfo), made with the key when there is none yet."""
        return public_pem(self.signer().public_key)

    def public_key(self) -> SSlibKey:
        """The public key to verify this home's receipts with, never making one: its public file,
        else the public half of its private key. ReceiptError when the home has no key."""
        if self.public_path.is_file():
            return load_public_key(self.public_path)
        signer = self._load()
        if signer is None:
            raise ReceiptError(
                f"no receipt key in {self.home}: this engine home has signed no receipts "
                "(name the signer's public key with --key)",
                "key",
            )
        return signer.public_key

    def _load(self) -> CryptoSigner | None:
        try:
            data = _read(self.private_path)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise ReceiptError(
                f"cannot read the receipt key {self.private_path}: {error.strerror or error}", "key"
            ) from None
        mode = os.stat(self.private_path).st_mode & 0o777
        if mode & 0o077:
            log.warning("receipt key %s has mode %o: others may read it (chmod 600)", self.private_path, mode)
        try:
            private = load_pem_private_key(data, None)
        except (ValueError, TypeError):
            private = None
        if not isinstance(private, Ed25519PrivateKey):
            raise ReceiptError(
                f"{self.private_path} is not an unencrypted Ed25519 private key in PEM "
                "(move it away and a new key is made)",
                "key",
            )
        return CryptoSigner(private)

    def _create(self) -> CryptoSigner:
        """A new key, written whole under a temporary name and then linked into place, so that no
        reader sees half a key and two processes making one at once end up with the same (the
        second takes the first's)."""
        signer = CryptoSigner.generate_ed25519()
        partial = self.home / f".{PRIVATE_NAME}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial"
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as stream:
                os.fchmod(stream.fileno(), 0o600)
                stream.write(signer.private_bytes)
                stream.flush()
                os.fsync(stream.fileno())
            try:
                os.link(partial, self.private_path)
            except FileExistsError:
                return self._load() or signer
            except OSError as error:
                if error.errno not in _NO_LINKS:
                    raise
                os.rename(partial, self.private_path)
        except OSError as error:
            raise ReceiptError(
                f"cannot write the receipt key in {self.home}: {error.strerror or error}", "key"
            ) from None
        finally:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
        log.info("made the receipt key %s", self.private_path)
        return signer

    def _write_public(self, signer: CryptoSigner) -> None:
        pem = public_pem(signer.public_key)
        try:
            if not self.public_path.is_file() or self.public_path.read_text("ascii") != pem:
                write_text_atomically(self.public_path, pem)
        except (OSError, UnicodeDecodeError) as error:
            log.warning("cannot write the receipt public key %s: %s", self.public_path, error)


def public_pem(key: SSlibKey) -> str:
    """A public key in PEM (SubjectPublicKeyInfo)."""
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(key.keyval["public"]))
    return public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def load_public_key(path: Path) -> SSlibKey:
    """The Ed25519 public key of a PEM file, as securesystemslib verifies with it."""
    try:
        data = _read(path)
    except OSError as error:
        raise ReceiptError(f"cannot read the key {path}: {error.strerror or error}", "key") from None
    try:
        public = load_pem_public_key(data)
    except (ValueError, TypeError):
        public = None
    if not isinstance(public, Ed25519PublicKey):
        raise ReceiptError(f"{path} is not an Ed25519 public key in PEM", "key")
    return SSlibKey.from_crypto(public)


def _read(path: Path) -> bytes:
    with path.open("rb") as stream:
        return stream.read(MAX_KEY_BYTES)
