"""In-process micro-benchmarks of JWT signing and verification, each a rate in operations/s.

The suite runs them in a subprocess pinned to one core::

    python -m bench.micro NAME --seconds S [--tokens N] [--rounds R]

which prints one JSON line. ``NAME`` is one of :data:`BENCHMARKS` or ``all``.

The tokens are shaped like the server's (:func:`make_jwts`): an RSA-2048 key named by its
RFC 7638 thumbprint, header ``alg``/``kid``/``typ`` and claims ``jti sub aud scopes iat
nbf exp``, each token with its own ``jti``.

The SDK's local JWT verification is measured two ways, neither touching the network:

- **sdk** (``sdk_*``): :class:`gatepass._auth.Verification`, the sans-I/O core, driven by
  :func:`core_authenticate` through the steps ``Authenticator.authenticate_token`` takes
  for a JWT, with the JWKS preloaded and the revocation feed marked as read;
- **client** (``client_*``): the public :meth:`gatepass.Gatepass.authenticate_token` of a
  client whose ``httpx.MockTransport`` serves the JWKS and the revocation feed (its long
  poll included), which is exactly what an application calls.

"First sight" verifies distinct tokens, each new to the verifier's cache (the cache is
emptied between passes over the token list, outside the timed part); "cached" verifies
one token again and again. Every verification is checked: a benchmark that would measure
a refused token raises :class:`VerificationFailedError` instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import httpx
import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from gatepass import Gatepass, RequestState, TokenType
from gatepass._auth import Verification, VerificationOptions
from gatepass._models import RevocationPage
from gatepass._requests import accepted_types
from gatepass_server.domain import jwt as server_jwt
from gatepass_server.domain.keys import new_token_id

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

__all__ = [
    "BENCHMARKS",
    "RECEIVER",
    "SENDER",
    "FirstSightRatio",
    "Jwts",
    "VerificationFailedError",
    "client_cached_rate",
    "client_first_sight_rate",
    "core_authenticate",
    "first_sight_ratio",
    "main",
    "make_jwts",
    "pyjwt_decode_rate",
    "rs256_sign_rate",
    "sdk_cached_rate",
    "sdk_first_sight_rate",
]

SENDER: Final = "mch_benchSenderMachine000000001"
"""The machine every benchmark token is issued to (its ``sub``)."""
RECEIVER: Final = "mch_benchReceiverMachine0000001"
"""The machine every benchmark token is scoped to (its ``aud``), which verifies it."""

TOKEN_LIFETIME_S: Final = 3600
_ALGORITHMS: Final = ["RS256"]
_M2M: Final = accepted_types(TokenType.M2M_TOKEN)
_SIGN_BATCH: Final = 50
_CACHED_BATCH: Final = 10_000
_API_URL: Final = "http://gatepass.bench"
_MACHINE_KEY: Final = "ak_benchReceiverKey"
_EMPTY_FEED: Final = {"data": [], "cursor": "0", "has_more": False}
_DEFAULT_TOKENS: Final = 1000
_DEFAULT_ROUNDS: Final = 5


class VerificationFailedError(RuntimeError):
    """A benchmark token was refused, so the rate would not measure a verification."""


class Jwts(NamedTuple):
    """Server-shaped JWTs, the JWKS that verifies them and its public key."""

    tokens: list[str]
    jwks: dict[str, Any]
    public_key: RSAPublicKey


@dataclass(frozen=True, slots=True)
class FirstSightRatio:
    """Median first-sight rates (ops/s) of PyJWT and the SDK, measured round by round.

    The ratios are the medians of each round's own ratio, so a drift of the machine's
    speed over the rounds cancels out.
    """

    rounds: int
    pyjwt_decode: float
    sdk_first_sight: float
    client_first_sight: float
    sdk_ratio: float
    client_ratio: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def _claims(token_id: str, issued: int, lifetime_s: int) -> dict[str, Any]:
    """The payload the server signs for a token without custom claims."""
    return {
        "jti": token_id,
        "sub": SENDER,
        "aud": [RECEIVER],
        "scopes": RECEIVER,
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime_s,
    }


def make_jwts(count: int, *, lifetime_s: int = TOKEN_LIFETIME_S) -> Jwts:
    """``count`` distinct server-shaped JWTs under one new RSA-2048 key, with its JWKS."""
    key = server_jwt.generate_signing_key()
    issued = int(time.time())
    tokens = [
        server_jwt.sign(key.private_key, key.kid, _claims(new_token_id(), issued, lifetime_s))
        for _ in range(count)
    ]
    return Jwts(tokens, {"keys": [dict(key.public_jwk)]}, key.private_key.public_key())


def _nothing() -> None:
    """No preparation between passes."""


def _measure(
    seconds: float, run_pass: Callable[[], int], between: Callable[[], None] = _nothing
) -> float:
    """Operations per second of ``run_pass`` (which returns how many it did).

    Passes repeat until ``seconds`` of timed work; ``between`` runs before each pass,
    untimed.
    """
    ops = 0
    spent = 0.0
    while spent < seconds or ops == 0:
        between()
        start = time.perf_counter()
        ops += run_pass()
        spent += time.perf_counter() - start
    return ops / spent


def _refused(state: RequestState) -> VerificationFailedError:
    reason = state.reason.value if state.reason is not None else "no reason"
    return VerificationFailedError(f"the benchmark token was refused: {reason}: {state.message}")


def rs256_sign_rate(seconds: float) -> float:
    """RS256 signatures/s of ``cryptography`` alone, with the server's key size.

    The message is the signing input (``header.payload``) of a server-shaped JWT.
    """
    key = server_jwt.generate_signing_key()
    token = server_jwt.sign(key.private_key, key.kid, _claims(new_token_id(), 0, 1))
    message = token.rsplit(".", 1)[0].encode("ascii")
    pad, digest = padding.PKCS1v15(), hashes.SHA256()
    sign = key.private_key.sign

    def run() -> int:
        for _ in range(_SIGN_BATCH):
            sign(message, pad, digest)
        return _SIGN_BATCH

    rate = _measure(seconds, run)
    key.private_key.public_key().verify(sign(message, pad, digest), message, pad, digest)
    return rate


def pyjwt_decode_rate(
    seconds: float,
    tokens: Sequence[str],
    public_key: RSAPublicKey,
    *,
    audience: str = RECEIVER,
) -> float:
    """``jwt.decode`` calls/s over distinct tokens, the key object prepared once.

    PyJWT checks the signature, ``exp``, ``nbf``, ``iat`` and the audience, and raises on
    any failure.
    """
    decode = jwt.decode

    def run() -> int:
        for token in tokens:
            decode(token, public_key, algorithms=_ALGORITHMS, audience=audience)
        return len(tokens)

    return _measure(seconds, run)


def core_authenticate(verification: Verification, token: str, audience: str | None) -> RequestState:
    """What ``Authenticator.authenticate_token`` does for a JWT, minus any fetching.

    The JWKS must be loaded already: a token that would need a fetch raises
    :class:`VerificationFailedError`.
    """
    step = verification.begin_token(token, _M2M)
    if isinstance(step, RequestState):
        return step
    if verification.following and not verification.feed_fresh():
        return verification.feed_unavailable()
    hit = verification.cached(verification.jwts, token, audience)
    if hit is not None:
        return hit
    key = verification.key_for(token)
    if isinstance(key, RequestState):
        return key
    if not isinstance(key, RSAPublicKey):
        raise VerificationFailedError("the JWKS is not loaded: verifying would need a fetch")
    return verification.jwt_verify(token, key, audience)


def _core(jwks: dict[str, Any]) -> Verification:
    """A verifier with default options, ``jwks`` loaded and the revocation feed read."""
    verification = Verification(VerificationOptions())
    verification.jwks_loaded(jwks)
    if not verification.jwks.keys:
        raise VerificationFailedError("the JWKS holds no usable key")
    _feed_read(verification)
    return verification


def _feed_read(verification: Verification) -> None:
    """Record a read of the revocation feed to its end, with nothing revoked."""
    verification.feed_page(RevocationPage.from_json(_EMPTY_FEED))


def sdk_first_sight_rate(
    seconds: float,
    tokens: Sequence[str],
    jwks: dict[str, Any],
    *,
    audience: str | None = RECEIVER,
) -> float:
    """Verifications/s of distinct tokens by the sans-I/O core, each new to its cache."""
    verification = _core(jwks)

    def between() -> None:
        verification.jwts.clear()
        _feed_read(verification)

    def run() -> int:
        for token in tokens:
            state = core_authenticate(verification, token, audience)
            if not state.is_authenticated:
                raise _refused(state)
        return len(tokens)

    return _measure(seconds, run, between)


def sdk_cached_rate(
    seconds: float, token: str, jwks: dict[str, Any], *, audience: str | None = RECEIVER
) -> float:
    """Verifications/s of one token by the sans-I/O core, answered from its cache."""
    verification = _core(jwks)
    first = core_authenticate(verification, token, audience)
    if not first.is_authenticated:
        raise _refused(first)

    def run() -> int:
        for _ in range(_CACHED_BATCH):
            state = core_authenticate(verification, token, audience)
            if not state.is_authenticated:
                raise _refused(state)
        return _CACHED_BATCH

    return _measure(seconds, run, lambda: _feed_read(verification))


class _FakeServer:
    """The two routes a JWT verifier reads: the JWKS and the revocation feed.

    A long poll of the feed (``wait``) is held until it times out or :meth:`stop`, like
    the server's, so the client's feed thread sleeps instead of spinning.
    """

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self.jwks_fetches = 0
        self._stopped = threading.Event()

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request of the client."""
        if request.url.path == "/v1/m2m_tokens/jwks":
            self.jwks_fetches += 1
            return httpx.Response(200, json=self.jwks)
        if request.url.path == "/v1/m2m_tokens/revocations":
            wait = request.url.params.get("wait")
            if wait:
                self._stopped.wait(float(wait))
            return httpx.Response(200, json=_EMPTY_FEED)
        return httpx.Response(404, json={"errors": [{"code": "resource_not_found"}]})

    def stop(self) -> None:
        """Let any held long poll return at once."""
        self._stopped.set()


