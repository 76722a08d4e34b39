"""Instances (tenants): bootstrap, create, list, rotate the admin key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gatepass_server.domain.instances import Instance, InstanceKey
from gatepass_server.domain.keys import (
    SecretKind,
    digest,
    is_well_formed,
    kind_of,
    new_instance_id,
)
from gatepass_server.errors import ConfigurationError, NotFound
from gatepass_server.services.interfaces import NewSecret
from gatepass_server.services.minting import hint_of, mint_secret

if TYPE_CHECKING:
    import builtins

    from gatepass_server.domain.clock import Clock
    from gatepass_server.services.interfaces import InstanceStore

__all__ = ["Bootstrap", "CreatedInstance", "InstanceService"]

DEFAULT_INSTANCE_NAME = "default"


@dataclass(frozen=True, slots=True)
class CreatedInstance:
    """A new instance and the plaintext of its first ``sk_`` key (shown once)."""

    instance: Instance
    secret_key: str = field(repr=False)  # NOTE: a repr may be logged (SECURITY.md 3)


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """What first start did: the default instance, and its key if we generated it."""

    instance: Instance
    generated_secret_key: str | None = field(repr=False)


class InstanceService:
    """Tenants and their admin keys."""

    def __init__(self, store: InstanceStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def bootstrap(self, secret_key: str | None) -> Bootstrap | None:
        """Create the default instance on first start; ``None`` when one already exists.

        ``secret_key`` (``GATEPASS_BOOTSTRAP_SECRET_KEY``) seeds its key so a deployment
        or a test knows it in advance; otherwise one is generated and returned once.
        """
        if await self._store.list_instances():
            return None
        kind = SecretKind.INSTANCE_TEST
        if secret_key is not None:
            claimed = kind_of(secret_key)
            if (
                claimed is None
                or not claimed.is_instance_key
                or not is_well_formed(
                    secret_key,
                    claimed,
                )
            ):
                raise ConfigurationError(
                    "GATEPASS_BOOTSTRAP_SECRET_KEY is not a well-formed sk_test_/sk_live_ key; "
                    "make one with `gatepass-server instances generate-key`",
                )
            plaintext = secret_key
            stored = NewSecret(digest=digest(secret_key), sealed=b"", hint=hint_of(secret_key))
        else:
            plaintext, stored = mint_secret(kind)
        instance = Instance(
            id=new_instance_id(),
            name=DEFAULT_INSTANCE_NAME,
            created_at=self._clock.now_ms(),
        )
        await self._store.create_instance(instance, stored)
        return Bootstrap(instance, None if secret_key is not None else plaintext)

    async def create(self, name: str, *, live: bool = False) -> CreatedInstance:
        """Create another tenant with its first key."""
        kind = SecretKind.INSTANCE_LIVE if live else SecretKind.INSTANCE_TEST
        plaintext, stored = mint_secret(kind)
        instance = Instance(id=new_instance_id(), name=name, created_at=self._clock.now_ms())
        await self._store.create_instance(instance, stored)
        return CreatedInstance(instance, plaintext)

    async def list(self) -> builtins.list[Instance]:
        """All tenants, oldest first."""
        return await self._store.list_instances()

    async def default(self) -> Instance:
        """The oldest instance: what the CLI acts on unless told otherwise."""
        found = await self._store.list_instances()
        if not found:
            # NOTE: `db upgrade` only migrates; the default instance comes from `serve`.
            raise NotFound(
                "No instance exists yet; start `gatepass-server serve` once "
                "or run `gatepass-server instances create NAME`",
            )
        return found[0]

    async def keys(self, instance_id: str) -> builtins.list[InstanceKey]:
        """The live keys of an instance (hints only)."""
        return await self._store.list_instance_keys(instance_id, self._clock.now_ms())

    async def rotate_key(
        self,
        instance_id: str,
        *,
        grace_seconds: int = 0,
        live: bool = False,
    ) -> str:
        """Issue a new ``sk_`` key; the others stop working after ``grace_seconds``."""
        kind = SecretKind.INSTANCE_LIVE if live else SecretKind.INSTANCE_TEST
        plaintext, stored = mint_secret(kind)
        now = self._clock.now_ms()
        if not await self._store.rotate_instance_key(
            instance_id,
            stored,
            now,
            now + grace_seconds * 1000,
        ):
            raise NotFound("Instance not found")
        return plaintext
