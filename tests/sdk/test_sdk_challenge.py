"""gatepass._challenge: the RFC 6750 §3 response for every way a request can be refused."""

from __future__ import annotations

import json
import re

import pytest
from werkzeug.datastructures import WWWAuthenticate

from gatepass._challenge import Challenge, challenge_for, insufficient_scope, missing_scopes
from gatepass._state import AuthReason, RequestState

SECRET = "mt_s3cr3t0123456789abcdef"
A, B, C = "mch_2aaaaaaaaaaaaaaaaaaaaaaaaaa", "mch_2bbbbbbbbbbbbbbbbbbbbbbbbbb", "mch_2ccc"

TOKEN_INVALID_FAMILY = [
    AuthReason.TOKEN_INVALID,
    AuthReason.TOKEN_EXPIRED,
    AuthReason.TOKEN_NOT_ACTIVE_YET,
    AuthReason.TOKEN_INVALID_SIGNATURE,
    AuthReason.TOKEN_INVALID_ALGORITHM,
    AuthReason.TOKEN_INVALID_AUDIENCE,
    AuthReason.TOKEN_REVOKED,
    AuthReason.JWK_KID_MISMATCH,
    AuthReason.TOKEN_TYPE_MISMATCH,
    AuthReason.TOKEN_TYPE_NOT_SUPPORTED,
]
UNAVAILABLE = [reason for reason in AuthReason if reason.is_unavailable]
# RFC 6750 §3: error_description is %x20-21 / %x23-5B / %x5D-7E.
DESCRIPTION_CHARS = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]+")


def rejected(reason: AuthReason, message: str = f"bad token {SECRET}") -> RequestState:
    """A rejected state whose message (deliberately) quotes the token."""
    return RequestState.rejected(reason, message)


def authenticated(*scopes: str) -> RequestState:
    """A valid token of machine ``A`` scoped to ``scopes``."""
    return RequestState.authenticated(
        subject=A, scopes=scopes, claims=None, token_id="mt_0123", expiration=None
    )


def header(challenge: Challenge, name: str) -> str | None:
    """The one value of header ``name``, or ``None``; fails if it appears twice."""
    values = [value for key, value in challenge.headers if key.lower() == name.lower()]
    assert len(values) <= 1, values
    return values[0] if values else None


def body(challenge: Challenge) -> dict[str, str]:
    """The JSON body, checked to be an object of strings."""
    parsed = json.loads(challenge.body)
    assert isinstance(parsed, dict)
    assert all(isinstance(value, str) for value in parsed.values())
    return parsed


def assert_common(challenge: Challenge) -> None:
    """What every challenge sends: exact JSON content type, no-store, no secret echoed."""
    assert header(challenge, "Content-Type") == "application/json"
    assert header(challenge, "Cache-Control") == "no-store"
    assert challenge.body.isascii()
    text = challenge.body.decode() + repr(challenge.headers)
    assert "s3cr3t" not in text


def test_missing_token_is_401_bearer_without_error() -> None:
    """RFC 6750 §3.1: no credentials gets a bare ``Bearer`` challenge and no error code."""
    challenge = challenge_for(rejected(AuthReason.TOKEN_MISSING))
    assert challenge == Challenge(
        status=401,
        headers=(
            ("WWW-Authenticate", "Bearer"),
            ("Content-Type", "application/json"),
            ("Cache-Control", "no-store"),
        ),
        body=b'{"error_description":"This resource requires a bearer token"}',
    )


def test_missing_token_with_realm() -> None:
    """A configured realm is the only attribute of the no-credentials challenge."""
    challenge = challenge_for(rejected(AuthReason.TOKEN_MISSING), realm="payments")
    assert challenge.status == 401
    assert header(challenge, "WWW-Authenticate") == 'Bearer realm="payments"'
    assert "error" not in body(challenge)
    assert_common(challenge)


def test_malformed_header_is_400_invalid_request() -> None:
    """RFC 6750 §3.1: a malformed request is 400 ``invalid_request``."""
    challenge = challenge_for(rejected(AuthReason.AUTHORIZATION_MALFORMED), realm="api")
    assert challenge.status == 400
    assert header(challenge, "WWW-Authenticate") == (
        'Bearer realm="api", error="invalid_request", '
        'error_description="The Authorization header is not one well-formed Bearer token"'
    )
    assert body(challenge) == {
        "error": "invalid_request",
        "error_description": "The Authorization header is not one well-formed Bearer token",
    }
    assert_common(challenge)


@pytest.mark.parametrize("reason", TOKEN_INVALID_FAMILY)
def test_token_fault_is_401_invalid_token(reason: AuthReason) -> None:
    """Every fault of the token itself is 401 ``invalid_token`` with a description."""
    challenge = challenge_for(rejected(reason))
    assert challenge.status == 401
    description = body(challenge)["error_description"]
    assert body(challenge)["error"] == "invalid_token"
    assert header(challenge, "WWW-Authenticate") == (
        f'Bearer error="invalid_token", error_description="{description}"'
    )
    assert "scope" not in (header(challenge, "WWW-Authenticate") or "")
    assert_common(challenge)


