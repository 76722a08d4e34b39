"""The server's wiring: one object holding storage, services and clock for a process."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gatepass_server.config import Settings, load_master_key
from gatepass_server.domain.clock import Clock, SystemClock
from gatepass_server.domain.sealing import Sealer
from gatepass_server.observability import Metrics, logger
from gatepass_server.services.auth import KeyAuthenticator
from gatepass_server.services.instances import InstanceService
from gatepass_server.services.machines import MachineService
from gatepass_server.services.signing import SigningService
from gatepass_server.services.tokens import TokenService
from gatepass_server.storage.database import Database
from gatepass_server.storage.signing import SqlSigningKeyStore
from gatepass_server.storage.sql import SqlInstanceStore, SqlMachineStore, SqlTokenStore

if TYPE_CHECKING:
    from gatepass_server.services.instances import Bootstrap

__all__ = ["Runtime"]


@dataclass(slots=True)
class Runtime:
    """Everything a request handler or CLI command needs, built once per process."""

    settings: Settings
    database: Database
    clock: Clock
    instances: InstanceService
    machines: MachineService
    authenticator: KeyAuthenticator
    signing: SigningService
    tokens: TokenService
    metrics: Metrics = field(default_factory=Metrics)

    @classmethod
    def build(cls, settings: Settings, *, clock: Clock | None = None) -> Runtime:
        """Wire storage and services; opens no connection yet."""
        clock = clock or SystemClock()
        database = Database(settings.database_url)
        instance_store = SqlInstanceStore(database)
        machine_store = SqlMachineStore(database)
        sealer = Sealer(load_master_key(settings))
        signing = SigningService(SqlSigningKeyStore(database), sealer, clock)
        return cls(
            settings=settings,
            database=database,
            clock=clock,
            instances=InstanceService(instance_store, clock),
            machines=MachineService(machine_store, sealer, clock),
            authenticator=KeyAuthenticator(instance_store, machine_store, clock),
            signing=signing,
            tokens=TokenService(SqlTokenStore(database), machine_store, signing, sealer, clock),
        )

    async def prepare(self) -> Bootstrap | None:
        """Apply migrations and create the default instance on first start."""
        from gatepass_server.storage.schema import upgrade  # noqa: PLC0415 - Alembic is heavy

        await upgrade(self.database)
        bootstrap_key = self.settings.bootstrap_secret_key
        done = await self.instances.bootstrap(bootstrap_key)
        if (
            done is None
            and bootstrap_key is not None
            and not await self.authenticator.authenticate(
                bootstrap_key,
            )
        ):
            logger.warning(
                "bootstrap_key_ignored",
                reason="GATEPASS_BOOTSTRAP_SECRET_KEY only seeds a new database",
            )
        return done

    async def close(self) -> None:
        """Release connections."""
        await self.database.dispose()
