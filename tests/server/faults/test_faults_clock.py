"""A wall-clock jump: caches, staleness checks and limiters run on ``time.monotonic()``.

Token expiry is wall-clock by design (the server's injected ``Clock``, the SDK's ``clock``);
every lifetime of a cache entry and every fail-closed timer is monotonic, so a jump of the
wall clock, forward or backward, neither pins nor flushes a cached answer nor makes a stale
cache look fresh. The jumps here are ``time.time``/``time.time_ns`` patched by a day.
"""

from __future__ import annotations

import ast
import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

from faults_support import http_client, report, seed, started_runtime, verify

import gatepass
import gatepass_server
from gatepass._auth import Verification, VerificationOptions
from gatepass._models import RevocationPage
from gatepass._state import AuthReason, RequestState
from gatepass_server.services.cache import VerifyCache
from helpers import auth

if TYPE_CHECKING:
    from collections.abc import Callable

    import pytest

    from gatepass_server.config import Settings

DAY_SECONDS: Final = 86_400
SHORT_SECONDS: Final = 0.2
"""A cache lifetime or staleness bound short enough to outlive in a test."""
SERVER_ROOT: Final = Path(gatepass_server.__file__).parent
SDK_ROOT: Final = Path(gatepass.__file__).parent
TIMED_MODULES: Final = (
    SERVER_ROOT / "services" / "cache.py",
    SERVER_ROOT / "services" / "changes.py",
    SERVER_ROOT / "services" / "ratelimit.py",
    SERVER_ROOT / "services" / "revocations.py",
    SERVER_ROOT / "storage" / "notify.py",
    SDK_ROOT / "_auth.py",
    SDK_ROOT / "_jwt.py",
    SDK_ROOT / "_provider.py",
)
WALL_CLOCK_BY_DESIGN: Final = {
    # The SDK's ``clock`` judges token expiry (Unix seconds, as ``exp`` is).
    ("_auth.py", "time.time"): 1,
}


class WallClock:
    """``time.time`` and ``time.time_ns`` shifted by ``offset`` seconds."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = 0.0
        real, real_ns = time.time, time.time_ns
        monkeypatch.setattr(time, "time", lambda: real() + self.offset)
        monkeypatch.setattr(time, "time_ns", lambda: real_ns() + int(self.offset * 1e9))

    def jump(self, seconds: float) -> None:
        """Move the wall clock by ``seconds`` (negative: back)."""
        self.offset += seconds


def _wall_clock_reads(path: Path) -> dict[str, int]:
    """``time.time``, ``time.time_ns``, ``datetime.now``/``utcnow`` and bare ``time()`` uses."""
    tree = ast.parse(path.read_text())
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            dotted = f"{node.value.id}.{node.attr}"
            if dotted in {"time.time", "time.time_ns", "datetime.now", "datetime.utcnow"}:
                name = dotted
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module == "time"
            and any(alias.name in {"time", "time_ns"} for alias in node.names)
        ):
            name = "from time import time"
        if name is not None:
            found[name] = found.get(name, 0) + 1
    return found


def test_caches_and_timers_read_no_wall_clock_but_the_designated_one() -> None:
    """Every wall-clock read in the cache, follower, limiter and SDK modules is listed.

    A new ``time.time()`` in one of them fails here: it must be ``time.monotonic()``, or,
    if it judges a token's expiry, go through the injected clock and be listed above.
    """
    for path in TIMED_MODULES:
        reads = _wall_clock_reads(path)
        allowed = {name: n for (file, name), n in WALL_CLOCK_BY_DESIGN.items() if file == path.name}
        assert reads == allowed, f"{path.name} reads the wall clock: {reads}"


def test_server_cache_entries_and_freshness_ignore_wall_clock_jumps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A day forward or back: entries stay, the cache stays fresh; monotonic time ends both."""
    wall = WallClock(monkeypatch)
    cache = VerifyCache(ttl_seconds=SHORT_SECONDS * 2, stale_after_seconds=SHORT_SECONDS)
    cache.mark_synced()
    cache.scopes.put(("mch_a", "mch_b"), value=True, deadline=cache.now() + SHORT_SECONDS * 2)
    for jump in (DAY_SECONDS, -2 * DAY_SECONDS):
        wall.jump(jump)
        assert cache.fresh()
        assert cache.peek(cache.scopes, ("mch_a", "mch_b")) is True
    time.sleep(SHORT_SECONDS * 1.5)  # monotonic time passes; the wall clock says "a day ago"
    assert not cache.fresh(), "a wall clock set back kept a stale cache trusted"
    cache.mark_synced()
    time.sleep(SHORT_SECONDS)
    cache.mark_synced()
    assert cache.peek(cache.scopes, ("mch_a", "mch_b")) is None  # cleared when it went stale


