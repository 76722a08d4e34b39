"""Local JWT verification (gatepass._jwt): the Gatepass profile and SECURITY.md principle 6."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
from typing import Any, Final

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatepass._jwt import (
    MAX_TOKEN_LENGTH,
    JwksCache,
    JwksKeys,
    JwtRejected,
    VerifiedJwt,
    read_header,
    unverified_subject,
    verify_jwt,
)
from gatepass._state import AuthReason
from gatepass_server.domain import jwt as server_jwt
from gatepass_server.domain.tokens import M2MToken, TokenFormat
from gatepass_server.services.tokens import _jwt_payload

# RSA key generation costs tens of milliseconds: one key for the instance, one for the attacker.
KEY: Final = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ATTACKER_KEY: Final = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC: Final = KEY.public_key()
KID: Final = server_jwt.jwk_thumbprint(PUBLIC)
ATTACKER_KID: Final = server_jwt.jwk_thumbprint(ATTACKER_KEY.public_key())

NOW: Final = 1_754_938_436
TOKEN_ID: Final = "mt_" + "0123456789abcdef" * 2
SUBJECT: Final = "mch_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n"
SCOPE_A: Final = "mch_" + "a" * 27
SCOPE_B: Final = "mch_" + "b" * 27
RESERVED: Final = ("iss", "sub", "aud", "exp", "nbf", "iat", "jti", "azp", "scopes", "cat")
REMOVE: Final = object()


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64url_uint(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _segment(value: object) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


def _payload(**overrides: object) -> dict[str, Any]:
    """The payload the server writes (services.tokens._jwt_payload), with ``overrides``."""
    payload: dict[str, Any] = {
        "team": "billing",
        "jti": TOKEN_ID,
        "sub": SUBJECT,
        "aud": [SCOPE_A, SCOPE_B],
        "scopes": f"{SCOPE_A} {SCOPE_B}",
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 3600,
    }
    payload.update(overrides)
    return {name: value for name, value in payload.items() if value is not REMOVE}


def _token(
    payload: dict[str, Any] | None = None,
    *,
    key: rsa.RSAPrivateKey = KEY,
    kid: str = KID,
    algorithm: str = "RS256",
    **headers: Any,
) -> str:
    """A token signed by PyJWT the way the server signs them (header alg, typ, kid)."""
    return jwt.encode(
        _payload() if payload is None else payload,
        key,
        algorithm=algorithm,
        headers={"kid": kid, "typ": "JWT", **headers},
    )


def _signed(header: dict[str, Any], payload: object, key: rsa.RSAPrivateKey = KEY) -> str:
    """A compact JWS with exactly ``header``, RS256-signed over whatever the header says."""
    signing_input = f"{_segment(header)}.{_segment(payload)}"
    signature = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).sign(
        signing_input.encode(), key
    )
    return f"{signing_input}.{_b64url(signature)}"


def _jwk(public_key: rsa.RSAPublicKey, **members: object) -> dict[str, Any]:
    numbers = public_key.public_numbers()
    jwk: dict[str, Any] = {
        "kty": "RSA",
        "n": _b64url_uint(numbers.n),
        "e": _b64url_uint(numbers.e),
        "kid": server_jwt.jwk_thumbprint(public_key),
        "alg": "RS256",
        "use": "sig",
    }
    jwk.update(members)
    return {name: value for name, value in jwk.items() if value is not REMOVE}


def _verified(result: VerifiedJwt | JwtRejected) -> VerifiedJwt:
    assert isinstance(result, VerifiedJwt), result
    return result


def _reason(result: VerifiedJwt | JwtRejected | str | None) -> AuthReason:
    assert isinstance(result, JwtRejected), result
    return result.reason


def _verify(token: str, **kwargs: Any) -> VerifiedJwt | JwtRejected:
    kwargs.setdefault("now", NOW)
    return verify_jwt(token, PUBLIC, **kwargs)


# --- tokens that verify ---------------------------------------------------------------


def test_server_shaped_token_verifies() -> None:
    """A token shaped like the server's yields its id, subject, scopes, claims and expiry."""
    token = _token()
    assert read_header(token) == KID
    verified = _verified(_verify(token))
    assert verified == VerifiedJwt(
        token_id=TOKEN_ID,
        subject=SUBJECT,
        scopes=(SCOPE_A, SCOPE_B),
        claims={"team": "billing"},
        expiration=(NOW + 3600) * 1000,
    )