@contextlib.contextmanager
def _client(jwks: dict[str, Any]) -> Iterator[Gatepass]:
    """A receiving machine's client, its server faked in process."""
    server = _FakeServer(jwks)
    client = Gatepass(
        machine_secret_key=_MACHINE_KEY,
        api_url=_API_URL,
        transport=httpx.MockTransport(server.handle),
    )
    try:
        yield client
    finally:
        client.close()
        server.stop()


def _authenticated(client: Gatepass, token: str, audience: str | None) -> None:
    """Verify ``token`` once through the client; raise if it is refused."""
    state = client.authenticate_token(token, audience=audience)
    if not state.is_authenticated:
        raise _refused(state)


def client_first_sight_rate(
    seconds: float,
    tokens: Sequence[str],
    jwks: dict[str, Any],
    *,
    audience: str | None = RECEIVER,
) -> float:
    """``Gatepass.authenticate_token`` calls/s over distinct tokens, each new to its cache.

    One untimed call first starts the revocation feed and fetches the JWKS.
    """
    with _client(jwks) as client:
        _authenticated(client, tokens[0], audience)
        authenticate = client.authenticate_token
        cache = client._authenticator._v.jwts  # noqa: SLF001 - emptied between passes

        def run() -> int:
            for token in tokens:
                state = authenticate(token, audience=audience)
                if not state.is_authenticated:
                    raise _refused(state)
            return len(tokens)

        return _measure(seconds, run, cache.clear)


