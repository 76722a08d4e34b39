"""``Gatepass`` and ``AsyncGatepass``: the API clients, with ``.machines`` and ``.m2m_tokens``.

Both share :class:`~gatepass._http.BaseClient` and the request descriptions of
:mod:`gatepass._calls`; they differ only in how they send and sleep.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Self, TypeVar

import anyio
import httpx

from gatepass import _calls
from gatepass._auth import AsyncAuthenticator, Authenticator, Verification, VerificationOptions
from gatepass._http import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, BaseClient, Call, Retry
from gatepass._state import TokenType

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
    from types import TracebackType

    from gatepass._calls import MachineOrder, TokenFormat
    from gatepass._models import (
        DeletedMachine,
        DeletedMachineScope,
        M2MToken,
        M2MTokenList,
        Machine,
        MachineList,
        MachineScope,
        MachineSecretKey,
        RevocationPage,
    )
    from gatepass._requests import AcceptsToken
    from gatepass._state import RequestState

__all__ = ["AsyncGatepass", "AsyncM2MTokens", "AsyncMachines", "Gatepass", "M2MTokens", "Machines"]

T = TypeVar("T")
UNSET = _calls.UNSET
_PAGE = 100


class Gatepass(BaseClient):
    """The synchronous client.

    Keys and URL come from the arguments, else ``GATEPASS_SECRET_KEY``,
    ``GATEPASS_MACHINE_SECRET_KEY`` and ``GATEPASS_API_URL``, else their ``CLERK_*``
    counterparts. ``secret_key`` (``sk_…``) manages machines; ``machine_secret_key``
    (``ak_…``) mints tokens and verifies them as the receiving machine. Idempotent requests
    are retried ``max_retries`` times after a lost answer or a 502/503/504, every request
    after a 429, honouring ``Retry-After``. ``transport`` replaces the network (tests).
    ``verification`` tunes :meth:`authenticate_request` (caches, leeway, revocation feed).
    """

    def __init__(
        self,
        *,
        secret_key: str | None = None,
        machine_secret_key: str | None = None,
        api_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        transport: httpx.BaseTransport | None = None,
        verification: VerificationOptions | None = None,
    ) -> None:
        super().__init__(
            secret_key=secret_key,
            machine_secret_key=machine_secret_key,
            api_url=api_url,
            timeout=timeout,
            max_retries=max_retries,
        )
        self._http = httpx.Client(transport=transport, headers=self._headers())
        self.machines = Machines(self)
        self.m2m_tokens = M2MTokens(self)
        self._authenticator = Authenticator(
            self, Verification(verification or VerificationOptions())
        )

    def authenticate_request(
        self,
        request: object,
        *,
        accepts_token: AcceptsToken = TokenType.M2M_TOKEN,
        audience: str | None = None,
    ) -> RequestState:
        """Who sent ``request``: the state of its bearer token, valid or not and why.

        ``request`` is an ASGI scope, a Starlette/FastAPI, Flask/Werkzeug or Django
        request, or a mapping of headers. ``accepts_token`` is ``"m2m_token"`` (the
        default), ``"any"`` or a list of token types. ``audience``, when given, is the
        receiving machine's id: a token not scoped to it is refused. A bad token is an
        answer, not an exception; an unreachable server gives ``verification-unavailable``.
        """
        return self._authenticator.authenticate(
            request, accepts_token=accepts_token, audience=audience
        )

    def authenticate_token(
        self,
        token: str,
        *,
        accepts_token: AcceptsToken = TokenType.M2M_TOKEN,
        audience: str | None = None,
    ) -> RequestState:
        """Like :meth:`authenticate_request`, for a token that came some other way."""
        return self._authenticator.authenticate_token(
            token, accepts_token=accepts_token, audience=audience
        )

    def _send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            request = self.build(self._http, call)
            try:
                response = self._http.send(request)
            except httpx.TransportError as failure:
                step: T | Retry = self.failed(call, failure, attempt)
            else:
                step = self.answered(call, response, attempt)
            if not isinstance(step, Retry):
                return step
            time.sleep(step.delay)
            attempt += 1

    def close(self) -> None:
        """Stop following the revocation feed and close the connection pool."""
        self._authenticator.close()
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncGatepass(BaseClient):
    """The asynchronous client (asyncio); see :class:`Gatepass` for the arguments."""

    def __init__(
        self,
        *,
        secret_key: str | None = None,
        machine_secret_key: str | None = None,
        api_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        transport: httpx.AsyncBaseTransport | None = None,
        verification: VerificationOptions | None = None,
    ) -> None:
        super().__init__(
            secret_key=secret_key,
            machine_secret_key=machine_secret_key,
            api_url=api_url,
            timeout=timeout,
            max_retries=max_retries,
        )
        self._http = httpx.AsyncClient(transport=transport, headers=self._headers())
        self.machines = AsyncMachines(self)
        self.m2m_tokens = AsyncM2MTokens(self)
        self._authenticator = AsyncAuthenticator(
            self, Verification(verification or VerificationOptions())
        )

    async def authenticate_request(
        self,
        request: object,
        *,
        accepts_token: AcceptsToken = TokenType.M2M_TOKEN,
        audience: str | None = None,
    ) -> RequestState:
        """Who sent ``request``; see :meth:`Gatepass.authenticate_request`."""
        return await self._authenticator.authenticate(
            request, accepts_token=accepts_token, audience=audience
        )

    async def authenticate_token(
        self,
        token: str,
        *,
        accepts_token: AcceptsToken = TokenType.M2M_TOKEN,
        audience: str | None = None,
    ) -> RequestState:
        """Like :meth:`authenticate_request`, for a token that came some other way."""
        return await self._authenticator.authenticate_token(
            token, accepts_token=accepts_token, audience=audience
        )

    async def _send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            request = self.build(self._http, call)
            try:
                response = await self._http.send(request)
            except httpx.TransportError as failure:
                step: T | Retry = self.failed(call, failure, attempt)
            else:
                step = self.answered(call, response, attempt)
            if not isinstance(step, Retry):
                return step
            await anyio.sleep(step.delay)
            attempt += 1

    async def aclose(self) -> None:
        """Stop following the revocation feed and close the connection pool."""
        await self._authenticator.aclose()
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class Machines:
    """``client.machines``: the machines of the instance (needs ``secret_key``)."""

    def __init__(self, client: Gatepass) -> None:
        self._client = client

    def list(
        self,
        *,
        limit: int = 10,
        offset: int = 0,
        query: str | None = None,
        order_by: MachineOrder | None = None,
    ) -> MachineList:
        """One page of machines; ``query`` matches an id exactly or a name in part."""
        return self._client._send(  # noqa: SLF001 - the resource is part of its client
            _calls.list_machines(limit=limit, offset=offset, query=query, order_by=order_by)
        )

    def iterate(
        self, *, query: str | None = None, order_by: MachineOrder | None = None
    ) -> Iterator[Machine]:
        """Every machine matching ``query``, fetching pages as needed."""
        offset = 0
        while True:
            page = self.list(limit=_PAGE, offset=offset, query=query, order_by=order_by)
            yield from page.data
            offset += len(page.data)
            if not page.data or offset >= page.total_count:
                return

    def create(
        self,
        *,
        name: str,
        scoped_machines: Sequence[str] | None = None,
        default_token_ttl: int | None = None,
    ) -> Machine:
        """A new machine; its ``secret_key`` is in this answer only (and via ``get_secret_key``)."""
        return self._client._send(  # noqa: SLF001
            _calls.create_machine(
                name=name, scoped_machines=scoped_machines, default_token_ttl=default_token_ttl
            )
        )

    def get(self, machine_id: str) -> Machine:
        """One machine."""
        return self._client._send(_calls.get_machine(machine_id))  # noqa: SLF001

    def update(
        self, machine_id: str, *, name: str = UNSET, default_token_ttl: int = UNSET
    ) -> Machine:
        """Change a machine's name or default token lifetime; fields not given stay."""
        return self._client._send(  # noqa: SLF001
            _calls.update_machine(machine_id, name=name, default_token_ttl=default_token_ttl)
        )

    def delete(self, machine_id: str) -> DeletedMachine:
        """Delete a machine, its scopes, and revoke its tokens."""
        return self._client._send(_calls.delete_machine(machine_id))  # noqa: SLF001

    def get_secret_key(self, machine_id: str) -> MachineSecretKey:
        """The machine's current secret key."""
        return self._client._send(_calls.get_secret_key(machine_id))  # noqa: SLF001

    def rotate_secret_key(self, machine_id: str, *, previous_token_ttl: int) -> MachineSecretKey:
        """A new secret key; the old one keeps working ``previous_token_ttl`` seconds."""
        return self._client._send(  # noqa: SLF001
            _calls.rotate_secret_key(machine_id, previous_token_ttl=previous_token_ttl)
        )

    def create_scope(self, machine_id: str, *, to_machine_id: str) -> MachineScope:
        """Allow ``machine_id`` to call ``to_machine_id``."""
        return self._client._send(  # noqa: SLF001
            _calls.create_scope(machine_id, to_machine_id=to_machine_id)
        )

    def delete_scope(self, machine_id: str, *, to_machine_id: str) -> DeletedMachineScope:
        """Stop ``machine_id`` from calling ``to_machine_id``."""
        return self._client._send(  # noqa: SLF001
            _calls.delete_scope(machine_id, to_machine_id=to_machine_id)
        )