def test_expired_token_says_so_as_rfc_6750_shows() -> None:
    """The RFC 6750 §3 example: the client learns to fetch a new token."""
    challenge = challenge_for(rejected(AuthReason.TOKEN_EXPIRED), realm="example")
    assert header(challenge, "WWW-Authenticate") == (
        'Bearer realm="example", error="invalid_token", '
        'error_description="The access token expired"'
    )


@pytest.mark.parametrize(
    "reason",
    [
        AuthReason.TOKEN_REVOKED,
        AuthReason.TOKEN_INVALID_SIGNATURE,
        AuthReason.TOKEN_INVALID_ALGORITHM,
        AuthReason.TOKEN_INVALID_AUDIENCE,
        AuthReason.JWK_KID_MISMATCH,
    ],
)
def test_forgery_and_revocation_read_as_plain_invalid(reason: AuthReason) -> None:
    """SECURITY.md principle 2: these are byte-identical to ``token-invalid``, no oracle."""
    assert challenge_for(rejected(reason)) == challenge_for(rejected(AuthReason.TOKEN_INVALID))


def test_token_type_mismatch_and_unsupported_read_the_same() -> None:
    """A wrong kind of token is one answer, whether Gatepass could verify it or not."""
    mismatch = challenge_for(rejected(AuthReason.TOKEN_TYPE_MISMATCH))
    unsupported = challenge_for(rejected(AuthReason.TOKEN_TYPE_NOT_SUPPORTED))
    assert mismatch == unsupported
    assert body(mismatch)["error_description"] == "This kind of token is not accepted here"


@pytest.mark.parametrize("reason", UNAVAILABLE)
def test_unavailable_verifier_is_503_with_retry_after(reason: AuthReason) -> None:
    """The verifier's own fault is 503 + ``Retry-After: 1`` and no challenge at all."""
    challenge = challenge_for(rejected(reason), realm="api", required_scopes=[A])
    assert challenge == Challenge(
        status=503,
        headers=(
            ("Content-Type", "application/json"),
            ("Cache-Control", "no-store"),
            ("Retry-After", "1"),
        ),
        body=(
            b'{"error_description":"Token verification is temporarily unavailable; retry shortly"}'
        ),
    )


def test_unavailable_reasons_are_the_server_side_ones() -> None:
    """Guard for the parametrization above: both verifier-side reasons are covered."""
    assert set(UNAVAILABLE) == {
        AuthReason.SECRET_KEY_INVALID,
        AuthReason.VERIFICATION_UNAVAILABLE,
    }


def test_insufficient_scope_reason_is_403_with_required_scopes() -> None:
    """RFC 6750 §3.1: 403 ``insufficient_scope`` and the scope the resource requires."""
    challenge = challenge_for(
        rejected(AuthReason.INSUFFICIENT_SCOPE), realm="api", required_scopes=[A, B]
    )
    assert challenge.status == 403
    assert header(challenge, "WWW-Authenticate") == (
        'Bearer realm="api", error="insufficient_scope", '
        'error_description="The access token lacks a scope this resource requires", '
        f'scope="{A} {B}"'
    )
    assert body(challenge) == {
        "error": "insufficient_scope",
        "error_description": "The access token lacks a scope this resource requires",
    }
    assert_common(challenge)


def test_authenticated_state_missing_a_scope_is_403() -> None:
    """A valid token lacking one required scope gets the 403, listing every required one."""
    state = authenticated(A)
    challenge = challenge_for(state, required_scopes=[A, B])
    assert challenge == insufficient_scope(state, [A, B])
    assert challenge.status == 403
    assert header(challenge, "WWW-Authenticate") == (
        'Bearer error="insufficient_scope", '
        'error_description="The access token lacks a scope this resource requires", '
        f'scope="{A} {B}"'
    )


def test_insufficient_scope_without_required_scopes_omits_the_attribute() -> None:
    """With nothing to name, the ``scope`` attribute is left out rather than empty."""
    challenge = insufficient_scope(rejected(AuthReason.INSUFFICIENT_SCOPE), [])
    assert header(challenge, "WWW-Authenticate") == (
        'Bearer error="insufficient_scope", '
        'error_description="The access token lacks a scope this resource requires"'
    )


def test_repeated_required_scopes_are_listed_once() -> None:
    """A scope required twice appears once in the ``scope`` attribute."""
    challenge = challenge_for(authenticated(), required_scopes=[A, B, A])
    assert (header(challenge, "WWW-Authenticate") or "").endswith(f'scope="{A} {B}"')


def test_authenticated_state_with_every_scope_has_nothing_to_refuse() -> None:
    """Asking to refuse a request that passes is a programming error."""
    with pytest.raises(ValueError, match="every required scope"):
        challenge_for(authenticated(A, B), required_scopes=[A, B])
    with pytest.raises(ValueError, match="every required scope"):
        challenge_for(authenticated())
    with pytest.raises(ValueError, match="every required scope"):
        insufficient_scope(authenticated(A), [A])


