"""Shared pieces of the framework integration tests (``test_sdk_{asgi,fastapi,flask,django}``).

Every integration test protects a tiny real app with Gatepass and drives it through the
framework's own test client, against the real server (``live_server``, over TCP). A
:class:`World` holds what each test sets up with the instance key:

- ``api``: the receiving machine; the protected app verifies tokens with its key;
- ``caller`` ("Email"): a machine scoped to ``api``, minting the tokens that should pass;
- ``stranger``: a machine *not* scoped to ``api``, whose tokens must be refused.

:func:`expect` checks a refusal against RFC 6750 as :mod:`gatepass._challenge` writes it,
whatever framework produced the response; the forgers build the attack tokens.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sdk_support import on_clock

from gatepass import AsyncGatepass, Gatepass
from gatepass._auth import VerificationOptions
from gatepass_server.domain.keys import SecretKind, generate_secret

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Mapping

    from gatepass import Machine
    from gatepass_server.domain.clock import FixedClock

TokenFormat = Literal["opaque", "jwt"]
Refusal = Literal["missing", "malformed", "invalid", "insufficient_scope", "unavailable"]

FORMATS: Final[tuple[TokenFormat, ...]] = ("opaque", "jwt")
SQLITE_ONLY: Final = pytest.mark.parametrize("backend", ["sqlite"])
"""For checks decided before any storage is read: one backend is enough."""
MALFORMED_HEADER: Final = "Bearer not one token"
"""An ``Authorization`` header that is not one RFC 6750 ``Bearer <b64token>``."""
POLL_SECONDS: Final = 2.0
"""How long a revocation, or the server going away, may take to be noticed."""
POLL_INTERVAL: Final = 0.02
EXPIRY_TTL_SECONDS: Final = 60
EXPIRY_ADVANCE_MS: Final = 61_000
"""Past the expiry of a token minted for :data:`EXPIRY_TTL_SECONDS`, by the server's clock."""
LEEWAY_ADVANCE_MS: Final = int(VerificationOptions().leeway * 1000)
"""Then past the clock-skew leeway the SDK grants a token it verified (5 s by default).

NOTE: a JWT is given ``leeway`` past ``exp`` (RFC 7519 §4.1.4 allows it), and so is an
opaque token while the SDK's cached answer lasts; only the server, asked about a token it
never saw, refuses it the moment it expires.
"""
CLAIMS: Final = {"team": "email", "tier": 2}
"""The custom claims every valid token carries, for the views to show."""

# RSA key generation costs tens of milliseconds: one attacker key for the whole session.
_ATTACKER_KEY: Final = rsa.generate_private_key(public_exponent=65537, key_size=2048)
NOWHERE: Final = "http://127.0.0.1:9"
"""A server address nothing answers at. A client pointed there can still refuse a request
without bearer credentials, or with a malformed header, with 401/400, but answers any
request that needs verifying 503: so these tests prove no verification was attempted."""
UNISSUED_MACHINE_ID: Final = "mch_" + "0" * 27
"""A well-formed machine id no token is ever scoped to: a scope no caller holds."""


class Server(Protocol):
    """What the tests use of the ``live_server`` fixture (``tests/sdk/conftest.py``)."""

    url: str

    def stop(self) -> None:
        """Stop serving."""


@dataclass
class World:
    """The machines of one test, and clients minting tokens as each of them.

    ``stranger`` is created on first use: most tests never need it, and every request
    to the server costs a commit.
    """

    admin: Gatepass = field(repr=False)
    api_url: str
    api: Machine
    caller: Machine
    _stack: contextlib.ExitStack = field(repr=False)
    _stranger: Machine | None = None
    _minters: dict[str, Gatepass] = field(default_factory=dict, repr=False)

    @property
    def api_secret_key(self) -> str:
        """The receiving machine's secret key (``ak_…``)."""
        assert self.api.secret_key is not None
        return self.api.secret_key

    @property
    def stranger(self) -> Machine:
        """A machine not scoped to ``api``."""
        if self._stranger is None:
            self._stranger = self.admin.machines.create(name="Stranger")
        return self._stranger

    def _minter(self, machine: Machine) -> Gatepass:
        if machine.id not in self._minters:
            assert machine.secret_key is not None
            self._minters[machine.id] = self._stack.enter_context(
                Gatepass(machine_secret_key=machine.secret_key, api_url=self.api_url)
            )
        return self._minters[machine.id]

    def mint(
        self,
        token_format: TokenFormat,
        *,
        by: Literal["caller", "stranger"] = "caller",
        seconds_until_expiration: float | None = None,
    ) -> str:
        """A new bearer token minted by ``by``, carrying :data:`CLAIMS`."""
        return self.mint_with_id(
            token_format, by=by, seconds_until_expiration=seconds_until_expiration
        )[0]

    def mint_with_id(
        self,
        token_format: TokenFormat,
        *,
        by: Literal["caller", "stranger"] = "caller",
        seconds_until_expiration: float | None = None,
    ) -> tuple[str, str]:
        """A new bearer token minted by ``by`` and its id (``mt_…``), to revoke it."""
        machine = self.caller if by == "caller" else self.stranger
        created = self._minter(machine).m2m_tokens.create(
            token_format=token_format,
            seconds_until_expiration=seconds_until_expiration,
            claims=CLAIMS,
        )
        assert created.token is not None
        return created.token, created.id

    def tokens(self, *, seconds_until_expiration: float | None = None) -> dict[TokenFormat, str]:
        """One new token of the caller in each format."""
        return {
            token_format: self.mint(token_format, seconds_until_expiration=seconds_until_expiration)
            for token_format in FORMATS
        }

    def receiver(self, clock: FixedClock) -> Gatepass:
        """A new sync client verifying as ``api``, on the server's clock; close it."""
        return on_clock(
            Gatepass(machine_secret_key=self.api_secret_key, api_url=self.api_url), clock
        )

    def async_receiver(self, clock: FixedClock) -> AsyncGatepass:
        """A new async client verifying as ``api``, on the server's clock; close it."""
        return on_clock(
            AsyncGatepass(machine_secret_key=self.api_secret_key, api_url=self.api_url), clock
        )


