"""Identifiers and secret formats (CONTRACT.md §1).

Ids are a prefix plus random base62. Secrets are a prefix, a random base62 body from
``secrets`` (190 bits) and a 6-character base62 CRC32 checksum of prefix and body, so a
mistyped or made-up string is rejected before any lookup. Secrets are stored and looked
up only by their SHA-256 digest.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import zlib
from enum import Enum
from typing import Final

__all__ = [
    "BASE62",
    "MAX_SECRET_LENGTH",
    "SecretKind",
    "base62_encode",
    "checksum",
    "digest",
    "generate_secret",
    "is_machine_id",
    "is_token_id",
    "is_well_formed",
    "kind_of",
    "new_instance_id",
    "new_machine_id",
    "new_token_id",
]

BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_BODY_LENGTH: Final = 27
SECRET_BODY_LENGTH: Final = 32  # 32 * log2(62) ≈ 190 bits
CHECKSUM_LENGTH: Final = 6  # 62**6 > 2**32
MAX_SECRET_LENGTH: Final = 128

_BASE62_RE: Final = re.compile(r"[0-9A-Za-z]+")


class SecretKind(Enum):
    """The kinds of bearer secret, by prefix."""

    INSTANCE_TEST = "sk_test_"
    INSTANCE_LIVE = "sk_live_"
    MACHINE = "ak_"
    TOKEN = "mt_"  # noqa: S105 - a prefix, not a password  # nosec B105

    @property
    def is_instance_key(self) -> bool:
        """Whether this is an instance (``sk_``) key."""
        return self in {SecretKind.INSTANCE_TEST, SecretKind.INSTANCE_LIVE}


_UNBIASED_BELOW: Final = 62 * 4  # the largest multiple of 62 that fits a byte


def _random_base62(length: int) -> str:
    """``length`` uniform base62 characters from the OS's CSPRNG, one read per 64 bytes.

    Bytes at or above 248 are dropped (rejection sampling), so ``byte % 62`` is uniform;
    ``secrets.choice`` per character is the same draw at one system call each.
    """
    chars: list[str] = []
    while len(chars) < length:
        chars += [BASE62[b % 62] for b in secrets.token_bytes(64) if b < _UNBIASED_BELOW]
    return "".join(chars[:length])


def base62_encode(number: int, width: int) -> str:
    """Encode a non-negative integer as fixed-width base62."""
    if number < 0:
        raise ValueError("number must be non-negative")
    chars = []
    for _ in range(width):
        number, rest = divmod(number, 62)
        chars.append(BASE62[rest])
    if number:
        raise ValueError("number does not fit the width")
    return "".join(reversed(chars))


def checksum(text: str) -> str:
    """Return the 6-character base62 CRC32 checksum of ``text``."""
    return base62_encode(zlib.crc32(text.encode("ascii")), CHECKSUM_LENGTH)


def new_instance_id() -> str:
    """Return a new ``ins_`` id."""
    return "ins_" + _random_base62(ID_BODY_LENGTH)


def new_machine_id() -> str:
    """Return a new ``mch_`` id."""
    return "mch_" + _random_base62(ID_BODY_LENGTH)


def new_token_id() -> str:
    """Return a new ``mt_`` token id (32 lowercase hex, the handle, not the secret)."""
    return "mt_" + secrets.token_hex(16)


def generate_secret(kind: SecretKind) -> str:
    """Return a new secret of ``kind``: prefix, random body, checksum."""
    head = kind.value + _random_base62(SECRET_BODY_LENGTH)
    return head + checksum(head)


def kind_of(secret: str) -> SecretKind | None:
    """Return the kind a string claims by its prefix, without checking the rest."""
    for kind in SecretKind:
        if secret.startswith(kind.value):
            return kind
    return None


def is_well_formed(secret: str, kind: SecretKind) -> bool:
    """Check prefix, alphabet, length and checksum; no lookup, no timing concern.

    The checksum is public information (it is part of the string), so comparing it with
    ``==`` leaks nothing about any stored secret.
    """
    if len(secret) > MAX_SECRET_LENGTH or not secret.startswith(kind.value):
        return False
    rest = secret[len(kind.value) :]
    if len(rest) != SECRET_BODY_LENGTH + CHECKSUM_LENGTH or not _BASE62_RE.fullmatch(rest):
        return False
    head, check = secret[:-CHECKSUM_LENGTH], secret[-CHECKSUM_LENGTH:]
    return checksum(head) == check


def digest(secret: str) -> bytes:
    """Return the SHA-256 digest a secret is stored and looked up by."""
    return hashlib.sha256(secret.encode("utf-8")).digest()


_ID_RE: Final = re.compile(r"[0-9A-Za-z]{%d}" % ID_BODY_LENGTH)  # noqa: UP031 - a regex, not text


def is_machine_id(value: str) -> bool:
    """Whether ``value`` has the shape of a machine id (``mch_`` + 27 base62)."""
    return value.startswith("mch_") and _ID_RE.fullmatch(value, 4) is not None


_TOKEN_ID_RE: Final = re.compile(r"mt_[0-9a-f]{32}")


def is_token_id(value: str) -> bool:
    """Whether ``value`` has the shape of a token id (``mt_`` + 32 lowercase hex)."""
    return _TOKEN_ID_RE.fullmatch(value) is not None