def test_insufficient_scope_refuses_a_state_of_another_failure() -> None:
    """A 403 for a request whose token was invalid would hide the real answer (a 401)."""
    with pytest.raises(ValueError, match="token-invalid is not a scope failure"):
        insufficient_scope(rejected(AuthReason.TOKEN_INVALID), [A])


def test_rejected_state_without_reason_is_an_error() -> None:
    """An unauthenticated state must say why; otherwise there is no answer to pick."""
    with pytest.raises(ValueError, match="must carry a reason"):
        challenge_for(RequestState(is_authenticated=False))


def test_realm_with_quote_and_backslash_is_escaped() -> None:
    """RFC 9110 §5.6.4: quotes and backslashes are escaped, and a parser reads them back."""
    realm = 'my "api" \\ v2'
    challenge = challenge_for(rejected(AuthReason.TOKEN_EXPIRED), realm=realm)
    value = header(challenge, "WWW-Authenticate")
    assert value == (
        'Bearer realm="my \\"api\\" \\\\ v2", error="invalid_token", '
        'error_description="The access token expired"'
    )
    parsed = WWWAuthenticate.from_header(value)
    assert parsed is not None
    assert parsed.type == "bearer"
    assert dict(parsed.parameters) == {
        "realm": realm,
        "error": "invalid_token",
        "error_description": "The access token expired",
    }


@pytest.mark.parametrize(
    "realm",
    [
        pytest.param("api\r\nSet-Cookie: a=b", id="crlf-injection"),
        pytest.param("api\nx", id="lf"),
        pytest.param("api\x00", id="nul"),
        pytest.param("caf\u00e9", id="non-ascii"),
        pytest.param("\x7f", id="del"),
    ],
)
def test_realm_that_cannot_be_a_quoted_string_is_refused(realm: str) -> None:
    """A realm that could split or corrupt the header is a configuration error."""
    with pytest.raises(ValueError, match="realm must be printable ASCII"):
        challenge_for(rejected(AuthReason.TOKEN_MISSING), realm=realm)
    with pytest.raises(ValueError, match="realm must be printable ASCII"):
        challenge_for(rejected(AuthReason.VERIFICATION_UNAVAILABLE), realm=realm)


@pytest.mark.parametrize(
    "scope",
    [
        pytest.param("two words", id="space"),
        pytest.param('quo"te', id="quote"),
        pytest.param("back\\slash", id="backslash"),
        pytest.param("", id="empty"),
        pytest.param("caf\u00e9", id="non-ascii"),
    ],
)
def test_scope_outside_scope_token_grammar_is_refused(scope: str) -> None:
    """RFC 6750 §3: each scope is a scope-token; others would break the attribute."""
    with pytest.raises(ValueError, match="is not an RFC 6750 scope-token"):
        challenge_for(authenticated(), required_scopes=[scope])


def test_required_scopes_as_one_string_is_a_type_error() -> None:
    """A bare string would be read letter by letter: refuse it outright."""
    with pytest.raises(TypeError, match="not one string"):
        challenge_for(authenticated(), required_scopes=A)
    with pytest.raises(TypeError, match="not one string"):
        missing_scopes(authenticated(), A)


@pytest.mark.parametrize("reason", list(AuthReason))
def test_no_caller_text_is_reflected_for_any_reason(reason: AuthReason) -> None:
    """Whatever the state's message says (here: the token, CRLF, quotes), none is sent."""
    state = RequestState.rejected(reason, f'{SECRET}"\r\nX-Evil: 1\\')
    challenge = challenge_for(state, required_scopes=[A])
    assert challenge.status in {400, 401, 403, 503}
    assert_common(challenge)
    assert "Evil" not in challenge.body.decode()
    for _, value in challenge.headers:
        assert "\r" not in value
        assert "\n" not in value
        assert "Evil" not in value


@pytest.mark.parametrize("reason", list(AuthReason))
def test_every_description_fits_rfc_6750_and_body_mirrors_header(reason: AuthReason) -> None:
    """Descriptions use RFC 6750's charset; ``error`` is in the body iff in the header."""
    challenge = challenge_for(rejected(reason), required_scopes=[A])
    parsed = body(challenge)
    assert DESCRIPTION_CHARS.fullmatch(parsed["error_description"])
    www = header(challenge, "WWW-Authenticate")
    if "error" in parsed:
        assert www is not None
        assert f'error="{parsed["error"]}"' in www
        assert f'error_description="{parsed["error_description"]}"' in www
    else:
        assert www is None or "error" not in www
    assert set(parsed) <= {"error", "error_description"}


def test_missing_scopes_keeps_order_and_drops_repeats() -> None:
    """The required scopes the token lacks, in the order required, each once."""
    assert missing_scopes(authenticated(B), [C, A, B, C]) == (C, A)
    assert missing_scopes(authenticated(A, B), [B, A]) == ()
    assert missing_scopes(authenticated(A), []) == ()


def test_missing_scopes_of_a_rejected_state_is_everything() -> None:
    """A request that is not authenticated holds no scope at all."""
    assert missing_scopes(rejected(AuthReason.TOKEN_INVALID), [A, B]) == (A, B)
