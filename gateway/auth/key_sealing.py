"""Sealing private signing keys at rest: AES-256-GCM under a key-encryption key (KEK) from the settings.

Without `LOTABOTS_AUTH_KEY_ENCRYPTION_KEY` a KEK is generated once into `<data_dir>/auth/signing.kek`
(mode 0600) so a single machine works out of the box; production sets the variable from a secret store.
The key id is the AES-GCM associated data, so a sealed key cannot be moved to another row.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lotabots.settings import Settings

_VERSION = "v1"


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def new_kek() -> str:
    """A fresh KEK in the form the setting takes (base64url of 32 random bytes)."""
    return _b64e(AESGCM.generate_key(bit_length=256))


def kek_file(settings: Settings) -> Path:
    return settings.data_dir / "auth" / "signing.kek"


def load_kek(settings: Settings) -> bytes:
    if settings.auth_key_encryption_key is not None:
        raw = _b64d(settings.auth_key_encryption_key.get_secret_value().strip())
    else:
        raw = _b64d(_read_or_create_kek_file(kek_file(settings)))
    if len(raw) != 32:
        raise ValueError("the key-encryption key must be 32 bytes (base64url)")
    return raw


def _read_or_create_kek_file(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            raise PermissionError(f"{path} must not be readable by group or others (chmod 600)") from None
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        value = new_kek()
        f.write(value + "\n")
    return value


class KeySealer:
    """Encrypts and decrypts private-key PEMs with the KEK."""

    def __init__(self, kek: bytes) -> None:
        self._aead = AESGCM(kek)

    def seal(self, kid: str, plaintext: bytes) -> str:
        nonce = os.urandom(12)
        return ".".join((_VERSION, _b64e(nonce), _b64e(self._aead.encrypt(nonce, plaintext, kid.encode()))))

    def unseal(self, kid: str, sealed: str) -> bytes:
        version, nonce, ciphertext = sealed.split(".")
        if version != _VERSION:
            raise ValueError(f"unknown sealing version {version!r}")
        return self._aead.decrypt(_b64d(nonce), _b64d(ciphertext), kid.encode())
