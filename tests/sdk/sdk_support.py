"""Helpers for the SDK's tests."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from gatepass import AsyncGatepass, Gatepass

if TYPE_CHECKING:
    from gatepass_server.domain.clock import FixedClock

C = TypeVar("C", Gatepass, AsyncGatepass)


def on_clock(client: C, clock: FixedClock) -> C:
    """``client`` judging token expiry by the server's injected clock, not the wall clock."""
    client._authenticator._v.clock = lambda: clock.now_ms() / 1000
    return client


def bearer(token: str | None) -> dict[str, str]:
    """Request headers carrying ``token`` as a bearer token."""
    return {"Authorization": f"Bearer {token}"}
