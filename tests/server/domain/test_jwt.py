"""RS256 signing keys: RFC 7638 kids, public-only JWKs, compact JWS and the JWT attack cases."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any, Final

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gatepass_server.domain.jwt import (
    ALGORITHM,
    KEY_SIZE,
    SigningKey,
    generate_signing_key,
    is_compact_jws,
    jwk_thumbprint,
    load_private_key,
    private_key_pem,
    public_jwk,
    sign,
    signing_key_from_pem,
)

# RFC 7638 §3.1: the example RSA key and its SHA-256 thumbprint.
RFC7638_N: Final = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
    "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_F"
    "DW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4v"
    "MQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)
RFC7638_E: Final = "AQAB"
RFC7638_THUMBPRINT: Final = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"

PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
PAYLOAD: Final = {"sub": "mch_" + "a" * 27, "exp": 4_102_444_800, "iat": 1_754_938_436}


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64url_int(text: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


def _segment(data: dict[str, Any]) -> str:
    return _b64url(json.dumps(data, separators=(",", ":")).encode())


def _verify(token: str, key: SigningKey) -> dict[str, Any]:
    """A verifier as SECURITY.md principle 6 wants it: RS256 only, the JWKS key, exp required."""
    decoded: dict[str, Any] = jwt.decode(
        token,
        jwt.PyJWK(key.public_jwk),
        algorithms=["RS256"],
        options={"require": ["exp"]},
    )
    return decoded


@pytest.fixture(scope="module")
def key() -> SigningKey:
    """One generated key for the module (RSA key generation costs tens of milliseconds)."""
    return generate_signing_key()


def test_thumbprint_matches_rfc7638_example() -> None:
    """The kid of RFC 7638's example key is the thumbprint the RFC gives."""
    public = rsa.RSAPublicNumbers(_b64url_int(RFC7638_E), _b64url_int(RFC7638_N)).public_key()
    assert jwk_thumbprint(public) == RFC7638_THUMBPRINT
    assert public_jwk(public)["kid"] == RFC7638_THUMBPRINT
    assert public_jwk(public)["n"] == RFC7638_N


def test_kid_is_the_thumbprint_and_survives_a_pem_round_trip(key: SigningKey) -> None:
    """The kid is the RFC 7638 thumbprint of the public key, the same after PEM and back."""
    assert key.kid == jwk_thumbprint(key.private_key.public_key())
    assert len(key.kid) == 43  # base64url of 32 bytes, no padding
    reloaded = signing_key_from_pem(private_key_pem(key.private_key))
    assert reloaded.kid == key.kid
    assert reloaded.public_jwk == key.public_jwk


def test_generated_keys_are_rsa_2048_with_distinct_kids(key: SigningKey) -> None:
    """Keys are RSA-2048 with exponent 65537, and two keys never share a kid."""
    assert key.private_key.key_size == KEY_SIZE == 2048
    assert key.private_key.public_key().public_numbers().e == 65537
    assert generate_signing_key().kid != key.kid


