"""AES-256-GCM sealing of secrets that must be readable again (DESIGN.md, secrets at rest).

A sealed value is ``version byte ‖ 12-byte nonce ‖ ciphertext+tag``. The associated
data binds a ciphertext to the row it belongs to, so a ciphertext copied onto another
row does not open.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["MASTER_KEY_BYTES", "SealError", "Sealer", "decode_master_key", "encode_master_key"]

MASTER_KEY_BYTES: Final = 32
_VERSION: Final = b"\x01"
_NONCE_BYTES: Final = 12


class SealError(Exception):
    """A sealed value does not open under this master key."""


def decode_master_key(text: str) -> bytes:
    """Decode a master key given as base64 (standard or URL-safe) of 32 bytes."""
    cleaned = text.strip().rstrip("=")
    try:
        # NOTE: validate=True: a non-strict decode silently drops characters outside the
        # alphabet, so a mangled value would be accepted as some other text's key.
        raw = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), altchars="-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the master key must be base64 of 32 bytes") from exc
    if len(raw) != MASTER_KEY_BYTES:
        raise ValueError(f"the master key must be 32 bytes, got {len(raw)}")
    return raw


def encode_master_key(raw: bytes) -> str:
    """Encode a master key as URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class Sealer:
    """Seals and opens small secrets under one master key."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != MASTER_KEY_BYTES:
            raise ValueError("the master key must be 32 bytes")
        self._aead = AESGCM(master_key)

    def seal(self, plaintext: str, context: str) -> bytes:
        """Encrypt ``plaintext``, bound to ``context`` (for example the row's id)."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), context.encode("utf-8"))
        return _VERSION + nonce + sealed

    def open(self, sealed: bytes, context: str) -> str:
        """Decrypt a value sealed by :meth:`seal` with the same ``context``."""
        if sealed[:1] != _VERSION or len(sealed) < 1 + _NONCE_BYTES + 16:
            raise SealError("unknown sealed format")
        nonce, body = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, context.encode("utf-8")).decode("utf-8")
        except InvalidTag as exc:
            raise SealError("sealed value does not open under this master key") from exc