def test_token_signed_by_the_server_code_verifies_against_its_jwks() -> None:
    """A token from the server's own payload builder and signer verifies via its JWKS."""
    signing_key = server_jwt.generate_signing_key()
    record = M2MToken(
        id=TOKEN_ID,
        instance_id="ins_" + "x" * 27,
        subject=SUBJECT,
        token_format=TokenFormat.JWT,
        claims={"role": "reader", "nested": {"n": [1, 2.5, None, True]}},
        scopes=(SCOPE_A,),
        expiration=(NOW + 60) * 1000,
        revoked_at=None,
        revocation_reason=None,
        last_used_at=None,
        created_at=NOW * 1000 + 123,
        updated_at=NOW * 1000 + 123,
    )
    token = server_jwt.sign(signing_key.private_key, signing_key.kid, _jwt_payload(record))
    keys = JwksKeys.from_jwks({"keys": [signing_key.public_jwk]})

    kid = read_header(token)
    assert kid == signing_key.kid
    key = keys.get(kid)
    assert key is not None
    verified = _verified(verify_jwt(token, key, now=NOW + 1))
    assert verified.token_id == record.id
    assert verified.subject == record.subject
    assert verified.scopes == record.scopes
    assert verified.claims == record.claims
    assert verified.expiration == record.expiration
    assert unverified_subject(token) == SUBJECT


def test_token_without_typ_verifies() -> None:
    """``typ`` may be absent (CONTRACT.md §4: absent or ``JWT``)."""
    token = _signed({"alg": "RS256", "kid": KID}, _payload())
    assert read_header(token) == KID
    _verified(_verify(token))


def test_scopes_come_from_the_scopes_claim_with_empty_parts_dropped() -> None:
    """``scopes`` is split on spaces; runs of spaces and an empty string give no scopes."""
    verified = _verified(_verify(_token(_payload(scopes=f"  {SCOPE_B}  {SCOPE_A} ", aud=[]))))
    assert verified.scopes == (SCOPE_B, SCOPE_A)
    assert _verified(_verify(_token(_payload(scopes="", aud=[])))).scopes == ()


@pytest.mark.parametrize(
    ("aud", "expected"),
    [([SCOPE_A, SCOPE_B], (SCOPE_A, SCOPE_B)), (SCOPE_A, (SCOPE_A,)), ([], ()), (REMOVE, ())],
)
def test_scopes_fall_back_to_aud_without_a_scopes_claim(
    aud: object, expected: tuple[str, ...]
) -> None:
    """Without ``scopes``, the scopes are the ``aud`` array (or single string)."""
    verified = _verified(_verify(_token(_payload(scopes=REMOVE, aud=aud))))
    assert verified.scopes == expected


def test_float_times_are_accepted() -> None:
    """NumericDate may be fractional (RFC 7519 §2); exp in ms keeps the fraction."""
    verified = _verified(_verify(_token(_payload(exp=NOW + 10.25, iat=NOW - 0.5, nbf=NOW + 0.5))))
    assert verified.expiration == (NOW + 10) * 1000 + 250


def test_custom_claims_exclude_every_reserved_name() -> None:
    """``claims`` holds the custom claims only, never a registered or Gatepass claim."""
    verified = _verified(_verify(_token(_payload(a=1, b={"c": [None]}))))
    assert verified.claims == {"team": "billing", "a": 1, "b": {"c": [None]}}
    assert not set(RESERVED) & set(verified.claims)


# --- SECURITY.md principle 6: the algorithm -------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
def test_alg_none_unsigned_token_is_rejected(alg: str) -> None:
    """An unsigned ``alg: none`` token is refused for its algorithm, signature empty or not."""
    for signature in ("", _b64url(b"x")):
        token = f"{_segment({'alg': alg, 'typ': 'JWT', 'kid': KID})}.{_segment(_payload())}."
        token += signature
        assert _reason(read_header(token)) is AuthReason.TOKEN_INVALID_ALGORITHM
        assert _reason(_verify(token)) is AuthReason.TOKEN_INVALID_ALGORITHM


def test_hs256_signed_with_the_public_key_pem_is_rejected() -> None:
    """HMAC keyed with the public key's PEM (the classic alg confusion) never verifies."""
    pem = PUBLIC.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for secret in (pem, pem.strip()):
        signing_input = (
            f"{_segment({'alg': 'HS256', 'typ': 'JWT', 'kid': KID})}.{_segment(_payload())}"
        )
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        token = f"{signing_input}.{_b64url(mac)}"
        assert _reason(read_header(token)) is AuthReason.TOKEN_INVALID_ALGORITHM
        assert _reason(_verify(token)) is AuthReason.TOKEN_INVALID_ALGORITHM


@pytest.mark.parametrize("algorithm", ["RS384", "RS512", "PS256", "ES256"])
def test_other_asymmetric_algorithms_are_rejected(algorithm: str) -> None:
    """RS384, RS512, PS256 and ES256 tokens are refused for their algorithm (RS256 only)."""
    if algorithm == "ES256":
        ec_key = ec.generate_private_key(ec.SECP256R1())
        token = jwt.encode(_payload(), ec_key, algorithm="ES256", headers={"kid": KID})
    else:
        token = _token(algorithm=algorithm)
    assert _reason(read_header(token)) is AuthReason.TOKEN_INVALID_ALGORITHM
    assert _reason(_verify(token)) is AuthReason.TOKEN_INVALID_ALGORITHM


