"""RS256 signing keys and compact JWS for JWT-format M2M tokens (CONTRACT.md §4). No I/O.

A key is identified by its RFC 7638 JWK thumbprint, so its ``kid`` is derived from the
public key alone and two nodes can never give one key two names. Only the public members
(``kty n e kid alg use``) ever leave this module as a JWK (SECURITY.md principle 6).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = [
    "ALGORITHM",
    "KEY_SIZE",
    "SigningKey",
    "generate_signing_key",
    "is_compact_jws",
    "jwk_thumbprint",
    "load_private_key",
    "private_key_pem",
    "public_jwk",
    "sign",
    "signing_key_from_pem",
]

# NOTE: RS256 only: the Clerk JS SDK accepts RS256/384/512 and nothing else (DESIGN.md).
ALGORITHM: Final = "RS256"
KEY_SIZE: Final = 2048
_PUBLIC_EXPONENT: Final = 65537

# NOTE: RFC 7515 §7.1 and §2: three base64url segments, no padding. PyJWT also accepts
# trailing "=" on a segment, so "token==" would verify as a second spelling of one token.
_COMPACT_JWS: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A loaded RSA key pair: its ``kid``, the private key object, the public JWK."""

    kid: str
    private_key: rsa.RSAPrivateKey
    public_jwk: dict[str, str]


def _b64url_uint(value: int) -> str:
    """RFC 7518 §6.3.1: big-endian, minimal length, base64url without padding."""
    raw = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def jwk_thumbprint(public_key: rsa.RSAPublicKey) -> str:
    """The RFC 7638 SHA-256 thumbprint of an RSA public key, base64url without padding."""
    numbers = public_key.public_numbers()
    # NOTE: RFC 7638 §3.2: only the required members, in lexicographic order, no spaces.
    canonical = json.dumps(
        {"e": _b64url_uint(numbers.e), "kty": "RSA", "n": _b64url_uint(numbers.n)},
        separators=(",", ":"),
        sort_keys=True,
    )
    digest = hashlib.sha256(canonical.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def public_jwk(public_key: rsa.RSAPublicKey) -> dict[str, str]:
    """The public JWK of a key: ``kty n e kid alg use`` and nothing else."""
    numbers = public_key.public_numbers()
    return {
        "kty": "RSA",
        "n": _b64url_uint(numbers.n),
        "e": _b64url_uint(numbers.e),
        "kid": jwk_thumbprint(public_key),
        "alg": ALGORITHM,
        "use": "sig",
    }


def _signing_key(private_key: rsa.RSAPrivateKey) -> SigningKey:
    jwk = public_jwk(private_key.public_key())
    return SigningKey(kid=jwk["kid"], private_key=private_key, public_jwk=jwk)


def generate_signing_key() -> SigningKey:
    """A new RSA-2048 key pair (tens of milliseconds of CPU: keep it off the hot path)."""
    return _signing_key(
        rsa.generate_private_key(public_exponent=_PUBLIC_EXPONENT, key_size=KEY_SIZE)
    )


def private_key_pem(private_key: rsa.RSAPrivateKey) -> str:
    """The private key as unencrypted PKCS#8 PEM, for sealing under the master key."""
    return private_key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    ).decode("ascii")


def load_private_key(pem: str) -> rsa.RSAPrivateKey:
    """Parse a PKCS#8 PEM written by :func:`private_key_pem`; ``TypeError`` if not RSA."""
    key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError("a signing key must be an RSA private key")
    return key


def signing_key_from_pem(pem: str) -> SigningKey:
    """Load a stored key back, with its ``kid`` and public JWK recomputed."""
    return _signing_key(load_private_key(pem))


def is_compact_jws(token: str) -> bool:
    """Whether ``token`` has the shape of a compact JWS: three unpadded base64url segments.

    Only the shape: whether it is a valid signed token is for the verifier to say.
    """
    return _COMPACT_JWS.fullmatch(token) is not None


def sign(private_key: rsa.RSAPrivateKey, kid: str, payload: dict[str, Any]) -> str:
    """A compact JWS over ``payload`` with header exactly ``{"alg":"RS256","typ":"JWT","kid"}``.

    ``private_key`` is the loaded object: parsing PEM per token would cost more than
    the signature itself.
    """
    return jwt.encode(payload, private_key, algorithm=ALGORITHM, headers={"kid": kid, "typ": "JWT"})
