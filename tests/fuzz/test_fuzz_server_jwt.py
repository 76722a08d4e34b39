"""Fuzzing the server's verify path for JWT-format tokens (services.tokens, domain.jwt).

A real JWT is minted through the token service; then one-character mutations of it and
forged tokens (the instance's own ``kid`` with alg none/HS256-with-its-public-key/
RS512, an attacker's signature, ``jku``/``x5u``/``jwk``/``x5c``, ``crit``, hostile claims)
go through ``TokenService.check``, the function behind ``POST /v1/m2m_tokens/verify``
and ``gatepass-server tokens verify``. Nothing may raise, and nothing but the minted
string may verify.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from fuzz_support import B64URL, BUDGETS, draw_examples, mutations
from hypothesis import strategies as st
from jwt_support import SIGNERS, headers, payloads, signed

from gatepass_server.domain.tokens import TokenFormat
from gatepass_server.services.auth import InstancePrincipal, MachinePrincipal

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    from gatepass_server.runtime import Runtime


@dataclass(frozen=True)
class Minted:
    """A JWT the server minted, its record id, and the instance's signing key."""

    admin: InstancePrincipal
    receiver: MachinePrincipal
    token: str
    token_id: str
    kid: str
    private_key: RSAPrivateKey
    claims: dict[str, Any]


@pytest.fixture
async def minted(runtime: Runtime) -> Minted:
    """A caller scoped to a receiver, and one JWT the caller minted."""
    instance_id = (await runtime.instances.default()).id
    receiver = (await runtime.machines.create(instance_id, name="receiver")).machine
    caller = (
        await runtime.machines.create(instance_id, name="caller", scoped_machine_ids=[receiver.id])
    ).machine
    created = await runtime.tokens.create(
        MachinePrincipal(instance_id, caller.id),
        token_format=TokenFormat.JWT,
        seconds_until_expiration=None,
        claims={"team": "billing"},
        min_remaining_ttl_seconds=None,
    )
    loaded = runtime.signing._active[instance_id]
    segment = created.secret.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return Minted(
        InstancePrincipal(instance_id),
        MachinePrincipal(instance_id, receiver.id),
        created.secret,
        created.token.id,
        loaded.kid,
        loaded.private_key,
        claims,
    )


async def _verified(runtime: Runtime, minted: Minted, candidates: list[str]) -> list[str]:
    """The candidates that verify, for the admin or the scoped machine; none may raise."""
    accepted = []
    for candidate in candidates:
        for caller in (minted.admin, minted.receiver):
            try:
                token, failure = await runtime.tokens.check(caller, candidate)
            except Exception as exc:
                msg = f"check({candidate!r}) raised {exc!r}"
                raise AssertionError(msg) from exc
            if failure is None:
                assert token is not None
                accepted.append(candidate)
    return accepted


@pytest.mark.parametrize("budget", BUDGETS)
async def test_fuzz_server_refuses_every_mutation_of_a_minted_jwt(
    runtime: Runtime, minted: Minted, budget: int
) -> None:
    """The minted JWT verifies; no one-character change of it does (padding included)."""
    assert await _verified(runtime, minted, [minted.token]) == [minted.token] * 2
    candidates = draw_examples(mutations(minted.token, B64URL + ".="), examples=300, budget=budget)
    assert await _verified(runtime, minted, candidates) == []


@pytest.mark.parametrize("budget", BUDGETS)
async def test_fuzz_server_refuses_forged_jwts(
    runtime: Runtime, minted: Minted, budget: int
) -> None:
    """Forgeries under the instance's kid verify only if the instance key signed them RS256.

    Tokens the fuzzer signs with the instance's own key (``rs256``) stand for the server
    itself: they may verify, but only with ``alg: RS256`` and the minted token's ``jti``.
    """
    forged = st.tuples(
        headers(kid=minted.kid),
        payloads(**minted.claims),
        st.sampled_from(SIGNERS),
    )
    cases = draw_examples(forged, examples=300, budget=budget)
    tokens = {signed(h, p, signer, minted.private_key): (h, p, signer) for h, p, signer in cases}
    for token in await _verified(runtime, minted, list(tokens)):
        header, body, signer = tokens[token]
        assert signer == "rs256", (header, signer)
        assert isinstance(header, dict)
        assert header.get("alg") == "RS256", header
        assert header.get("kid") == minted.kid, header
        assert isinstance(body, dict)
        assert body.get("jti") == minted.token_id, body
