"""SQLite full: verify keeps working, writes answer 503, nothing is half-written.

The disk is "full" through ``PRAGMA max_page_count``, set on every connection of the
server's own engine by a ``connect`` listener the test adds (and the pool is emptied so
that every connection gets it): the database file cannot grow by a single page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from faults_support import (
    assert_unavailable,
    http_client,
    mint,
    report,
    seed,
    started_runtime,
    verify,
)
from sqlalchemy import event, select, text

from gatepass_server.storage.tables import changes, m2m_tokens
from helpers import auth, storage_snapshot

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    import httpx

    from gatepass_server.config import Settings
    from gatepass_server.runtime import Runtime

MAX_FILL_WRITES: Final = 2000
"""Writes that may still fit in the pages already there, before the first 503."""


class PageCap:
    """``PRAGMA max_page_count`` on every new connection of an engine, while set."""

    def __init__(self, runtime: Runtime) -> None:
        self.pages: int | None = None
        self._engine = runtime.database.engine
        event.listen(self._engine.sync_engine, "connect", self._on_connect)

    def _on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        if self.pages is not None:
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA max_page_count={int(self.pages)}")
            cursor.close()

    async def cap(self, pages: int | None) -> None:
        """Cap the file at ``pages`` pages (``None``: no cap), on every connection."""
        self.pages = pages
        await self._engine.dispose()  # NOTE: pooled connections were opened uncapped

    async def current_pages(self) -> int:
        """The file's size in pages now."""
        async with self._engine.connect() as conn:
            return int((await conn.execute(text("PRAGMA page_count"))).scalar_one())


async def _fill(send: Callable[[int], Awaitable[httpx.Response]]) -> tuple[int, httpx.Response]:
    """Send writes until one is refused; how many fitted in the pages there, and the refusal.

    Each table fills its own pages: a mint refused does not mean a machine will be.
    """
    for fitted in range(MAX_FILL_WRITES):
        response = await send(fitted)
        if response.status_code not in {200, 201}:
            return fitted, response
    msg = f"{MAX_FILL_WRITES} writes fitted in a capped file"
    raise AssertionError(msg)


async def test_sqlite_full_keeps_verify_working_and_refuses_writes_whole(
    tmp_path: Path, fault_settings: Callable[..., Settings], bootstrap_key: str
) -> None:
    """Capped file: verifies answer 200, writes 503 + Retry-After with storage unchanged.

    Cached, uncached and JWT verifies all work; a revoke applies whole or not at all; every
    write works again once space returns.
    """
    url = f"sqlite:///{tmp_path / 'full.db'}"
    async with started_runtime(fault_settings(url)) as runtime, http_client(runtime) as client:
        seeded = await seed(client, bootstrap_key)
        assert (await verify(client, seeded.receiver_key, seeded.token)).status_code == 200
        cold = await mint(client, seeded.caller_key, "opaque")
        jwt = await mint(client, seeded.caller_key, "jwt")

        pages = PageCap(runtime)
        await pages.cap(await pages.current_pages())
        minted, refused = await _fill(
            lambda _i: client.post(
                "/v1/m2m_tokens", json={"token_format": "opaque"}, headers=auth(seeded.caller_key)
            ),
        )
        assert_unavailable(refused)
        created, refused = await _fill(
            lambda i: client.post(
                "/v1/machines",
                json={"name": f"filler {i}", "scoped_machines": [seeded.receiver_id]},
                headers=auth(bootstrap_key),
            ),
        )
        assert_unavailable(refused)

        before = await storage_snapshot(runtime)
        writes = [
            await client.post(
                "/v1/m2m_tokens", json={"token_format": "opaque"}, headers=auth(seeded.caller_key)
            ),
            await client.post(
                "/v1/m2m_tokens", json={"token_format": "jwt"}, headers=auth(seeded.caller_key)
            ),
            await client.post(
                "/v1/machines",
                json={"name": "no room", "scoped_machines": [seeded.receiver_id]},
                headers=auth(bootstrap_key),
            ),
        ]
        for response in writes:
            assert_unavailable(response)
        assert await storage_snapshot(runtime) == before, "a refused write left something"

        # Reads need no new page: warm, cold and JWT verifies all answer.
        assert (await verify(client, seeded.receiver_key, seeded.token)).status_code == 200
        assert (await verify(client, seeded.receiver_key, cold["token"])).status_code == 200
        assert (await verify(client, seeded.receiver_key, jwt["token"])).status_code == 200
        assert (await client.get("/readyz")).status_code == 200

        # A revoke either applies whole (row and change-log entry) or not at all.
        revoke = await client.post(
            f"/v1/m2m_tokens/{cold['id']}/revoke", headers=auth(bootstrap_key)
        )
        assert revoke.status_code in {200, 503}, revoke.text
        async with runtime.database.read() as conn:
            revoked_at = (
                await conn.execute(
                    select(m2m_tokens.c.revoked_at).where(m2m_tokens.c.id == cold["id"])
                )
            ).scalar_one()
            logged = (
                await conn.execute(select(changes.c.id).where(changes.c.subject == cold["id"]))
            ).all()
        assert (revoked_at is not None) == bool(logged) == (revoke.status_code == 200)
        expected = 404 if revoke.status_code == 200 else 200
        assert (await verify(client, seeded.receiver_key, cold["token"])).status_code == expected

        await pages.cap(None)
        await mint(client, seeded.caller_key, "opaque")
        revoke = await client.post(
            f"/v1/m2m_tokens/{cold['id']}/revoke", headers=auth(bootstrap_key)
        )
        assert revoke.status_code == 200, revoke.text
        assert (await verify(client, seeded.receiver_key, cold["token"])).status_code == 404
    report("sqlite full", mints_that_fitted=minted, machines_that_fitted=created)