async def test_server_token_expiry_follows_the_wall_clock_but_the_cache_does_not(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    fault_settings: Callable[..., Settings],
    bootstrap_key: str,
) -> None:
    """On the system clock a jump past ``exp`` expires a cached token, and back revives it.

    The verify cache and the change follower stay fresh through every jump.
    """
    wall = WallClock(monkeypatch)
    url = f"sqlite:///{tmp_path / 'clock.db'}"
    async with started_runtime(fault_settings(url)) as runtime, http_client(runtime) as client:
        seeded = await seed(client, bootstrap_key)
        short = await client.post(
            "/v1/m2m_tokens",
            json={"seconds_until_expiration": 600},
            headers=auth(seeded.caller_key),
        )
        assert short.status_code == 201, short.text
        token = short.json()["token"]
        assert (await verify(client, seeded.receiver_key, token)).status_code == 200
        assert runtime.cache.peek_token(_digest(token)) is not None

        wall.jump(DAY_SECONDS)
        assert runtime.cache.fresh()
        assert (await verify(client, seeded.receiver_key, token)).status_code == 404  # expired
        wall.jump(-DAY_SECONDS)
        assert (await verify(client, seeded.receiver_key, token)).status_code == 200
        wall.jump(-DAY_SECONDS)
        await asyncio.sleep(1.5)  # a few polls of the follower on a clock set back a day
        assert runtime.cache.fresh()
        assert runtime.cache.peek_token(_digest(token)) is not None
        assert (await verify(client, seeded.receiver_key, seeded.token)).status_code == 200
        revoked = await client.post(
            f"/v1/m2m_tokens/{short.json()['id']}/revoke", headers=auth(bootstrap_key)
        )
        assert revoked.status_code == 200, revoked.text
        assert (await verify(client, seeded.receiver_key, token)).status_code == 404
    report("wall clock jump (server)", jumps_s=DAY_SECONDS)


def _digest(token: str) -> bytes:
    from gatepass_server.domain.keys import digest  # noqa: PLC0415

    return digest(token)


def test_sdk_cached_answers_and_feed_trust_ignore_wall_clock_jumps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SDK: a cached answer lives its monotonic TTL whatever the wall clock does.

    Expiry follows the wall clock; the revocation feed's trust is counted on the monotonic
    clock.
    """
    wall = WallClock(monkeypatch)
    options = VerificationOptions(token_cache_ttl=SHORT_SECONDS * 2)
    verification = Verification(options, clock=lambda: time.time())  # noqa: PLW0108 - read the patched one
    expiration_ms = int((time.time() + 3600) * 1000)
    state = RequestState.authenticated(
        subject="mch_sender",
        scopes=("mch_receiver",),
        claims=None,
        token_id="mt_" + "1" * 32,
        expiration=expiration_ms,
    )
    verification.feed_page(RevocationPage(data=(), cursor="", has_more=False))
    trusted_until = verification.revocations.trusted_until
    assert trusted_until <= time.monotonic() + options.max_feed_staleness
    verification._remember(verification.opaque, "tok", state, expiration_ms, expiration_ms)

    wall.jump(2 * 3600)  # past the token's expiry
    answer = verification.cached(verification.opaque, "tok", None)
    assert answer is not None
    assert answer.reason is AuthReason.TOKEN_EXPIRED
    wall.jump(-2 * 3600 - DAY_SECONDS)  # a day before it was minted: still cached, valid
    assert verification.cached(verification.opaque, "tok", None) is state
    assert verification.following
    assert verification.revocations.trusted_until == trusted_until  # untouched by jumps
    time.sleep(SHORT_SECONDS * 2.5)
    assert verification.cached(verification.opaque, "tok", None) is None  # its TTL is over
