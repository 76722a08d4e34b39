"""Coverage-guided fuzzing of the SDK's local JWT verifier (gatepass._jwt) with atheris.

Input: a token (bytes read as latin-1), checked against a fixed JWKS holding one key.
No input may raise, and only the seed tokens the key really signed may verify: the
fuzzer has no private key, so anything else that verifies is a forgery or a second
spelling of a token. Run by test_fuzz_atheris.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]

# Comparison feedback from str.startswith/endswith, which guard the formats. (The RegEx
# hook is left off: atheris 3.0.0 fails on the bytes patterns some dependencies compile.)
atheris.enabled_hooks.add("str")

with atheris.instrument_imports(include=["gatepass"]):
    from gatepass._jwt import JwksKeys, JwtRejected, read_header, unverified_subject, verify_jwt

from jwt_support import ATTACKER, JWKS, KEY, NOW, payload, signed, valid_token  # noqa: E402 - imported after the instrumented modules

_KEYS = JwksKeys.from_jwks(JWKS)
_PUBLIC = _KEYS.get(KEY.kid)
_GENUINE = {
    valid_token(),
    signed({"alg": "RS256", "typ": "JWT", "kid": KEY.kid}, payload(scopes=None), "rs256"),
}


def seeds() -> list[bytes]:
    """Genuine tokens and the classic forgeries of them."""
    header = {"alg": "RS256", "typ": "JWT", "kid": KEY.kid}
    forged = [
        signed({**header, "alg": "none"}, payload(), "none"),
        signed({**header, "alg": "HS256"}, payload(), "hs256-public-key"),
        signed({**header, "jwk": ATTACKER.public_jwk}, payload(), "attacker"),
        signed({**header, "crit": ["exp"]}, payload(), "rs256"),
        signed(header, [1, 2], "rs256"),
    ]
    return [token.encode() for token in (*_GENUINE, *forged)]


def test_one_input(data: bytes) -> None:
    """One input: parsed and verified as a value; only a genuine token verifies."""
    token = data.decode("latin-1")
    kid = read_header(token)
    subject = unverified_subject(token)
    if subject is not None and not isinstance(subject, str):
        raise AssertionError(subject)
    assert _PUBLIC is not None
    outcome = verify_jwt(token, _PUBLIC, now=NOW)
    if not isinstance(outcome, JwtRejected) and token not in _GENUINE:
        msg = f"verified a token the key never signed: {token!r} (kid {kid!r})"
        raise AssertionError(msg)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