def test_public_jwk_has_public_members_only(key: SigningKey) -> None:
    """The JWK is exactly kty, n, e, kid, alg RS256, use sig: no private member."""
    jwk = key.public_jwk
    assert set(jwk) == {"kty", "n", "e", "kid", "alg", "use"}
    assert not PRIVATE_MEMBERS & set(jwk)
    assert (jwk["kty"], jwk["e"], jwk["alg"], jwk["use"]) == ("RSA", "AQAB", ALGORITHM, "sig")
    assert jwk["kid"] == key.kid
    assert _b64url_int(jwk["n"]) == key.private_key.public_key().public_numbers().n
    assert "=" not in jwk["n"]
    private = key.private_key.private_numbers()
    text = json.dumps(jwk)
    for secret in (private.d, private.p, private.q, private.dmp1, private.dmq1, private.iqmp):
        encoded = _b64url(secret.to_bytes((secret.bit_length() + 7) // 8, "big"))
        assert encoded not in text


def test_private_key_pem_round_trip(key: SigningKey) -> None:
    """The PKCS#8 PEM loads back to the same private key."""
    pem = private_key_pem(key.private_key)
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    loaded = load_private_key(pem)
    assert loaded.private_numbers() == key.private_key.private_numbers()


def test_load_private_key_refuses_a_non_rsa_key() -> None:
    """An EC private key is not a signing key of ours."""
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    with pytest.raises(TypeError):
        load_private_key(pem)


def test_sign_verifies_with_the_public_jwk(key: SigningKey) -> None:
    """A signed token decodes with PyJWT from the public JWK alone, restricted to RS256."""
    token = sign(key.private_key, key.kid, PAYLOAD)
    assert token.count(".") == 2
    assert _verify(token, key) == PAYLOAD


def test_header_is_exactly_alg_typ_kid(key: SigningKey) -> None:
    """The JOSE header is exactly {"alg":"RS256","typ":"JWT","kid":…} (CONTRACT.md §4)."""
    token = sign(key.private_key, key.kid, PAYLOAD)
    expected = {"alg": "RS256", "typ": "JWT", "kid": key.kid}
    assert jwt.get_unverified_header(token) == expected
    raw = token.split(".")[0]
    assert json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))) == expected


def test_tampered_signature_is_rejected(key: SigningKey) -> None:
    """One changed signature character, or a changed payload, fails verification."""
    header, payload, signature = sign(key.private_key, key.kid, PAYLOAD).split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    forged = f"{header}.{payload}.{signature[:middle]}{flipped}{signature[middle + 1 :]}"
    with pytest.raises(jwt.InvalidSignatureError):
        _verify(forged, key)
    other_payload = _segment({**PAYLOAD, "sub": "mch_" + "b" * 27})
    with pytest.raises(jwt.InvalidSignatureError):
        _verify(f"{header}.{other_payload}.{signature}", key)


def test_token_signed_by_another_key_is_rejected(key: SigningKey) -> None:
    """A token signed with another private key under our kid does not verify."""
    other = generate_signing_key()
    with pytest.raises(jwt.InvalidSignatureError):
        _verify(sign(other.private_key, key.kid, PAYLOAD), key)


def test_alg_none_is_rejected(key: SigningKey) -> None:
    """An unsigned ``alg: none`` token naming our kid is refused by an RS256-only verifier."""
    header = _segment({"alg": "none", "typ": "JWT", "kid": key.kid})
    token = f"{header}.{_segment(PAYLOAD)}."
    with pytest.raises(jwt.InvalidAlgorithmError):
        _verify(token, key)


def test_hs256_signed_with_the_public_key_is_rejected(key: SigningKey) -> None:
    """HMAC keyed with the public key (the algorithm-confusion attack) is refused."""
    public_pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = (
        f"{_segment({'alg': 'HS256', 'typ': 'JWT', 'kid': key.kid})}.{_segment(PAYLOAD)}"
    )
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{_b64url(mac)}"
    with pytest.raises(jwt.InvalidAlgorithmError):
        _verify(token, key)
    with pytest.raises(jwt.InvalidAlgorithmError):
        jwt.decode(token, public_pem, algorithms=["RS256"])


def test_sign_keeps_custom_claims_verbatim(key: SigningKey) -> None:
    """Custom claims of any JSON shape come back from verification unchanged."""
    payload = {**PAYLOAD, "tenant": "é ✓", "nested": {"a": [1, 2.5, None, True]}}
    assert _verify(sign(key.private_key, key.kid, payload), key) == payload


def test_is_compact_jws_refuses_padding_and_other_shapes(key: SigningKey) -> None:
    """Three unpadded base64url segments only: PyJWT alone would take ``token + "=="``."""
    token = sign(key.private_key, key.kid, PAYLOAD)
    assert is_compact_jws(token)
    others = (token + "==", token + "=", token + ".", "a.b", "a.b.c.d", "a..c", "a.b.", "é.b.c")
    for other in others:
        assert not is_compact_jws(other), other