def client_cached_rate(
    seconds: float, token: str, jwks: dict[str, Any], *, audience: str | None = RECEIVER
) -> float:
    """``Gatepass.authenticate_token`` calls/s for one token, answered from its cache."""
    with _client(jwks) as client:
        _authenticated(client, token, audience)
        authenticate = client.authenticate_token

        def run() -> int:
            for _ in range(_CACHED_BATCH):
                state = authenticate(token, audience=audience)
                if not state.is_authenticated:
                    raise _refused(state)
            return _CACHED_BATCH

        return _measure(seconds, run)


def first_sight_ratio(
    seconds: float,
    jwts: Jwts,
    *,
    rounds: int = _DEFAULT_ROUNDS,
    audience: str = RECEIVER,
) -> FirstSightRatio:
    """PyJWT and both SDK paths on the same tokens, back to back for ``rounds`` rounds.

    Each measurement lasts ``seconds``; the order flips every round so that neither side
    always runs first.
    """
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    tokens, jwks, public_key = jwts
    measures: dict[str, Callable[[], float]] = {
        "pyjwt": lambda: pyjwt_decode_rate(seconds, tokens, public_key, audience=audience),
        "sdk": lambda: sdk_first_sight_rate(seconds, tokens, jwks, audience=audience),
        "client": lambda: client_first_sight_rate(seconds, tokens, jwks, audience=audience),
    }
    rates: dict[str, list[float]] = {name: [] for name in measures}
    for round_number in range(rounds):
        order = list(measures) if round_number % 2 == 0 else list(reversed(measures))
        for name in order:
            rates[name].append(measures[name]())
    pyjwt = rates["pyjwt"]
    return FirstSightRatio(
        rounds=rounds,
        pyjwt_decode=statistics.median(pyjwt),
        sdk_first_sight=statistics.median(rates["sdk"]),
        client_first_sight=statistics.median(rates["client"]),
        sdk_ratio=statistics.median(s / p for s, p in zip(rates["sdk"], pyjwt, strict=True)),
        client_ratio=statistics.median(c / p for c, p in zip(rates["client"], pyjwt, strict=True)),
    )