@contextlib.contextmanager
def build_world(admin: Gatepass, api_url: str) -> Iterator[World]:
    """Create ``api`` and ``caller`` with ``admin``; close the minting clients afterwards."""
    api = admin.machines.create(name="API")
    caller = admin.machines.create(name="Email", scoped_machines=[api.id])
    with contextlib.ExitStack() as stack:
        yield World(admin=admin, api_url=api_url, api=api, caller=caller, _stack=stack)


# --- forged tokens --------------------------------------------------------------------


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _segments(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header = jwt.get_unverified_header(token)
    payload = jwt.decode(token, options={"verify_signature": False})
    return header, payload


def random_opaque_token() -> str:
    """A well-formed opaque token (prefix, alphabet, length, checksum) never issued."""
    return generate_secret(SecretKind.TOKEN)


def attacker_signed(real_jwt: str) -> str:
    """``real_jwt``'s header (the real ``kid``) and claims, signed with an attacker's key."""
    header, payload = _segments(real_jwt)
    return jwt.encode(payload, _ATTACKER_KEY, algorithm="RS256", headers=header)


def alg_none(real_jwt: str) -> str:
    """``real_jwt``'s claims under ``"alg": "none"``, with an empty signature (RFC 7519 §6)."""
    header, payload = _segments(real_jwt)
    header["alg"] = "none"
    encoded = (_b64url(json.dumps(part).encode()) for part in (header, payload))
    return ".".join(encoded) + "."


def alg_none_with_signature(real_jwt: str) -> str:
    """:func:`alg_none` carrying the real signature, so it has the shape of a signed JWS."""
    return alg_none(real_jwt) + real_jwt.rsplit(".", 1)[1]


FORGERIES: Final[Mapping[str, Callable[[str], str]]] = {
    "attacker_signed_jwt": attacker_signed,
    "alg_none_jwt": alg_none,
    "alg_none_jwt_with_signature": alg_none_with_signature,
}
"""Forgeries made from a real JWT (``random_opaque_token`` needs none)."""


# --- what a refusal looks like --------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A response reduced to what the checks read, whatever framework produced it."""

    status: int
    headers: Mapping[str, str]
    """Lowercased names."""
    body: bytes

    def json(self) -> Any:
        """The body, decoded."""
        return json.loads(self.body)


def expect(answer: Answer, refusal: Refusal, *, scope: str | None = None) -> dict[str, Any]:
    """Check that ``answer`` is the RFC 6750 refusal ``refusal``; its error object.

    The error object is the JSON body, or FastAPI's ``detail`` when the body wraps it.
    """
    status, error = {
        "missing": (401, None),
        "malformed": (400, "invalid_request"),
        "invalid": (401, "invalid_token"),
        "insufficient_scope": (403, "insufficient_scope"),
        "unavailable": (503, None),
    }[refusal]
    assert answer.status == status, (answer.status, answer.body)
    assert answer.headers.get("content-type") == "application/json"
    assert answer.headers.get("cache-control") == "no-store"
    body = answer.json()
    problem: dict[str, Any] = body["detail"] if set(body) == {"detail"} else body
    assert problem.get("error") == error
    assert isinstance(problem["error_description"], str)
    challenge = answer.headers.get("www-authenticate")
    if refusal == "unavailable":
        # NOTE: RFC 9110 §10.2.3: the client is told when to retry, not to change tokens.
        assert challenge is None
        assert answer.headers.get("retry-after") == "1"
    elif refusal == "missing":
        # NOTE: RFC 6750 §3.1: no credentials at all gets a challenge without an error.
        assert challenge == "Bearer"
    else:
        assert challenge is not None
        assert challenge.startswith(f'Bearer error="{error}", error_description="')
        if scope is not None:
            assert challenge.endswith(f', scope="{scope}"')
    return problem


def poll(ask: Callable[[], Answer], done: Callable[[Answer], bool]) -> list[Answer]:
    """Ask until ``done`` holds or :data:`POLL_SECONDS` pass; every answer, in order."""
    deadline = time.monotonic() + POLL_SECONDS
    answers = [ask()]
    while not done(answers[-1]) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL)
        answers.append(ask())
    return answers


async def apoll(
    ask: Callable[[], Awaitable[Answer]], done: Callable[[Answer], bool]
) -> list[Answer]:
    """:func:`poll` for an async app; sleeping lets the client's feed task run."""
    deadline = time.monotonic() + POLL_SECONDS
    answers = [await ask()]
    while not done(answers[-1]) and time.monotonic() < deadline:
        await asyncio.sleep(POLL_INTERVAL)
        answers.append(await ask())
    return answers


def refused(answer: Answer) -> bool:
    """For :func:`poll`: any answer but a success."""
    return answer.status != 200


def unavailable(answer: Answer) -> bool:
    """For :func:`poll`: the answer of a verifier that cannot verify."""
    return answer.status == 503


def expect_unavailable_never_ok(answers: list[Answer]) -> None:
    """The server went away: no answer was a success, and the last is the 503 challenge."""
    assert [answer.status for answer in answers if answer.status == 200] == []
    expect(answers[-1], "unavailable")
