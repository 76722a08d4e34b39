"""The revocation feed (CONTRACT.md §7): revoked token ids after a cursor, by long poll.

An SDK that verifies JWTs locally cannot ask the server about each token; it follows this
feed instead and refuses the ids it lists. Only revocations of tokens that have not expired
are listed: an expired token fails a local ``exp`` check anyway.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Final

from gatepass_server.services.auth import MachinePrincipal

if TYPE_CHECKING:
    from gatepass_server.domain.changes import Revocation, RevocationPage
    from gatepass_server.domain.clock import Clock
    from gatepass_server.services.auth import Principal
    from gatepass_server.services.changes import ChangeFollower, ChangeLog

__all__ = ["DEFAULT_FEED_LIMIT", "MAX_FEED_LIMIT", "MAX_WAIT_SECONDS", "RevocationFeed"]

DEFAULT_FEED_LIMIT: Final = 100
MAX_FEED_LIMIT: Final = 1000
MAX_WAIT_SECONDS: Final = 20
"""A long poll is answered after this long at most, with whatever there is (maybe nothing)."""


class RevocationFeed:
    """Pages of revocations, waiting for the next one when there is none yet."""

    def __init__(self, log: ChangeLog, follower: ChangeFollower, clock: Clock) -> None:
        self._log = log
        self._follower = follower
        self._clock = clock

    async def page(
        self,
        caller: Principal,
        *,
        after: int,
        limit: int,
        wait_seconds: float,
    ) -> RevocationPage:
        """Revocations after ``after``; if there are none, wait up to ``wait_seconds``.

        An instance key sees the instance's revocations; a machine key sees those of the
        tokens it could be asked to accept (it is in their scopes) or that it minted.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while True:
            changed = self._follower.changed()  # taken before reading: no wake-up is missed
            page = await self._log.revocations_after(
                caller.instance_id,
                after,
                limit=limit,
                now_ms=self._clock.now_ms(),
            )
            if isinstance(caller, MachinePrincipal):
                visible = tuple(r for r in page.revocations if _concerns(r, caller.machine_id))
                page = dataclasses.replace(page, revocations=visible)
            remaining = deadline - loop.time()
            if page.revocations or page.has_more or remaining <= 0:
                return page
            after = page.cursor
            try:
                async with asyncio.timeout(remaining):
                    await changed.wait()
            except TimeoutError:
                return page


def _concerns(revocation: Revocation, machine_id: str) -> bool:
    return revocation.subject == machine_id or machine_id in revocation.scopes