@pytest.mark.parametrize("alg", [REMOVE, None, 256, ["RS256"], "rs256", "RS256 "])
def test_missing_or_ill_typed_alg_is_rejected(alg: object) -> None:
    """``alg`` must be exactly the string ``RS256``."""
    header = {
        name: value for name, value in {"alg": alg, "kid": KID}.items() if value is not REMOVE
    }
    token = _signed(header, _payload())
    assert _reason(read_header(token)) is AuthReason.TOKEN_INVALID_ALGORITHM
    assert _reason(_verify(token)) is AuthReason.TOKEN_INVALID_ALGORITHM


def test_header_claiming_rs256_over_a_pss_signature_fails_the_signature() -> None:
    """The verifier is fixed to RS256 (PKCS#1 v1.5): relabelling a PS256 signature fails."""
    ps256 = _token(algorithm="PS256")
    _, payload, signature = ps256.split(".")
    token = f"{_segment({'alg': 'RS256', 'typ': 'JWT', 'kid': KID})}.{payload}.{signature}"
    assert _reason(_verify(token)) is AuthReason.TOKEN_INVALID_SIGNATURE


# --- SECURITY.md principle 6: the key --------------------------------------------------


def test_unknown_kid_resolves_to_no_key() -> None:
    """A kid the loaded JWKS lacks gives no key; a refetch is allowed once per cooldown."""
    token = _token(kid="forged-kid")
    kid = read_header(token)
    assert kid == "forged-kid"
    keys = JwksKeys.from_jwks({"keys": [_jwk(PUBLIC)]})
    assert keys.get(kid) is None
    cache = JwksCache(refetch_cooldown=10.0)
    cache.loaded(keys, now=100.0)
    assert cache.key_for(kid, now=100.0) is None
    assert isinstance(cache.key_for(KID, now=100.0), rsa.RSAPublicKey)


def test_token_naming_the_instance_kid_but_signed_by_another_key_is_rejected() -> None:
    """An attacker's token carrying the real kid resolves the real key and fails its signature."""
    token = _token(key=ATTACKER_KEY, kid=KID)
    assert read_header(token) == KID
    assert _reason(_verify(token)) is AuthReason.TOKEN_INVALID_SIGNATURE


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("jwk", _jwk(ATTACKER_KEY.public_key())),
        ("jku", "https://attacker.example/jwks.json"),
        ("x5u", "https://attacker.example/cert.pem"),
        ("x5c", ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]),
    ],
)
def test_key_carrying_headers_are_ignored(name: str, value: object) -> None:
    """jku/x5u/jwk/x5c pointing at the attacker's key never pick the key: signature invalid."""
    token = _signed(
        {"alg": "RS256", "typ": "JWT", "kid": ATTACKER_KID, name: value}, _payload(), ATTACKER_KEY
    )
    assert read_header(token) == ATTACKER_KID
    assert _reason(_verify(token)) is AuthReason.TOKEN_INVALID_SIGNATURE
    keys = JwksKeys.from_jwks({"keys": [_jwk(PUBLIC)]})
    assert keys.get(ATTACKER_KID) is None


@pytest.mark.parametrize("kid", [REMOVE, None, "", 7, ["k"]])
def test_missing_or_ill_typed_kid_is_a_kid_mismatch(kid: object) -> None:
    """Without a non-empty string kid no key can be chosen."""
    header = {"alg": "RS256", "typ": "JWT", "kid": kid}
    token = _signed({n: v for n, v in header.items() if v is not REMOVE}, _payload())
    assert _reason(read_header(token)) is AuthReason.JWK_KID_MISMATCH
    assert _reason(_verify(token)) is AuthReason.JWK_KID_MISMATCH


# --- SECURITY.md principle 6: the header ----------------------------------------------


@pytest.mark.parametrize("typ", ["jwt", "at+jwt", "JWS", "", None, 1])
def test_typ_other_than_jwt_is_rejected(typ: object) -> None:
    """``typ``, when present, must be exactly ``JWT``."""
    token = _signed({"alg": "RS256", "typ": typ, "kid": KID}, _payload())
    assert _reason(read_header(token)) is AuthReason.TOKEN_INVALID
    assert _reason(_verify(token)) is AuthReason.TOKEN_INVALID


@pytest.mark.parametrize(
    "extra", [{"crit": ["exp"]}, {"crit": []}, {"b64": False, "crit": ["b64"]}, {"b64": True}]
)
def test_crit_and_b64_headers_are_rejected(extra: dict[str, Any]) -> None:
    """RFC 7515 §4.1.11: Gatepass understands no critical extension, so ``crit`` is refused."""
    token = _signed({"alg": "RS256", "typ": "JWT", "kid": KID, **extra}, _payload())
    assert _reason(read_header(token)) is AuthReason.TOKEN_INVALID
    assert _reason(_verify(token)) is AuthReason.TOKEN_INVALID