class AsyncMachines:
    """``client.machines`` of :class:`AsyncGatepass`; see :class:`Machines`."""

    def __init__(self, client: AsyncGatepass) -> None:
        self._client = client

    async def list(
        self,
        *,
        limit: int = 10,
        offset: int = 0,
        query: str | None = None,
        order_by: MachineOrder | None = None,
    ) -> MachineList:
        """One page of machines; ``query`` matches an id exactly or a name in part."""
        return await self._client._send(  # noqa: SLF001
            _calls.list_machines(limit=limit, offset=offset, query=query, order_by=order_by)
        )

    async def iterate(
        self, *, query: str | None = None, order_by: MachineOrder | None = None
    ) -> AsyncIterator[Machine]:
        """Every machine matching ``query``, fetching pages as needed."""
        offset = 0
        while True:
            page = await self.list(limit=_PAGE, offset=offset, query=query, order_by=order_by)
            for machine in page.data:
                yield machine
            offset += len(page.data)
            if not page.data or offset >= page.total_count:
                return

    async def create(
        self,
        *,
        name: str,
        scoped_machines: Sequence[str] | None = None,
        default_token_ttl: int | None = None,
    ) -> Machine:
        """A new machine; its ``secret_key`` is in this answer only (and via ``get_secret_key``)."""
        return await self._client._send(  # noqa: SLF001
            _calls.create_machine(
                name=name, scoped_machines=scoped_machines, default_token_ttl=default_token_ttl
            )
        )

    async def get(self, machine_id: str) -> Machine:
        """One machine."""
        return await self._client._send(_calls.get_machine(machine_id))  # noqa: SLF001

    async def update(
        self, machine_id: str, *, name: str = UNSET, default_token_ttl: int = UNSET
    ) -> Machine:
        """Change a machine's name or default token lifetime; fields not given stay."""
        return await self._client._send(  # noqa: SLF001
            _calls.update_machine(machine_id, name=name, default_token_ttl=default_token_ttl)
        )

    async def delete(self, machine_id: str) -> DeletedMachine:
        """Delete a machine, its scopes, and revoke its tokens."""
        return await self._client._send(_calls.delete_machine(machine_id))  # noqa: SLF001

    async def get_secret_key(self, machine_id: str) -> MachineSecretKey:
        """The machine's current secret key."""
        return await self._client._send(_calls.get_secret_key(machine_id))  # noqa: SLF001

    async def rotate_secret_key(
        self, machine_id: str, *, previous_token_ttl: int
    ) -> MachineSecretKey:
        """A new secret key; the old one keeps working ``previous_token_ttl`` seconds."""
        return await self._client._send(  # noqa: SLF001
            _calls.rotate_secret_key(machine_id, previous_token_ttl=previous_token_ttl)
        )

    async def create_scope(self, machine_id: str, *, to_machine_id: str) -> MachineScope:
        """Allow ``machine_id`` to call ``to_machine_id``."""
        return await self._client._send(  # noqa: SLF001
            _calls.create_scope(machine_id, to_machine_id=to_machine_id)
        )

    async def delete_scope(self, machine_id: str, *, to_machine_id: str) -> DeletedMachineScope:
        """Stop ``machine_id`` from calling ``to_machine_id``."""
        return await self._client._send(  # noqa: SLF001
            _calls.delete_scope(machine_id, to_machine_id=to_machine_id)
        )


