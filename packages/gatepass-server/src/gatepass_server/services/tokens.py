"""M2M token use cases: mint, list, get, revoke and verify (CONTRACT.md §4)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import jwt

from gatepass_server.domain.jwt import is_compact_jws
from gatepass_server.domain.keys import (
    SecretKind,
    digest,
    generate_secret,
    is_machine_id,
    is_well_formed,
    new_token_id,
)
from gatepass_server.domain.tokens import (
    MAX_TOKEN_LENGTH,
    M2MToken,
    TokenFormat,
    VerifyFailure,
    canonical_json,
    check_token,
    lifetime_ms,
)
from gatepass_server.errors import (
    AuthorizationInvalid,
    FormParamError,
    MachineKeyInvalid,
    NotFound,
    TokenInvalid,
)
from gatepass_server.services.auth import MachinePrincipal, Principal

if TYPE_CHECKING:
    import builtins
    from collections.abc import Mapping

    from gatepass_server.domain.clock import Clock
    from gatepass_server.domain.sealing import Sealer
    from gatepass_server.services.cache import VerifyCache
    from gatepass_server.services.interfaces import MachineStore, TokenListQuery, TokenStore

__all__ = ["CreatedToken", "TokenService", "TokenSigner"]

_LAST_USED_FLUSH_SECONDS = 2.0


class TokenSigner(Protocol):
    """What token minting and verification need from the signing keys."""

    async def sign(self, instance_id: str, payload: dict[str, Any]) -> tuple[str, str]:
        """Sign ``payload``; return ``(kid, compact JWT)``."""
        ...

    async def jwks(self, instance_id: str) -> builtins.list[dict[str, Any]]:
        """The instance's published public keys."""
        ...


@dataclass(frozen=True, slots=True)
class CreatedToken:
    """A token record and its bearer string (shown in the create response only)."""

    token: M2MToken
    secret: str = field(repr=False)  # NOTE: a repr may be logged (SECURITY.md 3)