@pytest.mark.parametrize("header", [[], "RS256", 1, None])
def test_header_that_is_not_an_object_is_rejected(header: object) -> None:
    """A header must be a JSON object."""
    token = f"{_segment(header)}.{_segment(_payload())}.{_b64url(b'sig')}"
    assert _reason(read_header(token)) is AuthReason.TOKEN_INVALID
    assert _reason(_verify(token)) is AuthReason.TOKEN_INVALID


# --- SECURITY.md principle 6: the claims ----------------------------------------------


def test_missing_exp_is_rejected() -> None:
    """``exp`` is required: a token that never expires is refused, for that reason."""
    result = _verify(_token(_payload(exp=REMOVE)))
    assert _reason(result) is AuthReason.TOKEN_INVALID
    assert isinstance(result, JwtRejected)
    assert "exp" in result.message


@pytest.mark.parametrize(
    "overrides",
    [
        {"jti": REMOVE},
        {"jti": "tok_" + "0" * 32},
        {"jti": 1},
        {"sub": REMOVE},
        {"sub": "user_2abc"},
        {"sub": ["mch_x"]},
        {"aud": [SCOPE_A, 1]},
        {"aud": {"a": 1}},
        {"scopes": [SCOPE_A]},
        {"scopes": None, "aud": 5},
    ],
)
def test_missing_or_ill_typed_required_claims_are_rejected(overrides: dict[str, Any]) -> None:
    """``jti`` (``mt_…``) and ``sub`` (``mch_…``) are required; aud and scopes well typed."""
    assert _reason(_verify(_token(_payload(**overrides)))) is AuthReason.TOKEN_INVALID


@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", ["1754938436", True, False, None, [1], {"t": 1}, 10**400, 2**60])
def test_non_numeric_or_unbounded_times_are_rejected(name: str, value: object) -> None:
    """exp, nbf and iat are finite, bounded numbers: not strings, booleans or 400 digits."""
    if value is None and name != "exp":
        # A null nbf or iat reads as absent, which is allowed.
        _verified(_verify(_token(_payload(**{name: value}))))
        return
    assert _reason(_verify(_token(_payload(**{name: value})))) is AuthReason.TOKEN_INVALID


def _signed_raw(body: str) -> str:
    """A token RS256-signed over a payload given as raw JSON text (for non-JSON numbers)."""
    signing_input = (
        f"{_segment({'alg': 'RS256', 'typ': 'JWT', 'kid': KID})}.{_b64url(body.encode())}"
    )
    signature = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).sign(
        signing_input.encode(), KEY
    )
    return f"{signing_input}.{_b64url(signature)}"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_nan_and_infinite_exp_are_rejected(literal: str) -> None:
    """``NaN``/``Infinity`` are not JSON and ``1e400`` overflows to infinity: both refused."""
    body = json.dumps(_payload(exp=0), separators=(",", ":")).replace('"exp":0', f'"exp":{literal}')
    assert _reason(_verify(_signed_raw(body))) is AuthReason.TOKEN_INVALID


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_in_custom_claims_are_rejected(literal: str) -> None:
    """A payload holding ``NaN`` anywhere is not JSON (RFC 8259 §6), so it is not a JWT."""
    body = json.dumps(_payload(team=0), separators=(",", ":")).replace(
        '"team":0', f'"team":{literal}'
    )
    assert _reason(_verify(_signed_raw(body))) is AuthReason.TOKEN_INVALID
    assert unverified_subject(_signed_raw(body)) is None


@pytest.mark.parametrize("name", ["iss", "azp", "cat"])
def test_reserved_claim_smuggling_is_rejected(name: str) -> None:
    """A token carrying a reserved name Gatepass never writes (iss, azp, cat) is refused."""
    token = _token(_payload(**{name: "https://attacker.example"}))
    assert _reason(_verify(token)) is AuthReason.TOKEN_INVALID


@pytest.mark.parametrize("payload", [[], "claims", 1, None])
def test_payload_that_is_not_an_object_is_rejected(payload: object) -> None:
    """A correctly signed payload that is not a JSON object is malformed."""
    token = _signed({"alg": "RS256", "typ": "JWT", "kid": KID}, payload)
    assert _reason(_verify(token)) is AuthReason.TOKEN_INVALID


def test_tampered_payload_is_rejected() -> None:
    """Widening the scopes of a genuine token breaks its signature."""
    header, _, signature = _token().split(".")
    forged = _segment(_payload(scopes=f"{SCOPE_A} {SCOPE_B} mch_{'z' * 27}"))
    assert _reason(_verify(f"{header}.{forged}.{signature}")) is AuthReason.TOKEN_INVALID_SIGNATURE


