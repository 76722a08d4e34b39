"""Local verification of JWT-format M2M tokens (CONTRACT.md §4), sans I/O.

Nothing here touches the network, a thread or a clock: the caller fetches the JWKS,
passes the current time in and caches what it verified. Expected failures are values
(:class:`JwtRejected`, STYLE.md habit 3); no input string makes a function here raise.

The flow a caller follows::

    kid = read_header(token)                  # str | JwtRejected
    key = cache.key_for(kid, monotonic())     # key | "fetch" | None
    ...                                       # on "fetch": GET the JWKS, cache.loaded(...)
    result = verify_jwt(token, key, now=time())   # VerifiedJwt | JwtRejected
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import RSAAlgorithm
from jwt.exceptions import InvalidKeyError

from gatepass._state import AuthReason

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "MAX_TOKEN_LENGTH",
    "JwksCache",
    "JwksKeys",
    "JwtRejected",
    "VerifiedJwt",
    "read_header",
    "unverified_subject",
    "verify_jwt",
]

# NOTE: SECURITY.md principle 5: cap the token before any decoding. A Gatepass JWT is
# about 1 KiB with 150 scopes of ~32 characters plus claims; 16 KiB leaves ample room.
MAX_TOKEN_LENGTH: Final = 16 * 1024

# NOTE: SECURITY.md principle 6: RS256 is the only algorithm. The verifier is fixed here
# and never looked up from the token's ``alg`` header, so a token cannot pick HMAC with
# the public key as its secret, ``none``, or any other algorithm.
_ALGORITHM: Final = "RS256"
_RS256: Final = RSAAlgorithm(RSAAlgorithm.SHA256)
# NOTE: RFC 7518 §3.3: "A key of size 2048 bits or larger MUST be used with these algorithms."
_MIN_KEY_BITS: Final = 2048

# NOTE: the names Gatepass sets itself (gatepass_server.domain.tokens.RESERVED_CLAIMS);
# a custom claim may never use one, so none of them is a custom claim here either.
_RESERVED_CLAIMS: Final = frozenset(
    {"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "azp", "scopes", "cat"}
)
# NOTE: SECURITY.md principle 6: reserved names Gatepass never writes into a token. A
# token carrying one was not minted by Gatepass as it is, so it is refused outright
# rather than letting e.g. an "azp" or "iss" reach code that trusts it.
_NEVER_SET_CLAIMS: Final = _RESERVED_CLAIMS - {"jti", "sub", "aud", "scopes", "iat", "nbf", "exp"}

# NOTE: NumericDate bound: 2**53 seconds is far beyond any real expiry, keeps ``exp * 1000``
# finite for floats and stops 4000-digit integers before arithmetic (SECURITY.md principle 5).
_MAX_NUMERIC_DATE: Final = 2**53

# Three base64url segments. RFC 7515 §2 and §7.1: compact JWS uses base64url without
# padding, so '=' and any other character make the token malformed. The signature may be
# empty here so that an unsigned "alg": "none" token is refused for its algorithm.
_COMPACT: Final = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]*)")
# The last character of a segment of length 4k+2 (4k+3) carries 4 (2) unused bits, which a
# canonical encoder leaves at zero; refusing other spellings keeps one token one string.
_CANONICAL_LAST: Final = {2: frozenset("AQgw"), 3: frozenset("AEIMQUYcgkosw048")}


def _reject_constant(name: str) -> float:
    # NOTE: SECURITY.md principle 5: json accepts NaN and Infinity by default; no JWT has them.
    raise ValueError(f"{name} is not JSON")


_JSON: Final = json.JSONDecoder(parse_constant=_reject_constant)


@dataclass(frozen=True, slots=True)
class VerifiedJwt:
    """A JWT whose signature, algorithm and times were checked.

    ``claims`` holds the custom claims only (the payload minus the reserved names);
    ``expiration`` is ``exp`` in Unix milliseconds, like the API's ``expiration``.
    """

    token_id: str
    subject: str
    scopes: tuple[str, ...]
    claims: dict[str, Any]
    expiration: int


@dataclass(frozen=True, slots=True)
class JwtRejected:
    """Why a JWT was refused; ``message`` is short, human and never contains the token."""

    reason: AuthReason
    message: str


class JwksKeys:
    """The usable public keys of one JWKS document, by ``kid``.

    Only RSA keys fit for RS256 signatures are kept. A key is skipped, not raised on, when
    its ``kty`` is not ``RSA``, its ``alg`` is present and not ``RS256``, its ``use`` is
    present and not ``sig``, it has no ``kid``, it is shorter than 2048 bits or it does
    not parse. Private members (``d``, ``p``, ``q``…) are ignored entirely: the key is
    built from ``n`` and ``e`` alone. When two keys share a ``kid`` the first one wins.
    """

    __slots__ = ("_keys",)

    def __init__(self, keys: Mapping[str, RSAPublicKey] | None = None) -> None:
        self._keys: dict[str, RSAPublicKey] = dict(keys) if keys else {}

    @classmethod
    def from_jwks(cls, document: object) -> JwksKeys:
        """Parse a JWKS document; ``ValueError`` if it is not ``{"keys": [...]}``."""
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            # A wrong shape is a bad value from the wire, not a caller's type error.
            raise ValueError('a JWKS document must be {"keys": [...]}')  # noqa: TRY004
        keys: dict[str, RSAPublicKey] = {}
        for entry in entries:
            parsed = _public_key(entry)
            if parsed is not None and parsed[0] not in keys:
                keys[parsed[0]] = parsed[1]
        return cls(keys)

    def get(self, kid: str) -> RSAPublicKey | None:
        """The public key named ``kid``, or ``None`` when this JWKS does not hold it."""
        return self._keys.get(kid)

    @property
    def kids(self) -> frozenset[str]:
        """The ``kid`` of every usable key."""
        return frozenset(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"JwksKeys(kids={sorted(self._keys)!r})"


def _public_key(entry: object) -> tuple[str, RSAPublicKey] | None:
    """The ``(kid, key)`` of one JWK if it is a usable RS256 public key, else ``None``."""
    if not isinstance(entry, dict):
        return None
    kid, n, e = entry.get("kid"), entry.get("n"), entry.get("e")
    if (
        entry.get("kty") != "RSA"
        or entry.get("alg", _ALGORITHM) != _ALGORITHM
        or entry.get("use", "sig") != "sig"
        or not isinstance(kid, str)
        or not kid
        or not isinstance(n, str)
        or not isinstance(e, str)
    ):
        return None
    try:
        # NOTE: SECURITY.md principle 6: only n and e are passed on, so a JWKS that leaks
        # private members (d, p, q…) still yields a public key and nothing more.
        key = RSAAlgorithm.from_jwk({"kty": "RSA", "n": n, "e": e})
    except (InvalidKeyError, ValueError, TypeError):
        return None
    if not isinstance(key, RSAPublicKey) or key.key_size < _MIN_KEY_BITS:
        return None
    return kid, key


class JwksCache:
    """When to (re)fetch one JWKS; the caller does the fetching (sans I/O).

    ``now`` is always monotonic seconds supplied by the caller (SECURITY.md: caches use
    ``time.monotonic()`` so a wall-clock jump moves nothing). :meth:`key_for` answers:

    * the key, when the loaded set holds ``kid`` and is at most ``max_age`` old;
    * ``"fetch"`` when nothing is loaded, the loaded set is older than ``max_age``, or
      ``kid`` is unknown and the last fetch attempt was ``refetch_cooldown`` ago or more;
    * ``None`` when ``kid`` is unknown and a fetch was attempted within the cooldown, so a
      stream of forged ``kid`` values causes at most one fetch per cooldown.

    After a fetch the caller records it with :meth:`loaded` or :meth:`failed` and asks
    again; the second answer for an unknown ``kid`` is then ``None``, not ``"fetch"``.
    While nothing usable is loaded every call answers ``"fetch"``: the caller fails
    closed and should let one fetch run at a time.
    """

    __slots__ = ("_keys", "_last_attempt", "_loaded_at", "_max_age", "_refetch_cooldown")

    def __init__(self, *, max_age: float = 600.0, refetch_cooldown: float = 10.0) -> None:
        if not (math.isfinite(max_age) and max_age > 0):
            raise ValueError("max_age must be a positive number of seconds")
        # NOTE: a cooldown of zero would let every forged kid trigger a fetch (principle 10).
        if not (math.isfinite(refetch_cooldown) and refetch_cooldown > 0):
            raise ValueError("refetch_cooldown must be a positive number of seconds")
        self._max_age = max_age
        self._refetch_cooldown = refetch_cooldown
        self._keys: JwksKeys | None = None
        self._loaded_at = 0.0
        self._last_attempt: float | None = None

    @property
    def keys(self) -> JwksKeys | None:
        """The loaded key set, whatever its age, or ``None`` before the first fetch."""
        return self._keys

    def key_for(self, kid: str, now: float) -> RSAPublicKey | Literal["fetch"] | None:
        """The key for ``kid``, ``"fetch"`` to (re)load the JWKS first, or ``None``."""
        keys = self._keys
        # NOTE: SECURITY.md principle 1: written as "is it fresh", so a NaN time is stale.
        if keys is None or not now - self._loaded_at <= self._max_age:
            return "fetch"
        key = keys.get(kid)
        if key is not None:
            return key
        last = self._last_attempt
        if last is None or now - last >= self._refetch_cooldown:
            return "fetch"
        return None

    def loaded(self, keys: JwksKeys, now: float) -> None:
        """Record a successful fetch of ``keys`` at ``now``."""
        self._keys = keys
        self._loaded_at = now
        self._last_attempt = now

    def failed(self, now: float) -> None:
        """Record a failed fetch at ``now``; it counts for the cooldown.

        Keys older than ``max_age`` are dropped, so the caller fails closed instead of
        trusting a key set the server may have rotated away long ago (principle 1).
        """
        self._last_attempt = now
        if self._keys is not None and not now - self._loaded_at <= self._max_age:
            self._keys = None


def _b64decode(segment: str) -> bytes:
    """Decode a base64url segment matched by ``_COMPACT``; ``ValueError`` if not canonical."""
    remainder = len(segment) % 4
    if remainder == 1:
        raise ValueError("impossible base64url length")
    if remainder and segment[-1] not in _CANONICAL_LAST[remainder]:
        raise ValueError("non-canonical base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-remainder % 4))


def _json_object(segment: str) -> dict[str, Any] | None:
    """The JSON object a segment encodes, or ``None`` if it is anything else."""
    try:
        value = _JSON.decode(_b64decode(segment).decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _check_header(segment: str) -> str | JwtRejected:
    """The ``kid`` of a protected header that follows the Gatepass profile, or why not."""
    header = _json_object(segment)
    if header is None:
        return _MALFORMED
    if header.get("alg") != _ALGORITHM:
        return _WRONG_ALGORITHM
    # NOTE: RFC 7515 §4.1.11: a recipient must refuse a "crit" it does not understand, and
    # Gatepass understands none; "b64" (RFC 7797) would change what is signed.
    if "crit" in header or "b64" in header:
        return JwtRejected(
            AuthReason.TOKEN_INVALID, "the token's header has unsupported parameters"
        )
    # NOTE: CONTRACT.md §4: typ is absent or exactly "JWT", as the Clerk JS SDK requires.
    if header.get("typ", "JWT") != "JWT":
        return JwtRejected(AuthReason.TOKEN_INVALID, "the token's typ is not JWT")
    # NOTE: SECURITY.md principle 6: jku, x5u, jwk and x5c are never read; the key comes
    # only from the caller's loaded JWKS, looked up by this kid.
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        return JwtRejected(AuthReason.JWK_KID_MISMATCH, "the token's header has no kid")
    return kid


def read_header(token: str) -> str | JwtRejected:
    """The ``kid`` of a compact JWS after checking its header, verifying nothing else.

    Refuses tokens that are not three base64url segments or whose header is not a JSON
    object (``TOKEN_INVALID``), whose ``alg`` is not ``RS256`` (``TOKEN_INVALID_ALGORITHM``),
    whose ``typ`` is present and not ``JWT`` or which carry ``crit`` (``TOKEN_INVALID``),
    and those without a non-empty string ``kid`` (``JWK_KID_MISMATCH``).
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        return _MALFORMED
    match = _COMPACT.fullmatch(token)
    if match is None:
        return _MALFORMED
    return _check_header(match[1])


