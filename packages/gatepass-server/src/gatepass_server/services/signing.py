"""JWT signing keys of an instance: lazy first key, signing, rotation and the JWKS.

Each instance has at most one active RS256 key. Its private key is stored PKCS#8 PEM,
sealed under the master key and bound to its ``kid`` (DESIGN.md, secrets at rest). A
process keeps the parsed private-key object of each instance's active key in memory. A
rotation on any node reaches it through the change log (:meth:`SigningService.apply`);
as a backstop it re-reads which key is active at most every
:data:`ACTIVE_KEY_REFRESH_SECONDS`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from gatepass_server.domain import jwt
from gatepass_server.domain.changes import ChangeKind
from gatepass_server.errors import NotFound

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    from gatepass_server.domain.changes import Change
    from gatepass_server.domain.clock import Clock
    from gatepass_server.domain.sealing import Sealer

__all__ = [
    "ACTIVE_KEY_REFRESH_SECONDS",
    "SigningKeyStore",
    "SigningService",
    "StoredSigningKey",
]

ACTIVE_KEY_REFRESH_SECONDS: Final = 5.0
"""How long a process signs with the active key it loaded before asking storage again."""

_INSTANCE_ID_LENGTH: Final = 31


@dataclass(frozen=True, slots=True)
class StoredSigningKey:
    """A signing key as storage keeps it: the private key only sealed."""

    kid: str
    instance_id: str
    algorithm: str
    sealed_private_key: bytes
    public_jwk: dict[str, str]
    created_at: int
    retired_at: int | None


class SigningKeyStore(Protocol):
    """The ``signing_keys`` table, each call one transaction."""

    async def active_key(self, instance_id: str) -> StoredSigningKey | None:
        """The key an instance signs with now, if it has one."""
        ...

    async def ensure_active_key(self, key: StoredSigningKey) -> StoredSigningKey | None:
        """Store ``key`` unless the instance already has an active key; return the winner.

        ``None`` if the instance does not exist.
        """
        ...

    async def add_key(self, key: StoredSigningKey, *, now_ms: int) -> bool:
        """Make ``key`` active and retire the previous one; ``False`` if no such instance."""
        ...

    async def published_keys(self, instance_id: str, now_ms: int) -> list[StoredSigningKey]:
        """The active key, then each retired key that signed a token not yet expired."""
        ...


@dataclass(frozen=True, slots=True)
class _Loaded:
    """An instance's active key, parsed, and when (monotonic seconds) we last checked it."""

    kid: str
    private_key: RSAPrivateKey
    checked_at: float


class SigningService:
    """Signs JWT-format M2M tokens with the instance's active key and publishes the JWKS."""

    def __init__(
        self,
        store: SigningKeyStore,
        sealer: Sealer,
        clock: Clock,
        *,
        refresh_seconds: float = ACTIVE_KEY_REFRESH_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._sealer = sealer
        self._clock = clock
        self._refresh_seconds = refresh_seconds
        # NOTE: a monotonic clock, not the (injectable) wall clock: a wall-clock jump must
        # neither pin a stale key nor force a reload per token (SECURITY.md, faults).
        self._monotonic = monotonic
        self._active: dict[str, _Loaded] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def sign(self, instance_id: str, payload: dict[str, Any]) -> tuple[str, str]:
        """``(kid, compact JWS)`` of ``payload`` under the instance's active key.

        The instance's first key is created here, on first use.
        """
        loaded = self._active.get(instance_id)
        if loaded is None or self._monotonic() - loaded.checked_at >= self._refresh_seconds:
            loaded = await self._refresh(instance_id)
        return loaded.kid, jwt.sign(loaded.private_key, loaded.kid, payload)

    async def jwks(self, instance_id: str) -> list[dict[str, str]]:
        """The public JWKs a verifier needs now: the active key and still-relevant retired ones.

        Reading the JWKS never creates a key: an instance that has not signed yet has none.
        """
        keys = await self._store.published_keys(instance_id, self._clock.now_ms())
        return [dict(key.public_jwk) for key in keys]

    async def rotate(self, instance_id: str) -> str:
        """Make a new key active and return its ``kid``.

        The old key signs nothing more but stays in the JWKS until every token it signed
        has expired.
        """
        _require_instance_id(instance_id)
        fresh = await asyncio.to_thread(jwt.generate_signing_key)
        async with self._lock(instance_id):
            if not await self._store.add_key(self._stored(instance_id, fresh), now_ms=self._now()):
                raise NotFound("Instance not found")
            self._active[instance_id] = _Loaded(fresh.kid, fresh.private_key, self._monotonic())
        return fresh.kid

    def apply(self, changes: Sequence[Change]) -> None:
        """Drop the loaded active key of instances whose keys were rotated on any node."""
        for change in changes:
            if change.kind is ChangeKind.SIGNING_KEY_ROTATED or change.kind is None:
                self._active.pop(change.subject, None)

    # -- internals ------------------------------------------------------------------------

    def _now(self) -> int:
        return self._clock.now_ms()

    def _lock(self, instance_id: str) -> asyncio.Lock:
        lock = self._locks.get(instance_id)
        if lock is None:
            lock = self._locks[instance_id] = asyncio.Lock()
        return lock

    def _stored(self, instance_id: str, key: jwt.SigningKey) -> StoredSigningKey:
        return StoredSigningKey(
            kid=key.kid,
            instance_id=instance_id,
            algorithm=jwt.ALGORITHM,
            sealed_private_key=self._sealer.seal(jwt.private_key_pem(key.private_key), key.kid),
            public_jwk=key.public_jwk,
            created_at=self._now(),
            retired_at=None,
        )

    async def _refresh(self, instance_id: str) -> _Loaded:
        """Ask storage which key is active (creating the first one), reusing a parsed key."""
        _require_instance_id(instance_id)
        # NOTE: one refresh per instance at a time, so that concurrent first signs in this
        # process generate one RSA key, not one each; across nodes the store decides.
        async with self._lock(instance_id):
            cached = self._active.get(instance_id)
            if cached is not None and self._monotonic() - cached.checked_at < self._refresh_seconds:
                return cached
            stored = await self._store.active_key(instance_id)
            if stored is None:
                stored = await self._create_first_key(instance_id)
            now = self._monotonic()
            if cached is not None and cached.kid == stored.kid:
                loaded = _Loaded(cached.kid, cached.private_key, now)
            else:
                pem = self._sealer.open(stored.sealed_private_key, stored.kid)
                loaded = _Loaded(stored.kid, jwt.load_private_key(pem), now)
            self._active[instance_id] = loaded
            return loaded

    async def _create_first_key(self, instance_id: str) -> StoredSigningKey:
        fresh = await asyncio.to_thread(jwt.generate_signing_key)
        winner = await self._store.ensure_active_key(self._stored(instance_id, fresh))
        if winner is None:
            raise NotFound("Instance not found")
        return winner


def _require_instance_id(instance_id: str) -> None:
    """Ids that cannot exist are not looked up (nor can odd bytes reach the database)."""
    body = instance_id[4:]
    if not (
        instance_id.startswith("ins_")
        and len(instance_id) == _INSTANCE_ID_LENGTH
        and body.isascii()
        and body.isalnum()
    ):
        raise NotFound("Instance not found")