def test_tampered_header_is_rejected() -> None:
    """The header is signed too: adding a member to it breaks the signature."""
    _, payload, signature = _token().split(".")
    header = _segment({"alg": "RS256", "typ": "JWT", "kid": KID, "x": 1})
    assert _reason(_verify(f"{header}.{payload}.{signature}")) is AuthReason.TOKEN_INVALID_SIGNATURE


def test_bad_signature_is_reported_before_any_claim() -> None:
    """A forged token learns nothing about its claims: expired and forged reads as forged."""
    token = _token(_payload(exp=NOW - 3600, iss="x"), key=ATTACKER_KEY)
    assert _reason(_verify(token)) is AuthReason.TOKEN_INVALID_SIGNATURE


# --- lifetime, with an injected clock -------------------------------------------------


@pytest.mark.parametrize(
    ("now", "leeway", "expired"),
    [
        (NOW + 100 - 0.001, 0.0, False),
        (NOW + 100, 0.0, True),
        (NOW + 104.999, 5.0, False),
        (NOW + 105, 5.0, True),
        (NOW + 10_000, 5.0, True),
        (NOW + 100, -1.0, True),
    ],
)
def test_expiry_boundaries_with_leeway(now: float, leeway: float, expired: bool) -> None:
    """Valid while ``now < exp + leeway`` (RFC 7519 §4.1.4), expired from then on."""
    result = verify_jwt(_token(_payload(exp=NOW + 100)), PUBLIC, now=now, leeway=leeway)
    if expired:
        assert _reason(result) is AuthReason.TOKEN_EXPIRED
    else:
        _verified(result)


@pytest.mark.parametrize(
    ("now", "leeway", "active"),
    [
        (NOW + 100, 0.0, True),
        (NOW + 99.999, 0.0, False),
        (NOW + 95, 5.0, True),
        (NOW + 94.999, 5.0, False),
        (NOW, 5.0, False),
    ],
)
def test_nbf_in_the_future_is_rejected(now: float, leeway: float, active: bool) -> None:
    """Active from ``nbf - leeway`` on (RFC 7519 §4.1.5), not active yet before."""
    token = _token(_payload(nbf=NOW + 100, iat=NOW))
    result = verify_jwt(token, PUBLIC, now=now, leeway=leeway)
    if active:
        _verified(result)
    else:
        assert _reason(result) is AuthReason.TOKEN_NOT_ACTIVE_YET


def test_iat_in_the_future_is_rejected() -> None:
    """A token issued beyond the leeway in the future is not active yet."""
    token = _token(_payload(iat=NOW + 6, nbf=REMOVE))
    assert _reason(_verify(token, leeway=5.0)) is AuthReason.TOKEN_NOT_ACTIVE_YET
    _verified(_verify(token, leeway=6.0))


def test_nbf_and_iat_are_optional() -> None:
    """Only exp is required among the times."""
    _verified(_verify(_token(_payload(nbf=REMOVE, iat=REMOVE))))


@pytest.mark.parametrize(("now", "leeway"), [(math.nan, 5.0), (NOW, math.nan)])
def test_nan_clock_or_leeway_fails_closed(now: float, leeway: float) -> None:
    """Every time check is written as "is it fine", so NaN makes the token expired."""
    assert _reason(verify_jwt(_token(), PUBLIC, now=now, leeway=leeway)) in {
        AuthReason.TOKEN_EXPIRED,
        AuthReason.TOKEN_NOT_ACTIVE_YET,
    }


# --- audience -------------------------------------------------------------------------


def test_wrong_audience_is_rejected() -> None:
    """With ``audience`` given, a token scoped to other machines is refused."""
    result = _verify(_token(), audience="mch_" + "z" * 27)
    assert _reason(result) is AuthReason.TOKEN_INVALID_AUDIENCE


@pytest.mark.parametrize("aud", [[SCOPE_A, SCOPE_B], SCOPE_B])
def test_matching_audience_is_accepted(aud: object) -> None:
    """``aud`` as an array or a single string may contain the audience."""
    _verified(_verify(_token(_payload(aud=aud)), audience=SCOPE_B))


@pytest.mark.parametrize("aud", [[], REMOVE])
def test_audience_required_but_aud_empty_or_absent_is_rejected(aud: object) -> None:
    """An empty or absent ``aud`` contains no audience."""
    result = _verify(_token(_payload(aud=aud, scopes="")), audience=SCOPE_A)
    assert _reason(result) is AuthReason.TOKEN_INVALID_AUDIENCE


@pytest.mark.parametrize("aud", [[], REMOVE, ["mch_" + "z" * 27]])
def test_audience_check_is_skipped_without_an_audience(aud: object) -> None:
    """With ``audience=None``, aud is not checked (an unscoped token is valid)."""
    _verified(_verify(_token(_payload(aud=aud))))