def unverified_subject(token: str) -> str | None:
    """The ``sub`` of a compact JWS payload, verifying nothing; ``None`` if there is none.

    Cheap enough to tell an M2M JWT (``sub`` starting ``mch_``) from other JWTs before
    choosing how to verify it. Never raises.
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        return None
    match = _COMPACT.fullmatch(token)
    if match is None:
        return None
    payload = _json_object(match[2])
    subject = payload.get("sub") if payload is not None else None
    return subject if isinstance(subject, str) else None


def verify_jwt(
    token: str,
    key: RSAPublicKey,
    *,
    now: float,
    leeway: float = 5.0,
    audience: str | None = None,
) -> VerifiedJwt | JwtRejected:
    """Verify a Gatepass JWT against ``key`` at ``now`` (Unix seconds, wall clock).

    Checks, in order: the header (as :func:`read_header`); the RS256 signature; a JSON
    object payload without ``iss``/``azp``/``cat``; ``exp`` (required), ``jti`` (``mt_…``)
    and ``sub`` (``mch_…``); ``nbf``, ``iat``, ``aud`` and ``scopes`` when present; then
    ``exp``, ``nbf`` and ``iat`` against ``now`` give or take ``leeway`` seconds; then, if
    ``audience`` is given, that ``aud`` contains it. No input string makes it raise; a
    ``key`` that is not an RSA public key is a programming error (``TypeError``).
    """
    if not isinstance(key, RSAPublicKey):
        raise TypeError("key must be an RSA public key, e.g. from JwksKeys.get()")
    try:
        return _verify(token, key, now, leeway, audience)
    except Exception:  # noqa: BLE001 - NOTE: principle 1: any parsing surprise fails closed
        return _MALFORMED


def _verify(  # noqa: C901, PLR0911, PLR0912 - one linear list of checks, each with its own reason
    token: str, key: RSAPublicKey, now: float, leeway: float, audience: str | None
) -> VerifiedJwt | JwtRejected:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        return _MALFORMED
    match = _COMPACT.fullmatch(token)
    if match is None:
        return _MALFORMED
    checked = _check_header(match[1])
    if isinstance(checked, JwtRejected):
        return checked
    try:
        signature = _b64decode(match[3])
    except ValueError:
        return _MALFORMED
    # NOTE: the signature is checked before the payload is parsed, so a forged token never
    # gets its JSON decoded nor learns which of its claims would have failed.
    if not _RS256.verify(token[: match.end(2)].encode("ascii"), key, signature):
        return _BAD_SIGNATURE

    payload = _json_object(match[2])
    if payload is None:
        return _MALFORMED
    if not _NEVER_SET_CLAIMS.isdisjoint(payload):
        return JwtRejected(AuthReason.TOKEN_INVALID, "the token carries a reserved claim")
    exp = _numeric_date(payload.get("exp"))
    token_id = payload.get("jti")
    subject = payload.get("sub")
    if (
        exp is None
        or not isinstance(token_id, str)
        or not token_id.startswith("mt_")
        or not isinstance(subject, str)
        or not subject.startswith("mch_")
    ):
        return JwtRejected(AuthReason.TOKEN_INVALID, "the token lacks a valid exp, jti or sub")
    nbf = payload.get("nbf")
    iat = payload.get("iat")
    if (nbf is not None and _numeric_date(nbf) is None) or (
        iat is not None and _numeric_date(iat) is None
    ):
        return JwtRejected(AuthReason.TOKEN_INVALID, "the token's nbf or iat is not a time")
    aud = _audience(payload.get("aud"))
    scopes_claim = payload.get("scopes")
    if aud is None or (scopes_claim is not None and not isinstance(scopes_claim, str)):
        return JwtRejected(AuthReason.TOKEN_INVALID, "the token's aud or scopes is malformed")

    # NOTE: RFC 7519 §4.1.4/§4.1.5: valid while now < exp and from nbf on, both within
    # leeway. Each test is written as "is it fine", so a NaN now or leeway fails closed.
    if not now < exp + leeway:
        return JwtRejected(AuthReason.TOKEN_EXPIRED, "the token has expired")
    if nbf is not None and not nbf <= now + leeway:
        return JwtRejected(AuthReason.TOKEN_NOT_ACTIVE_YET, "the token is not valid yet")
    if iat is not None and not iat <= now + leeway:
        return JwtRejected(AuthReason.TOKEN_NOT_ACTIVE_YET, "the token was issued in the future")
    if audience is not None and audience not in aud:
        return JwtRejected(AuthReason.TOKEN_INVALID_AUDIENCE, "the token is not for this audience")

    if scopes_claim is not None:
        scopes = tuple(scope for scope in scopes_claim.split(" ") if scope)
    else:
        scopes = aud
    return VerifiedJwt(
        token_id=token_id,
        subject=subject,
        scopes=scopes,
        claims={name: value for name, value in payload.items() if name not in _RESERVED_CLAIMS},
        expiration=int(exp * 1000),
    )


def _numeric_date(value: object) -> float | None:
    """``value`` if it is a usable NumericDate (a finite, bounded, non-bool number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if -_MAX_NUMERIC_DATE <= value <= _MAX_NUMERIC_DATE else None


def _audience(value: object) -> tuple[str, ...] | None:
    """The ``aud`` claim as a tuple of strings (absent: empty), or ``None`` if malformed."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(item for item in value if item)
    return None


_MALFORMED: Final = JwtRejected(AuthReason.TOKEN_INVALID, "the token is not a well-formed JWT")
_WRONG_ALGORITHM: Final = JwtRejected(
    AuthReason.TOKEN_INVALID_ALGORITHM, "the token is not signed with RS256"
)
_BAD_SIGNATURE: Final = JwtRejected(
    AuthReason.TOKEN_INVALID_SIGNATURE, "the token's signature does not match the key"
)