class M2MTokens:
    """``client.m2m_tokens``: mint (machine key), list, get, revoke and verify tokens."""

    def __init__(self, client: Gatepass) -> None:
        self._client = client

    def create(
        self,
        *,
        token_format: TokenFormat | None = None,
        seconds_until_expiration: float | None = None,
        claims: Mapping[str, Any] | None = None,
        min_remaining_ttl_seconds: int | None = None,
    ) -> M2MToken:
        """Mint a token as the client's machine; the bearer ``token`` is in this answer only."""
        return self._client._send(  # noqa: SLF001
            _calls.create_token(
                token_format=token_format,
                seconds_until_expiration=seconds_until_expiration,
                claims=claims,
                min_remaining_ttl_seconds=min_remaining_ttl_seconds,
            )
        )

    def list(
        self,
        *,
        subject: str,
        revoked: bool = False,
        expired: bool = False,
        limit: int = 10,
        offset: int = 0,
    ) -> M2MTokenList:
        """One page of ``subject``'s tokens, newest first; ``revoked``/``expired`` include those."""
        return self._client._send(  # noqa: SLF001
            _calls.list_tokens(
                subject=subject, revoked=revoked, expired=expired, limit=limit, offset=offset
            )
        )

    def iterate(
        self, *, subject: str, revoked: bool = False, expired: bool = False
    ) -> Iterator[M2MToken]:
        """Every token of ``subject``, fetching pages as needed."""
        offset = 0
        while True:
            page = self.list(
                subject=subject, revoked=revoked, expired=expired, limit=_PAGE, offset=offset
            )
            yield from page.m2m_tokens
            offset += len(page.m2m_tokens)
            if not page.m2m_tokens or offset >= page.total_count:
                return

    def get(self, token_id: str) -> M2MToken:
        """One token's record by its id (``mt_…``)."""
        return self._client._send(_calls.get_token(token_id))  # noqa: SLF001

    def revoke(self, token_id: str, *, revocation_reason: str | None = None) -> M2MToken:
        """Revoke a token; revoking again keeps the first reason."""
        return self._client._send(  # noqa: SLF001
            _calls.revoke_token(token_id, revocation_reason=revocation_reason)
        )

    def verify(self, token: str) -> M2MToken:
        """The record of a valid token; raises ``TokenVerificationError`` for every "no"."""
        return self._client._send(_calls.verify_token(token))  # noqa: SLF001

    def revocations(
        self, *, after: str = "0", limit: int | None = None, wait: int | None = None
    ) -> RevocationPage:
        """Revoked, unexpired token ids after the cursor ``after``; ``wait`` long-polls."""
        return self._client._send(  # noqa: SLF001
            _calls.revocations(after=after, limit=limit, wait=wait)
        )

    def jwks(self) -> dict[str, Any]:
        """The instance's public JWT signing keys (``{"keys": [...]}``)."""
        return self._client._send(_calls.jwks())  # noqa: SLF001