# --- malformed input ------------------------------------------------------------------


def test_oversize_token_is_rejected_before_decoding() -> None:
    """A correctly signed token beyond the length cap is refused (SECURITY.md principle 5)."""
    token = _token(_payload(blob="x" * MAX_TOKEN_LENGTH))
    assert len(token) > MAX_TOKEN_LENGTH
    assert _reason(read_header(token)) is AuthReason.TOKEN_INVALID
    assert _reason(_verify(token)) is AuthReason.TOKEN_INVALID
    assert unverified_subject(token) is None
    near = _token(_payload(blob="x" * (MAX_TOKEN_LENGTH // 2)))
    assert len(near) <= MAX_TOKEN_LENGTH
    _verified(_verify(near))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t + "=",
        lambda t: t.replace(".", "=.", 1),
        lambda t: t + ".",
        lambda t: t + ".x",
        lambda t: t.split(".", 1)[1],
        lambda t: " " + t,
        lambda t: t + "\n",
        lambda t: t.replace("-", "+").replace("_", "/") + "+/",
        lambda t: "." + t.split(".", 1)[1],
        lambda t: t[: t.index(".") + 1] + "." + t.rsplit(".", 1)[1],
    ],
)
def test_malformed_compact_serialisation_is_rejected(mangle: Any) -> None:
    """Padding, extra or missing segments, whitespace and the non-url alphabet are refused."""
    token = mangle(_token())
    assert _reason(read_header(token)) is AuthReason.TOKEN_INVALID
    assert _reason(_verify(token)) is AuthReason.TOKEN_INVALID


def test_non_canonical_base64url_is_rejected() -> None:
    """Spare low bits set in a segment's last character give another spelling: refused."""
    token = _token()
    header, payload, signature = token.split(".")
    assert len(signature) % 4 in {2, 3}
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    twin = alphabet[last + 1]
    assert base64.urlsafe_b64decode(signature[:-1] + twin + "==") == base64.urlsafe_b64decode(
        signature + "=="
    )
    assert _reason(_verify(f"{header}.{payload}.{signature[:-1]}{twin}")) is (
        AuthReason.TOKEN_INVALID
    )


def test_non_string_tokens_are_rejected() -> None:
    """Bytes or None passed by a careless caller are refused, not raised on."""
    junk: Any
    for junk in (_token().encode(), None, 1):
        assert _reason(read_header(junk)) is AuthReason.TOKEN_INVALID
        assert _reason(verify_jwt(junk, PUBLIC, now=NOW)) is AuthReason.TOKEN_INVALID
        assert unverified_subject(junk) is None


def test_a_key_that_is_not_an_rsa_public_key_is_a_programming_error() -> None:
    """Passing a private key or a PEM string is a caller bug and raises TypeError."""
    bad: Any
    for bad in (KEY, "-----BEGIN PUBLIC KEY-----", None):
        with pytest.raises(TypeError):
            verify_jwt(_token(), bad, now=NOW)


def test_rejection_messages_never_contain_the_token() -> None:
    """A message is safe to log: no token, no payload segment."""
    token = _token(_payload(exp=NOW - 100))
    for result in (
        _verify(token),
        _verify(token + "x"),
        _verify(_token(key=ATTACKER_KEY)),
        _verify(_token(), audience="mch_other"),
    ):
        rejected = result
        assert isinstance(rejected, JwtRejected)
        assert token not in rejected.message
        assert token.split(".")[1][:16] not in rejected.message


# --- unverified_subject ---------------------------------------------------------------


def test_unverified_subject_reads_sub_without_verifying() -> None:
    """Any JWS with a string sub gives it, signature unchecked; anything else gives None."""
    assert unverified_subject(_token()) == SUBJECT
    assert unverified_subject(_token(key=ATTACKER_KEY)) == SUBJECT
    assert unverified_subject(_token(_payload(sub="user_2x"), algorithm="RS384")) == "user_2x"
    assert unverified_subject(_token(_payload(sub=REMOVE))) is None
    assert unverified_subject(_token(_payload(sub=5))) is None
    assert unverified_subject(_signed({"alg": "RS256"}, ["sub"])) is None
    assert unverified_subject("mt_" + "0" * 32) is None
    assert unverified_subject("ak_secret.with.dots") is None


# --- Hypothesis: no input raises ------------------------------------------------------

_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
_SEGMENTS = st.one_of(
    st.binary(max_size=64).map(_b64url),
    _JSON_VALUES.map(_segment),
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/.", max_size=40
    ),
)


@given(st.text(max_size=300))
def test_arbitrary_text_is_never_raised_on(text: str) -> None:
    """Any string: read_header and verify_jwt answer a rejection, unverified_subject None."""
    assert isinstance(read_header(text), JwtRejected)
    assert isinstance(verify_jwt(text, PUBLIC, now=NOW), JwtRejected)
    assert unverified_subject(text) is None