class TokenService:
    """Mint, list, revoke and verify machine tokens."""

    def __init__(
        self,
        tokens: TokenStore,
        machines: MachineStore,
        signer: TokenSigner,
        sealer: Sealer,
        clock: Clock,
        cache: VerifyCache,
    ) -> None:
        self._tokens = tokens
        self._machines = machines
        self._signer = signer
        self._sealer = sealer
        self._clock = clock
        self._cache = cache
        self._last_used: dict[str, int] = {}

    # -- create --------------------------------------------------------------------------

    async def create(
        self,
        caller: MachinePrincipal,
        *,
        token_format: TokenFormat,
        seconds_until_expiration: float | None,
        claims: dict[str, Any] | None,
        min_remaining_ttl_seconds: int | None,
    ) -> CreatedToken:
        """Mint a token for the calling machine, or hand back a reusable one."""
        # NOTE: cached, like keys: a deletion racing this mint is caught by insert_token.
        machine = await self._cache.through(
            self._cache.machines,
            (caller.instance_id, caller.machine_id),
            lambda: self._machines.get_machine(caller.instance_id, caller.machine_id),
        )
        if machine is None:  # deleted between authentication and now
            raise MachineKeyInvalid
        now = self._clock.now_ms()
        lifetime = lifetime_ms(seconds_until_expiration, machine.default_token_ttl)
        scopes = tuple(m.id for m in machine.scoped_machines)
        reuse = token_format is TokenFormat.OPAQUE and min_remaining_ttl_seconds is not None
        if min_remaining_ttl_seconds is not None and min_remaining_ttl_seconds * 1000 >= lifetime:
            raise FormParamError(
                "form_param_value_invalid",
                "min_remaining_ttl_seconds",
                "min_remaining_ttl_seconds must be less than the token's lifetime",
                status=400,
            )
        if reuse:
            assert min_remaining_ttl_seconds is not None  # noqa: S101 - narrowed by `reuse`  # nosec B101
            found = await self._tokens.reusable_token(
                caller.instance_id,
                caller.machine_id,
                claims=None if claims is None else canonical_json(claims),
                scopes=canonical_json(list(scopes)),
                live_until=now + min_remaining_ttl_seconds * 1000,
            )
            if found is not None:
                reused, sealed_secret = found
                return CreatedToken(reused, self._sealer.open(sealed_secret, reused.id))
        token = M2MToken(
            id=new_token_id(),
            instance_id=caller.instance_id,
            subject=caller.machine_id,
            token_format=token_format,
            claims=claims,
            scopes=scopes,
            expiration=now + lifetime,
            revoked_at=None,
            revocation_reason=None,
            last_used_at=None,
            created_at=now,
            updated_at=now,
        )
        if token_format is TokenFormat.JWT:
            kid, secret = await self._signer.sign(caller.instance_id, _jwt_payload(token))
            stored = await self._tokens.insert_token(token, digest=None, sealed=None, kid=kid)
        else:
            secret = generate_secret(SecretKind.TOKEN)
            sealed = self._sealer.seal(secret, token.id) if reuse else None
            stored = await self._tokens.insert_token(
                token, digest=digest(secret), sealed=sealed, kid=None
            )
        # NOTE: the row is committed before the secret is returned (SECURITY.md principle 8).
        if not stored:  # the machine was deleted while this token was being minted
            raise MachineKeyInvalid
        return CreatedToken(token, secret)

    # -- read and revoke -----------------------------------------------------------------

    async def list(
        self,
        caller: Principal,
        query: TokenListQuery,
    ) -> tuple[builtins.list[M2MToken], int]:
        """A subject's tokens; a machine key may list only its own."""
        if isinstance(caller, MachinePrincipal) and caller.machine_id != query.subject:
            raise AuthorizationInvalid(long_message="A machine key may list only its own tokens")
        # NOTE: a subject no machine can have (a wildcard, a NUL that PostgreSQL refuses with
        # an error) owns no tokens: answered without asking storage (SECURITY.md principle 5).
        if not is_machine_id(query.subject):
            return [], 0
        return await self._tokens.list_tokens(caller.instance_id, query, self._clock.now_ms())

    async def get(self, caller: Principal, token_id: str) -> M2MToken:
        """One token; a machine key sees only its own (others are simply not found)."""
        token = await self._tokens.get_token(caller.instance_id, token_id)
        if token is None or not _may_touch(caller, token):
            raise NotFound("Token not found")
        return token

    async def revoke(self, caller: Principal, token_id: str, reason: str | None) -> M2MToken:
        """Revoke a token (idempotent: the first reason stays)."""
        await self.get(caller, token_id)
        token = await self._tokens.revoke_token(
            caller.instance_id,
            token_id,
            reason=reason,
            now_ms=self._clock.now_ms(),
        )
        if token is None:
            raise NotFound("Token not found")
        return token

    # -- verify --------------------------------------------------------------------------

    async def verify(self, caller: Principal, presented: str) -> M2MToken:
        """The token's record if ``presented`` is valid for ``caller``; else TokenInvalid.

        Every failure is the same :class:`TokenInvalid`; :meth:`check` says why.
        """
        token, failure = await self.check(caller, presented)
        if failure is not None or token is None:
            raise TokenInvalid
        self._last_used[token.id] = self._clock.now_ms()
        return token

    async def check(
        self,
        caller: Principal,
        presented: str,
    ) -> tuple[M2MToken | None, VerifyFailure | None]:
        """Verify ``presented`` and say why it fails, as a value."""
        token = await self._lookup(caller.instance_id, presented)
        if token is None:
            return None, VerifyFailure.UNKNOWN
        caller_machine = caller.machine_id if isinstance(caller, MachinePrincipal) else None
        failure = check_token(
            token,
            now_ms=self._clock.now_ms(),
            instance_id=caller.instance_id,
            caller_machine_id=caller_machine,
        )
        # NOTE: stricter than Clerk: a removed scope ends verification by that machine even
        # though the token's scopes snapshot still names it (CONTRACT.md §4).
        if (
            failure is None
            and caller_machine is not None
            and not await self._scope_exists(token.subject, caller_machine)
        ):
            failure = VerifyFailure.SCOPE_REMOVED
        return token, failure

    # -- lookups, through the verification cache -------------------------------------------

    async def _lookup(self, instance_id: str, presented: str) -> M2MToken | None:
        # NOTE: SECURITY.md principle 5: no token is longer or non-ASCII; the CLI passes any
        # argument here, and the digest's UTF-8 encoding would raise on a lone surrogate.
        if len(presented) > MAX_TOKEN_LENGTH or not presented.isascii():
            return None
        token_digest = digest(presented)
        # NOTE: as for keys, a cache hit is the digest of a stored, hence well-formed, token.
        cached = self._cache.peek_token(token_digest)
        if cached is not None:
            return cached
        if is_well_formed(presented, SecretKind.TOKEN):
            return await self._cache.token_by_digest(
                token_digest,
                lambda: self._tokens.token_by_digest(token_digest),
            )
        if is_compact_jws(presented):
            token_id = await self._verified_jwt_id(instance_id, presented)
            if token_id is None:
                return None
            return await self._cache.through(
                self._cache.tokens,
                token_id,
                lambda: self._tokens.get_token(instance_id, token_id),
            )
        return None

    async def _scope_exists(self, from_machine_id: str, to_machine_id: str) -> bool:
        exists: bool | None = await self._cache.through(
            self._cache.scopes,
            (from_machine_id, to_machine_id),
            lambda: self._tokens.scope_exists(from_machine_id, to_machine_id),
        )
        return bool(exists)

    async def _jwks(self, instance_id: str) -> Mapping[str, jwt.PyJWK]:
        """The instance's published keys by ``kid``, parsed once per cache fill."""

        async def load() -> dict[str, jwt.PyJWK] | None:
            keys = {
                k["kid"]: jwt.PyJWK(k, algorithm="RS256")
                for k in await self._signer.jwks(instance_id)
                if "kid" in k
            }
            return keys or None  # NOTE: "no keys yet" is not kept, like every "not found"

        return await self._cache.through(self._cache.jwks, instance_id, load) or {}

    async def _verified_jwt_id(self, instance_id: str, presented: str) -> str | None:
        """The ``jti`` of a JWT signed by one of the instance's published keys."""
        try:
            header = jwt.get_unverified_header(presented)
        except jwt.PyJWTError:
            return None
        kid = header.get("kid")
        if not isinstance(kid, str):
            return None
        keys = await self._jwks(instance_id)
        if kid not in keys:
            return None
        try:
            # NOTE: the algorithm is ours, never the token's (SECURITY.md principle 6). Time
            # claims are checked against the token's record with the one injected clock.
            claims = jwt.decode(
                presented,
                keys[kid],
                algorithms=["RS256"],
                options={
                    "require": ["exp", "jti", "sub"],
                    "verify_aud": False,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError:
            return None
        # NOTE: "require" only checks that exp is there; it must also be a NumericDate
        # (RFC 7519 §4.1.4), as every local verifier demands, or one verifier would accept
        # what the others refuse. The record's expiration still decides validity.
        expires = claims.get("exp")
        if isinstance(expires, bool) or not isinstance(expires, int | float):
            return None
        token_id = claims.get("jti")
        return token_id if isinstance(token_id, str) else None

    # -- last_used_at --------------------------------------------------------------------

    async def flush_last_used(self) -> None:
        """Write the verifications seen since the last flush, in one transaction."""
        pending, self._last_used = self._last_used, {}
        await self._tokens.record_last_used(pending)

    async def run_last_used_writer(self) -> None:
        """Flush ``last_used_at`` every few seconds until cancelled (then once more).

        NOTE: one write per token per period, never one per verify (DESIGN.md hot path).
        """
        try:
            while True:
                await asyncio.sleep(_LAST_USED_FLUSH_SECONDS)
                await self._flush_quietly()
        finally:
            await self._flush_quietly()

    async def _flush_quietly(self) -> None:
        from gatepass_server.observability import logger  # noqa: PLC0415

        try:
            await self.flush_last_used()
        except Exception:  # noqa: BLE001 - a lost last_used_at must not stop the server
            logger.warning("last_used_flush_failed", exc_info=True)


def _may_touch(caller: Principal, token: M2MToken) -> bool:
    return not isinstance(caller, MachinePrincipal) or token.subject == caller.machine_id


def _jwt_payload(token: M2MToken) -> dict[str, Any]:
    issued = token.created_at // 1000
    return {
        **(token.claims or {}),
        "jti": token.id,
        "sub": token.subject,
        "aud": list(token.scopes),
        "scopes": " ".join(token.scopes),
        "iat": issued,
        "nbf": issued,
        "exp": token.expiration // 1000,
    }
