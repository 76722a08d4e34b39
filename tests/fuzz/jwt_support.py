"""Keys and token builders for the JWT fuzz suites (server and SDK).

One instance key and one attacker key for the whole session (RSA generation costs tens
of milliseconds). Tokens are built as the server builds them, or from any header and
payload, signed with any of the ways an attacker would try.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.hashes import SHA256, SHA512
from fuzz_support import ANY_TEXT, JSON_VALUES, b64url
from hypothesis import strategies as st

from gatepass_server.domain import jwt as server_jwt

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

KEY: Final = server_jwt.generate_signing_key()
ATTACKER: Final = server_jwt.generate_signing_key()
JWKS: Final = {"keys": [KEY.public_jwk]}
NOW: Final = 1_754_938_436
SUBJECT: Final = "mch_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n"
TOKEN_ID: Final = "mt_" + "0123456789abcdef" * 2
PUBLIC_PEM: Final = KEY.private_key.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)

SIGNERS: Final = ("rs256", "rs512", "attacker", "hs256-public-key", "none", "garbage")


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    """The SubjectPublicKeyInfo PEM of ``key``'s public half (what HS256 confusion keys on)."""
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def payload(**overrides: Any) -> dict[str, Any]:
    """The payload shape the server mints (services.tokens._jwt_payload)."""
    base: dict[str, Any] = {
        "team": "billing",
        "jti": TOKEN_ID,
        "sub": SUBJECT,
        "aud": ["mch_" + "a" * 27],
        "scopes": "mch_" + "a" * 27,
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 3600,
    }
    base.update(overrides)
    return base


def valid_token() -> str:
    """A token exactly as the server signs it."""
    return server_jwt.sign(KEY.private_key, KEY.kid, payload())


def _segment(value: object) -> str:
    if isinstance(value, bytes):
        return b64url(value)
    return b64url(json.dumps(value, separators=(",", ":")).encode("utf-8", "surrogatepass"))


def signed(
    header: object, body: object, signer: str, key: rsa.RSAPrivateKey = KEY.private_key
) -> str:
    """``header.body.signature`` with the signature made the way ``signer`` names.

    ``rs256`` and ``rs512`` sign with ``key`` (the verifier's own key), ``hs256-public-key``
    is HMAC keyed with its public key's PEM; the others never use ``key``.
    """
    signing_input = f"{_segment(header)}.{_segment(body)}"
    data = signing_input.encode("ascii")
    if signer == "rs256":
        signature = key.sign(data, padding.PKCS1v15(), SHA256())
    elif signer == "rs512":
        signature = key.sign(data, padding.PKCS1v15(), SHA512())
    elif signer == "attacker":
        signature = ATTACKER.private_key.sign(data, padding.PKCS1v15(), SHA256())
    elif signer == "hs256-public-key":
        # NOTE: the classic confusion: HMAC keyed with the verifier's public key.
        signature = hmac.new(public_pem(key), data, hashlib.sha256).digest()
    elif signer == "none":
        signature = b""
    else:
        signature = hashlib.sha256(data).digest() * 8
    return f"{signing_input}.{b64url(signature)}"


_ALGS: Final = st.sampled_from(
    ["RS256", "RS512", "HS256", "none", "None", "NONE", "ES256", "PS256", "rs256", "", "RS256 "]
)
_OTHER_KIDS: Final = st.one_of(st.just(ATTACKER.kid), ANY_TEXT, st.integers(), st.none())
_EXTRA_HEADER: Final = st.dictionaries(
    st.sampled_from(["jku", "x5u", "jwk", "x5c", "crit", "b64", "typ", "cty", "zip", "enc"]),
    st.one_of(
        st.just(ATTACKER.public_jwk),
        st.just("https://attacker.example/jwks.json"),
        st.just(["MIIB"]),
        st.just(["exp"]),
        st.booleans(),
        st.sampled_from(["JWT", "jwt", "at+jwt", ""]),
        JSON_VALUES,
    ),
    max_size=3,
)


@st.composite
def headers(draw: st.DrawFn, kid: str = KEY.kid) -> object:
    """A protected header: mostly an object with hostile members, sometimes not an object."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON_VALUES)
    header: dict[str, Any] = {"alg": draw(_ALGS), "typ": "JWT"}
    chosen = draw(st.one_of(st.just(kid), st.just(kid), _OTHER_KIDS))
    if chosen is not None:
        header["kid"] = chosen
    header.update(draw(_EXTRA_HEADER))
    return header


_TIMES: Final = st.one_of(
    st.integers(NOW - 10**6, NOW + 10**6),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.sampled_from([None, "1754938436", True, [NOW]]),
)


@st.composite
def payloads(draw: st.DrawFn, **base: Any) -> object:
    """A payload: the server's shape with hostile changes, any JSON, or raw bytes."""
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(JSON_VALUES)
    if choice == 1:
        return draw(st.binary(max_size=60))
    changes = draw(
        st.dictionaries(
            st.sampled_from(["exp", "nbf", "iat", "jti", "sub", "aud", "scopes", "iss", "azp"]),
            st.one_of(_TIMES, JSON_VALUES, st.sampled_from([SUBJECT, TOKEN_ID, "mch_x", "mt_"])),
            max_size=3,
        )
    )
    body = {**payload(**base), **changes}
    for name in draw(st.lists(st.sampled_from(["exp", "jti", "sub", "aud"]), max_size=2)):
        body.pop(name, None)
    return body


FORGED: Final = st.builds(signed, headers(), payloads(), st.sampled_from(SIGNERS))