@given(st.lists(_SEGMENTS, min_size=1, max_size=4))
def test_arbitrary_segments_are_never_raised_on(segments: list[str]) -> None:
    """Dotted base64url of random bytes or JSON is refused, never raised on."""
    token = ".".join(segments)
    header = read_header(token)
    assert isinstance(header, JwtRejected | str)
    assert isinstance(verify_jwt(token, PUBLIC, now=NOW), JwtRejected)
    subject = unverified_subject(token)
    assert subject is None or isinstance(subject, str)


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=8), _JSON_VALUES, max_size=6))
def test_correctly_signed_arbitrary_payloads_are_never_raised_on(extra: dict[str, Any]) -> None:
    """A validly signed payload of any JSON shape verifies or is rejected, never raises."""
    result = _verify(_signed({"alg": "RS256", "typ": "JWT", "kid": KID}, {**_payload(), **extra}))
    if isinstance(result, VerifiedJwt):
        assert not set(RESERVED) & set(result.claims)
        assert result.claims == {
            name: value for name, value in {**_payload(), **extra}.items() if name not in RESERVED
        }
    else:
        assert result.reason in {
            AuthReason.TOKEN_INVALID,
            AuthReason.TOKEN_EXPIRED,
            AuthReason.TOKEN_NOT_ACTIVE_YET,
        }


_VALID_TOKEN: Final = _token()


@given(st.data())
def test_any_single_character_change_is_rejected(data: st.DataObject) -> None:
    """Changing one character anywhere in a valid token never leaves it valid."""
    index = data.draw(st.integers(0, len(_VALID_TOKEN) - 1))
    replacement = data.draw(
        st.sampled_from(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.="
        ).filter(lambda c: c != _VALID_TOKEN[index])
    )
    token = _VALID_TOKEN[:index] + replacement + _VALID_TOKEN[index + 1 :]
    assert isinstance(_verify(token), JwtRejected)


# --- JWKS parsing ---------------------------------------------------------------------


def test_jwks_keeps_rs256_signing_keys_by_kid() -> None:
    """Every usable key is kept by its kid and verifies its tokens."""
    keys = JwksKeys.from_jwks(
        {"keys": [_jwk(PUBLIC), _jwk(ATTACKER_KEY.public_key(), alg=REMOVE, use=REMOVE)]}
    )
    assert len(keys) == 2
    assert keys.kids == frozenset({KID, ATTACKER_KID})
    key = keys.get(KID)
    assert key is not None
    assert key.public_numbers() == PUBLIC.public_numbers()
    _verified(verify_jwt(_token(), key, now=NOW))


def test_jwks_private_members_are_ignored() -> None:
    """A JWK leaking d, p, q… still yields a public key only, built from n and e."""
    private = KEY.private_numbers()
    leaked = _jwk(
        PUBLIC,
        d=_b64url_uint(private.d),
        p=_b64url_uint(private.p),
        q=_b64url_uint(private.q),
        dp=_b64url_uint(private.dmp1),
        dq=_b64url_uint(private.dmq1),
        qi=_b64url_uint(private.iqmp),
    )
    broken = _jwk(ATTACKER_KEY.public_key(), d="not-base64!", oth=[{}])
    keys = JwksKeys.from_jwks({"keys": [leaked, broken]})
    assert keys.kids == frozenset({KID, ATTACKER_KID})
    key = keys.get(KID)
    assert isinstance(key, rsa.RSAPublicKey)
    assert not hasattr(key, "private_numbers")
    assert key.public_numbers() == PUBLIC.public_numbers()


@pytest.mark.parametrize(
    "jwk",
    [
        _jwk(PUBLIC, kty="EC"),
        _jwk(PUBLIC, kty="oct", k="c2VjcmV0"),
        _jwk(PUBLIC, alg="RS384"),
        _jwk(PUBLIC, alg="HS256"),
        _jwk(PUBLIC, use="enc"),
        _jwk(PUBLIC, kid=REMOVE),
        _jwk(PUBLIC, kid=""),
        _jwk(PUBLIC, kid=5),
        _jwk(PUBLIC, n=REMOVE),
        _jwk(PUBLIC, n="!!!"),
        _jwk(PUBLIC, e=65537),
        _jwk(PUBLIC, e="AA"),
        # A weak key on purpose: the JWKS parser must skip it (RFC 7518 §3.3).
        _jwk(rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()),  # noqa: S505
        {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "ec"},
        "not a jwk",
        None,
    ],
)
def test_jwks_unusable_keys_are_skipped(jwk: object) -> None:
    """Non-RSA, non-RS256, non-sig, kid-less, unparsable or sub-2048-bit keys are skipped."""
    keys = JwksKeys.from_jwks({"keys": [jwk, _jwk(ATTACKER_KEY.public_key())]})
    assert keys.kids == frozenset({ATTACKER_KID})