class AsyncM2MTokens:
    """``client.m2m_tokens`` of :class:`AsyncGatepass`; see :class:`M2MTokens`."""

    def __init__(self, client: AsyncGatepass) -> None:
        self._client = client

    async def create(
        self,
        *,
        token_format: TokenFormat | None = None,
        seconds_until_expiration: float | None = None,
        claims: Mapping[str, Any] | None = None,
        min_remaining_ttl_seconds: int | None = None,
    ) -> M2MToken:
        """Mint a token as the client's machine; the bearer ``token`` is in this answer only."""
        return await self._client._send(  # noqa: SLF001
            _calls.create_token(
                token_format=token_format,
                seconds_until_expiration=seconds_until_expiration,
                claims=claims,
                min_remaining_ttl_seconds=min_remaining_ttl_seconds,
            )
        )

    async def list(
        self,
        *,
        subject: str,
        revoked: bool = False,
        expired: bool = False,
        limit: int = 10,
        offset: int = 0,
    ) -> M2MTokenList:
        """One page of ``subject``'s tokens, newest first; ``revoked``/``expired`` include those."""
        return await self._client._send(  # noqa: SLF001
            _calls.list_tokens(
                subject=subject, revoked=revoked, expired=expired, limit=limit, offset=offset
            )
        )

    async def iterate(
        self, *, subject: str, revoked: bool = False, expired: bool = False
    ) -> AsyncIterator[M2MToken]:
        """Every token of ``subject``, fetching pages as needed."""
        offset = 0
        while True:
            page = await self.list(
                subject=subject, revoked=revoked, expired=expired, limit=_PAGE, offset=offset
            )
            for token in page.m2m_tokens:
                yield token
            offset += len(page.m2m_tokens)
            if not page.m2m_tokens or offset >= page.total_count:
                return

    async def get(self, token_id: str) -> M2MToken:
        """One token's record by its id (``mt_…``)."""
        return await self._client._send(_calls.get_token(token_id))  # noqa: SLF001

    async def revoke(self, token_id: str, *, revocation_reason: str | None = None) -> M2MToken:
        """Revoke a token; revoking again keeps the first reason."""
        return await self._client._send(  # noqa: SLF001
            _calls.revoke_token(token_id, revocation_reason=revocation_reason)
        )

    async def verify(self, token: str) -> M2MToken:
        """The record of a valid token; raises ``TokenVerificationError`` for every "no"."""
        return await self._client._send(_calls.verify_token(token))  # noqa: SLF001

    async def revocations(
        self, *, after: str = "0", limit: int | None = None, wait: int | None = None
    ) -> RevocationPage:
        """Revoked, unexpired token ids after the cursor ``after``; ``wait`` long-polls."""
        return await self._client._send(  # noqa: SLF001
            _calls.revocations(after=after, limit=limit, wait=wait)
        )

    async def jwks(self) -> dict[str, Any]:
        """The instance's public JWT signing keys (``{"keys": [...]}``)."""
        return await self._client._send(_calls.jwks())  # noqa: SLF001