def _run_rs256_sign(args: argparse.Namespace) -> dict[str, Any]:
    return {"ops_per_s": rs256_sign_rate(args.seconds)}


def _run_pyjwt_decode(args: argparse.Namespace) -> dict[str, Any]:
    made = make_jwts(args.tokens)
    return {"ops_per_s": pyjwt_decode_rate(args.seconds, made.tokens, made.public_key)}


def _run_sdk_first_sight(args: argparse.Namespace) -> dict[str, Any]:
    made = make_jwts(args.tokens)
    return {"ops_per_s": sdk_first_sight_rate(args.seconds, made.tokens, made.jwks)}


def _run_sdk_cached(args: argparse.Namespace) -> dict[str, Any]:
    made = make_jwts(1)
    return {"ops_per_s": sdk_cached_rate(args.seconds, made.tokens[0], made.jwks)}


def _run_client_first_sight(args: argparse.Namespace) -> dict[str, Any]:
    made = make_jwts(args.tokens)
    return {"ops_per_s": client_first_sight_rate(args.seconds, made.tokens, made.jwks)}


def _run_client_cached(args: argparse.Namespace) -> dict[str, Any]:
    made = make_jwts(1)
    return {"ops_per_s": client_cached_rate(args.seconds, made.tokens[0], made.jwks)}


def _run_first_sight_ratio(args: argparse.Namespace) -> dict[str, Any]:
    ratio = first_sight_ratio(args.seconds, make_jwts(args.tokens), rounds=args.rounds)
    return ratio.to_json()


BENCHMARKS: Final[dict[str, Callable[[argparse.Namespace], dict[str, Any]]]] = {
    "rs256_sign": _run_rs256_sign,
    "pyjwt_decode": _run_pyjwt_decode,
    "sdk_first_sight": _run_sdk_first_sight,
    "sdk_cached": _run_sdk_cached,
    "client_first_sight": _run_client_first_sight,
    "client_cached": _run_client_cached,
    "first_sight_ratio": _run_first_sight_ratio,
}
"""Each benchmark the command line runs, by name, and how."""

_ALL: Final = ("rs256_sign", "sdk_cached", "client_cached", "first_sight_ratio")


def _run_all(args: argparse.Namespace) -> dict[str, Any]:
    """The rates the DESIGN.md rows need; first-sight rates come from the ratio rounds."""
    return {name: BENCHMARKS[name](args) for name in _ALL}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.micro", description="Run one micro-benchmark; print one JSON line."
    )
    parser.add_argument("name", choices=[*BENCHMARKS, "all"])
    parser.add_argument("--seconds", type=float, default=1.0, help="timed work per measurement")
    parser.add_argument(
        "--tokens", type=int, default=_DEFAULT_TOKENS, help="distinct JWTs for first sight"
    )
    parser.add_argument(
        "--rounds", type=int, default=_DEFAULT_ROUNDS, help="rounds of the first-sight ratio"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark named on the command line and print its result as one JSON line."""
    args = _parser().parse_args(argv)
    if args.seconds <= 0 or args.tokens < 1 or args.rounds < 1:
        _parser().error("--seconds must be positive, --tokens and --rounds at least 1")
    run = _run_all if args.name == "all" else BENCHMARKS[args.name]
    result = {"name": args.name, "seconds": args.seconds, "tokens": args.tokens, **run(args)}
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
