"""Fuzzing the SDK's local JWT verifier (gatepass._jwt) with a fixed JWKS.

Mutated server tokens, forged tokens (``alg`` none/HS256/RS512, ``jku``/``x5u``/``jwk``/
``x5c``, ``crit``, foreign and missing ``kid``, non-object JSON, hostile claims) and raw
text. The module promises that no input string makes it raise; a token verifies only if
it is RS256-signed by the instance key with the Gatepass header and claims.
"""

from __future__ import annotations

import base64
import json
from typing import Final

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.hashes import SHA256
from fuzz_support import ANY_TEXT, B64URL, BUDGETS, b64url, mutations, run_property
from hypothesis import strategies as st
from jwt_support import FORGED, JWKS, KEY, NOW, SUBJECT, TOKEN_ID, valid_token

from gatepass._jwt import (
    JwksKeys,
    JwtRejected,
    VerifiedJwt,
    read_header,
    unverified_subject,
    verify_jwt,
)
from gatepass._state import AuthReason

_KEYS: Final = JwksKeys.from_jwks(JWKS)
_PUBLIC: Final = _KEYS.get(KEY.kid)
_VALID: Final = valid_token()


def _verify(token: str) -> VerifiedJwt | JwtRejected:
    """The SDK's whole local path: header, kid lookup in the JWKS, verification."""
    kid = read_header(token)
    subject = unverified_subject(token)
    assert subject is None or isinstance(subject, str)
    if isinstance(kid, JwtRejected):
        return kid
    assert isinstance(kid, str)
    key = _KEYS.get(kid)
    if key is None:
        return JwtRejected(AuthReason.JWK_KID_MISMATCH, "the JWKS has no such kid")
    return verify_jwt(token, key, now=NOW)


def test_the_server_token_verifies_with_the_fixed_jwks() -> None:
    """Sanity for the properties below: the unmutated token is valid."""
    assert _PUBLIC is not None
    verified = _verify(_VALID)
    assert isinstance(verified, VerifiedJwt), verified
    assert (verified.token_id, verified.subject) == (TOKEN_ID, SUBJECT)


def check_mutated(token: str) -> None:
    """Any change to a valid token is refused, as a value."""
    outcome = _verify(token)
    assert isinstance(outcome, JwtRejected), (token, outcome)


@pytest.mark.parametrize("budget", BUDGETS)
def test_fuzz_mutated_jwt_never_verifies(budget: int) -> None:
    """One character of a valid token changed, inserted, deleted, or its ends cut: refused."""
    run_property(mutations(_VALID, B64URL + ".="), check_mutated, examples=500, budget=budget)


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def signed_by_the_instance_key(token: str) -> bool:
    """An independent check (cryptography, not PyJWT): RS256 by the instance key."""
    signing_input, _, signature = token.rpartition(".")
    try:
        KEY.private_key.public_key().verify(
            _b64decode(signature), signing_input.encode("ascii"), padding.PKCS1v15(), SHA256()
        )
    except InvalidSignature:
        return False
    return True


def check_forged(token: str) -> None:
    """A forged token verifies only when it really is RS256 by the instance key, as minted."""
    outcome = _verify(token)
    if isinstance(outcome, JwtRejected):
        return
    header = json.loads(_b64decode(token.split(".", 1)[0]))
    assert isinstance(header, dict)
    assert header.get("alg") == "RS256", header
    assert header.get("kid") == KEY.kid, header
    assert header.get("typ", "JWT") == "JWT", header
    assert not {"crit", "b64"} & set(header), header
    assert signed_by_the_instance_key(token), "verified a signature the instance key did not make"
    assert outcome.token_id.startswith("mt_")
    assert outcome.subject.startswith("mch_")


@pytest.mark.parametrize("budget", BUDGETS)
def test_fuzz_forged_jwts_verify_only_when_signed_by_the_instance_key(budget: int) -> None:
    """Alg none/HS256/RS512, jku/x5u/jwk/x5c, crit, other kid, odd claims: all refused."""
    run_property(FORGED, check_forged, examples=400, budget=budget)


@pytest.mark.parametrize("budget", BUDGETS)
def test_fuzz_jwt_parsing_never_raises_on_text(budget: int) -> None:
    """Any text, and three base64url segments of any bytes, give a value, never an error."""
    segment = st.one_of(
        st.text(st.sampled_from(B64URL), max_size=40), st.binary(max_size=40).map(b64url)
    )
    jws = st.builds(lambda a, b, c: f"{a}.{b}.{c}", segment, segment, segment)
    run_property(st.one_of(ANY_TEXT, jws), check_mutated, examples=600, budget=budget)