def test_jwks_duplicate_kid_keeps_the_first_key() -> None:
    """Two keys claiming one kid: the first listed wins, deterministically."""
    keys = JwksKeys.from_jwks({"keys": [_jwk(PUBLIC), _jwk(ATTACKER_KEY.public_key(), kid=KID)]})
    key = keys.get(KID)
    assert key is not None
    assert key.public_numbers() == PUBLIC.public_numbers()


@pytest.mark.parametrize("document", [None, [], "keys", {}, {"keys": None}, {"keys": {"a": 1}}])
def test_jwks_document_of_the_wrong_shape_raises_value_error(document: object) -> None:
    """Only ``{"keys": [...]}`` is a JWKS document."""
    with pytest.raises(ValueError, match="JWKS"):
        JwksKeys.from_jwks(document)


def test_empty_jwks_has_no_keys() -> None:
    """An empty key list parses to an empty set."""
    keys = JwksKeys.from_jwks({"keys": []})
    assert len(keys) == 0
    assert keys.get(KID) is None


# --- JwksCache ------------------------------------------------------------------------


def _cache_with_keys(now: float) -> JwksCache:
    cache = JwksCache(max_age=600.0, refetch_cooldown=10.0)
    cache.loaded(JwksKeys.from_jwks({"keys": [_jwk(PUBLIC)]}), now)
    return cache


def test_jwks_cache_fetches_first() -> None:
    """Before any fetch, every kid asks for one, failed attempts included."""
    cache = JwksCache()
    assert cache.key_for(KID, now=0.0) == "fetch"
    cache.failed(now=0.0)
    assert cache.key_for(KID, now=0.5) == "fetch"
    assert cache.keys is None


def test_jwks_cache_serves_known_kids_until_max_age() -> None:
    """A known kid is served while the set is at most max_age old, then a refetch is due."""
    cache = _cache_with_keys(now=1000.0)
    key = cache.key_for(KID, now=1000.0)
    assert isinstance(key, rsa.RSAPublicKey)
    assert cache.key_for(KID, now=1600.0) is key
    assert cache.key_for(KID, now=1600.001) == "fetch"
    cache.loaded(JwksKeys.from_jwks({"keys": [_jwk(PUBLIC)]}), now=1601.0)
    assert isinstance(cache.key_for(KID, now=1601.0), rsa.RSAPublicKey)


def test_jwks_cache_refetch_cooldown_for_unknown_kids() -> None:
    """An unknown kid triggers a fetch only if the last attempt is a cooldown old."""
    cache = _cache_with_keys(now=1000.0)
    assert cache.key_for("new-kid", now=1000.0) is None
    assert cache.key_for("new-kid", now=1009.999) is None
    assert cache.key_for("new-kid", now=1010.0) == "fetch"
    cache.failed(now=1010.0)
    assert cache.key_for("new-kid", now=1015.0) is None
    assert isinstance(cache.key_for(KID, now=1015.0), rsa.RSAPublicKey)
    assert cache.key_for("new-kid", now=1020.0) == "fetch"


def test_jwks_cache_forged_kid_stream_fetches_once_per_cooldown() -> None:
    """A stream of random kids over 60 s causes at most one fetch per 10 s cooldown."""
    cache = _cache_with_keys(now=0.0)
    fetches = 0
    for step in range(6000):
        now = step * 0.01
        if cache.key_for(f"forged-{step}", now) == "fetch":
            fetches += 1
            cache.loaded(JwksKeys.from_jwks({"keys": [_jwk(PUBLIC)]}), now)
    assert fetches == 5


def test_jwks_cache_failure_drops_keys_older_than_max_age() -> None:
    """A failed refetch keeps fresh keys but drops stale ones, so the caller fails closed."""
    cache = _cache_with_keys(now=0.0)
    cache.failed(now=300.0)
    assert isinstance(cache.key_for(KID, now=300.0), rsa.RSAPublicKey)
    cache.failed(now=700.0)
    assert cache.keys is None
    assert cache.key_for(KID, now=700.0) == "fetch"


def test_jwks_cache_nan_time_is_stale() -> None:
    """A NaN clock never serves a key."""
    cache = _cache_with_keys(now=0.0)
    assert cache.key_for(KID, now=math.nan) == "fetch"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_age": 0.0},
        {"max_age": math.nan},
        {"refetch_cooldown": 0.0},
        {"refetch_cooldown": math.inf},
    ],
)
def test_jwks_cache_rejects_unusable_settings(kwargs: dict[str, float]) -> None:
    """Zero, NaN or infinite durations are configuration errors."""
    with pytest.raises(ValueError, match="seconds"):
        JwksCache(**kwargs)
