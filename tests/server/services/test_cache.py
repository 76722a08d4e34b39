"""The verification cache on its own: keeping, expiring, trusting and forgetting entries.

No storage here: each ``load`` is a stand-in that counts its calls, and time is a manual
monotonic clock, so every TTL and staleness edge is exact.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatepass_server.domain.changes import Change, ChangeKind
from gatepass_server.domain.machines import Machine, MachineSummary
from gatepass_server.domain.tokens import M2MToken, TokenFormat
from gatepass_server.services.cache import STALE_AFTER_SECONDS, VerifyCache
from gatepass_server.services.changes import POLL_SECONDS
from gatepass_server.services.interfaces import KeyOwner

if TYPE_CHECKING:
    from gatepass_server.services.cache import _Space

V = TypeVar("V")
K = TypeVar("K")

TTL: Final = 10.0
STALE_AFTER: Final = 3.0
START: Final = 1000.0


class ManualMonotonic:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        """The current reading."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds``."""
        self.now += seconds


@dataclass
class Loader:
    """Storage's stand-in: answers ``value`` and counts how often it was asked."""

    value: Any
    calls: int = 0

    async def __call__(self) -> Any:
        """One storage read."""
        self.calls += 1
        return self.value


@dataclass
class Node:
    """A cache and the clock it reads."""

    cache: VerifyCache
    monotonic: ManualMonotonic = field(default_factory=ManualMonotonic)


def _node(
    *,
    ttl: float = TTL,
    stale_after: float = STALE_AFTER,
    max_entries: int = 1000,
    synced: bool = True,
) -> Node:
    monotonic = ManualMonotonic()
    cache = VerifyCache(
        ttl_seconds=ttl,
        stale_after_seconds=stale_after,
        max_entries=max_entries,
        monotonic=monotonic,
    )
    if synced:
        cache.mark_synced()
    return Node(cache, monotonic)


def _token(token_id: str, *, version: int = 0) -> M2MToken:
    return M2MToken(
        id=token_id,
        instance_id="ins_1",
        subject="mch_1",
        token_format=TokenFormat.OPAQUE,
        claims=None,
        scopes=("mch_2",),
        expiration=2_000_000_000_000,
        revoked_at=None,
        revocation_reason=None,
        last_used_at=None,
        created_at=1_700_000_000_000,
        updated_at=1_700_000_000_000 + version,
    )


def _change(kind: ChangeKind | None, subject: str, target: str | None = None) -> Change:
    return Change(id=1, instance_id="ins_1", kind=kind, subject=subject, target=target)


async def _served(cache: VerifyCache, space: _Space[K, V], key: K) -> bool:
    """Whether the cache answers ``key`` without asking storage (and keeps nothing new)."""
    probe = Loader(None)
    await cache.through(space, key, probe)
    return probe.calls == 0


async def _token_served(cache: VerifyCache, token_digest: bytes) -> bool:
    """Whether the cache answers this token digest without asking storage."""
    probe = Loader(None)
    await cache.token_by_digest(token_digest, probe)
    return probe.calls == 0


# -- through: keeping and serving ----------------------------------------------------------


async def test_a_miss_loads_and_keeps() -> None:
    """A miss asks storage once and returns its answer; the answer is then kept."""
    node = _node()
    owner = KeyOwner("ins_1", "mch_1", None)
    load = Loader(owner)
    assert await node.cache.through(node.cache.keys, b"digest", load) == owner
    assert load.calls == 1
    assert await _served(node.cache, node.cache.keys, b"digest")


async def test_a_hit_does_not_load() -> None:
    """A kept entry is returned as is, without asking storage."""
    node = _node()
    owner = KeyOwner("ins_1", None, None)
    await node.cache.through(node.cache.keys, b"digest", Loader(owner))
    load = Loader(KeyOwner("ins_2", None, None))
    assert await node.cache.through(node.cache.keys, b"digest", load) == owner
    assert load.calls == 0


async def test_not_found_is_never_kept() -> None:
    """``None`` from storage is returned but not kept: every lookup asks again."""
    node = _node()
    load = Loader(None)
    for _ in range(3):
        assert await node.cache.through(node.cache.keys, b"unknown", load) is None
    assert load.calls == 3
    assert len(node.cache.keys) == 0


async def test_a_scope_that_does_not_exist_is_kept() -> None:
    """``False`` (no such scope) is an answer, not a miss: it is kept and served."""
    node = _node()
    load = Loader(value=False)
    for _ in range(3):
        assert await node.cache.through(node.cache.scopes, ("mch_1", "mch_2"), load) is False
    assert load.calls == 1


async def test_an_entry_is_served_until_just_before_its_deadline() -> None:
    """An entry kept at t is still served at t + TTL - epsilon."""
    node = _node(stale_after=1000.0)
    await node.cache.through(node.cache.jwks, "ins_1", Loader({"kid": "key"}))
    node.monotonic.advance(TTL - 0.001)
    assert await _served(node.cache, node.cache.jwks, "ins_1")


async def test_an_entry_expires_at_its_deadline() -> None:
    """At exactly t + TTL the entry is gone and storage is asked again."""
    node = _node(stale_after=1000.0)
    await node.cache.through(node.cache.jwks, "ins_1", Loader({"kid": "old"}))
    node.monotonic.advance(TTL)
    load = Loader({"kid": "new"})
    assert await node.cache.through(node.cache.jwks, "ins_1", load) == {"kid": "new"}
    assert load.calls == 1


# -- freshness -----------------------------------------------------------------------------


async def test_a_never_synced_cache_loads_every_time_and_keeps_nothing() -> None:
    """Before the change log was ever read, every lookup goes to storage."""
    node = _node(synced=False)
    assert not node.cache.fresh()
    load = Loader(KeyOwner("ins_1", None, None))
    for _ in range(3):
        await node.cache.through(node.cache.keys, b"digest", load)
    assert load.calls == 3
    node.cache.mark_synced()
    assert not await _served(node.cache, node.cache.keys, b"digest")


async def test_the_cache_is_fresh_until_just_before_stale_after() -> None:
    """Entries are served while the last sync is younger than ``stale_after``."""
    node = _node()
    await node.cache.through(node.cache.keys, b"digest", Loader(KeyOwner("ins_1", None, None)))
    node.monotonic.advance(STALE_AFTER - 0.001)
    assert node.cache.fresh()
    assert await _served(node.cache, node.cache.keys, b"digest")


async def test_a_stale_cache_loads_every_time_and_keeps_nothing() -> None:
    """From ``stale_after`` after the last sync, nothing is served or kept."""
    node = _node()
    await node.cache.through(node.cache.keys, b"digest", Loader(KeyOwner("ins_1", None, None)))
    node.monotonic.advance(STALE_AFTER)
    assert not node.cache.fresh()
    fresh_owner = KeyOwner("ins_1", None, 5)
    load = Loader(fresh_owner)
    for _ in range(3):
        assert await node.cache.through(node.cache.keys, b"digest", load) == fresh_owner
        assert await node.cache.through(node.cache.keys, b"other", load) == fresh_owner
    assert load.calls == 6
    assert len(node.cache.keys) == 1  # only the entry kept while fresh, and never served


async def test_mark_synced_after_being_stale_clears_everything() -> None:
    """Changes may have been pruned while stale: a resync starts from an empty cache."""
    node = _node()
    cache = node.cache
    await cache.through(cache.keys, b"digest", Loader(KeyOwner("ins_1", None, None)))
    await cache.through(cache.scopes, ("mch_1", "mch_2"), Loader(value=True))
    await cache.through(cache.jwks, "ins_1", Loader({}))
    await cache.token_by_digest(b"token", Loader(_token("mt_1")))
    node.monotonic.advance(STALE_AFTER)
    epoch = cache.epoch
    cache.mark_synced()
    assert cache.fresh()
    assert cache.epoch > epoch
    assert not await _served(cache, cache.keys, b"digest")
    assert not await _served(cache, cache.scopes, ("mch_1", "mch_2"))
    assert not await _served(cache, cache.jwks, "ins_1")
    assert not await _token_served(cache, b"token")


async def test_mark_synced_while_fresh_keeps_entries_and_restarts_the_window() -> None:
    """A sync in time keeps every entry and trusts them for another ``stale_after``."""
    node = _node()
    await node.cache.through(node.cache.keys, b"digest", Loader(KeyOwner("ins_1", None, None)))
    node.monotonic.advance(STALE_AFTER - 0.5)
    node.cache.mark_synced()
    node.monotonic.advance(STALE_AFTER - 0.5)
    assert await _served(node.cache, node.cache.keys, b"digest")


async def test_mark_unsynced_clears_and_stops_serving() -> None:
    """After ``mark_unsynced`` nothing is served or kept until the next sync."""
    node = _node()
    cache = node.cache
    await cache.through(cache.keys, b"digest", Loader(KeyOwner("ins_1", None, None)))
    cache.mark_unsynced()
    assert not cache.fresh()
    load = Loader(KeyOwner("ins_1", None, None))
    await cache.through(cache.keys, b"digest", load)
    await cache.through(cache.keys, b"digest", load)
    assert load.calls == 2
    cache.mark_synced()
    assert not await _served(cache, cache.keys, b"digest")


async def test_the_trust_window_counts_from_the_start_of_the_read() -> None:
    """A read that began at t and ended 1.5 s later vouches for the cache until t + stale_after.

    Regression (history checker, a node SIGSTOPped past the bound): the window used to start
    when the read ended, so a slow or frozen read stretched how long a stale answer could
    be given after a change acknowledged during the read.
    """
    node = _node()
    cache = node.cache
    await cache.through(cache.keys, b"digest", Loader(KeyOwner("ins_1", None, None)))
    since = cache.now()
    node.monotonic.advance(1.5)  # the read takes this long
    cache.mark_synced(since)
    node.monotonic.advance(STALE_AFTER - 1.5 - 0.001)
    assert await _served(cache, cache.keys, b"digest")
    node.monotonic.advance(0.001)
    assert not cache.fresh()
    assert not await _served(cache, cache.keys, b"digest")


def test_the_default_trust_window_is_the_documented_propagation_bound() -> None:
    """One poll period (1 s) plus 1 s to read the log: README's bound, not a second more.

    Regression: with 3 s, a node frozen for 2.5 s answered "valid" from its cache for a
    token revoked on the other node 2.2 s before the verify was sent.
    """
    assert STALE_AFTER_SECONDS == POLL_SECONDS + 1.0


# -- reads racing changes ------------------------------------------------------------------


async def test_a_load_that_races_an_apply_is_returned_but_not_kept() -> None:
    """A value read while a change was applied may be stale: it is returned, not kept."""
    node = _node()
    cache = node.cache
    owner = KeyOwner("ins_1", "mch_1", None)

    async def racing_load() -> KeyOwner:
        cache.apply([_change(ChangeKind.MACHINE_KEY_ROTATED, "mch_other")])
        return owner

    assert await cache.through(cache.keys, b"digest", racing_load) == owner
    assert not await _served(cache, cache.keys, b"digest")


async def test_a_token_load_that_races_an_apply_is_returned_but_not_kept() -> None:
    """The same for tokens: a lookup that overlapped a revocation keeps nothing."""
    node = _node()
    cache = node.cache
    token = _token("mt_1")

    async def racing_load() -> M2MToken:
        cache.apply([_change(ChangeKind.TOKEN_REVOKED, "mt_1", "mch_1")])
        return token

    assert await cache.token_by_digest(b"token", racing_load) == token
    assert not await _token_served(cache, b"token")
    assert len(cache.token_ids) == 0


async def test_a_load_that_races_mark_unsynced_is_not_kept() -> None:
    """A value read while the node lost the log is not kept once the log is back."""
    node = _node()
    cache = node.cache

    async def racing_load() -> bool:
        cache.mark_unsynced()
        cache.mark_synced()
        return True

    assert await cache.through(cache.scopes, ("mch_1", "mch_2"), racing_load) is True
    assert not await _served(cache, cache.scopes, ("mch_1", "mch_2"))


async def test_a_load_started_while_stale_is_not_kept_after_a_resync() -> None:
    """Trust is decided when the lookup starts: a resync during the read does not help."""
    node = _node(synced=False)
    cache = node.cache

    async def resyncing_load() -> KeyOwner:
        cache.mark_synced()
        return KeyOwner("ins_1", None, None)

    await cache.through(cache.keys, b"digest", resyncing_load)
    assert not await _served(cache, cache.keys, b"digest")


# -- bounds --------------------------------------------------------------------------------


async def test_max_entries_evicts_the_oldest_insertion() -> None:
    """A full space makes room by dropping the entry kept first, and only that one."""
    node = _node(max_entries=3)
    cache = node.cache
    for name in ("a", "b", "c"):
        await cache.through(cache.scopes, (name, name), Loader(value=True))
    await cache.through(cache.scopes, ("d", "d"), Loader(value=True))
    assert len(cache.scopes) == 3
    assert not await _served(cache, cache.scopes, ("a", "a"))
    for name in ("b", "c", "d"):
        assert await _served(cache, cache.scopes, (name, name))


async def test_a_hit_does_not_refresh_an_entry_s_age() -> None:
    """Reading an entry does not save it from eviction: eviction follows insertion."""
    node = _node(max_entries=2)
    cache = node.cache
    await cache.through(cache.keys, b"a", Loader(KeyOwner("ins_1", None, None)))
    await cache.through(cache.keys, b"b", Loader(KeyOwner("ins_1", None, None)))
    assert await _served(cache, cache.keys, b"a")
    await cache.through(cache.keys, b"c", Loader(KeyOwner("ins_1", None, None)))
    assert not await _served(cache, cache.keys, b"a")
    assert await _served(cache, cache.keys, b"b")
    assert await _served(cache, cache.keys, b"c")


async def test_token_spaces_are_bounded_too() -> None:
    """A full token space drops its oldest entry: that token is looked up again."""
    node = _node(max_entries=2)
    cache = node.cache
    for number in (1, 2, 3):
        await cache.token_by_digest(f"tok-{number}".encode(), Loader(_token(f"mt_{number}")))
    assert len(cache.token_ids) == 2
    assert len(cache.tokens) == 2
    assert not await _token_served(cache, b"tok-1")
    assert await _token_served(cache, b"tok-3")


# -- tokens --------------------------------------------------------------------------------


async def test_token_by_digest_keeps_digest_to_id_to_record() -> None:
    """A token found by its digest is kept under the digest (→ id) and the id (→ record)."""
    node = _node()
    cache = node.cache
    token = _token("mt_1")
    load = Loader(token)
    assert await cache.token_by_digest(b"token", load) == token
    assert await cache.token_by_digest(b"token", load) == token
    assert load.calls == 1
    assert len(cache.token_ids) == 1
    assert len(cache.tokens) == 1


async def test_an_unknown_token_is_never_kept() -> None:
    """A digest storage does not know is asked about every time."""
    node = _node()
    load = Loader(None)
    for _ in range(3):
        assert await node.cache.token_by_digest(b"bad", load) is None
    assert load.calls == 3
    assert len(node.cache.token_ids) == 0


async def test_a_revocation_makes_the_next_token_lookup_load_again() -> None:
    """TOKEN_REVOKED names only the id, yet the digest lookup no longer hits."""
    node = _node()
    cache = node.cache
    await cache.token_by_digest(b"token", Loader(_token("mt_1")))
    cache.apply([_change(ChangeKind.TOKEN_REVOKED, "mt_1", "mch_1")])
    revoked = _token("mt_1", version=1)
    load = Loader(revoked)
    assert await cache.token_by_digest(b"token", load) == revoked
    assert load.calls == 1
    assert await _token_served(cache, b"token")


async def test_a_revocation_of_another_token_keeps_this_one() -> None:
    """Revoking one token leaves every other token's entry in place."""
    node = _node()
    cache = node.cache
    await cache.token_by_digest(b"one", Loader(_token("mt_1")))
    await cache.token_by_digest(b"two", Loader(_token("mt_2")))
    cache.apply([_change(ChangeKind.TOKEN_REVOKED, "mt_2", "mch_1")])
    assert await _token_served(cache, b"one")
    assert not await _token_served(cache, b"two")


async def test_a_token_expires_at_its_deadline() -> None:
    """Token entries obey the same TTL as every other entry."""
    node = _node(stale_after=1000.0)
    await node.cache.token_by_digest(b"token", Loader(_token("mt_1")))
    node.monotonic.advance(TTL - 0.001)
    assert await _token_served(node.cache, b"token")
    node.monotonic.advance(0.001)
    assert not await _token_served(node.cache, b"token")


# -- apply: each kind drops exactly what it names ----------------------------------------

KEYS: Final = {
    b"sk-ins_1": KeyOwner("ins_1", None, None),
    b"sk-ins_2": KeyOwner("ins_2", None, None),
    b"ak-mch_1": KeyOwner("ins_1", "mch_1", None),
    b"ak-mch_2": KeyOwner("ins_1", "mch_2", None),
    b"ak-mch_3": KeyOwner("ins_2", "mch_3", None),
}
SCOPES: Final = {
    ("mch_1", "mch_2"): True,
    ("mch_2", "mch_1"): False,
    ("mch_2", "mch_4"): True,
    ("mch_3", "mch_4"): True,
}
JWKS: Final = ("ins_1", "ins_2")
TOKENS: Final = {b"tok-mt_1": "mt_1", b"tok-mt_2": "mt_2"}


async def _filled() -> VerifyCache:
    """A fresh cache holding every entry of KEYS, SCOPES, JWKS and TOKENS."""
    cache = _node(stale_after=1000.0).cache
    for key_digest, owner in KEYS.items():
        await cache.through(cache.keys, key_digest, Loader(owner))
    for pair, exists in SCOPES.items():
        await cache.through(cache.scopes, pair, Loader(exists))
    for instance_id in JWKS:
        await cache.through(cache.jwks, instance_id, Loader({"kid": instance_id}))
    for token_digest, token_id in TOKENS.items():
        await cache.token_by_digest(token_digest, Loader(_token(token_id)))
    return cache


def _every_label() -> set[str]:
    return (
        {f"key {d.decode()}" for d in KEYS}
        | {f"scope {a}>{b}" for a, b in SCOPES}
        | {f"jwks {i}" for i in JWKS}
        | {f"token {t}" for t in TOKENS.values()}
    )


async def _still_served(cache: VerifyCache) -> set[str]:
    """The labels of the entries the cache still answers without storage."""
    served: set[str] = set()
    for key_digest in KEYS:
        if await _served(cache, cache.keys, key_digest):
            served.add(f"key {key_digest.decode()}")
    for a, b in SCOPES:
        if await _served(cache, cache.scopes, (a, b)):
            served.add(f"scope {a}>{b}")
    for instance_id in JWKS:
        if await _served(cache, cache.jwks, instance_id):
            served.add(f"jwks {instance_id}")
    for token_digest, token_id in TOKENS.items():
        if await _token_served(cache, token_digest):
            served.add(f"token {token_id}")
    return served


@pytest.mark.parametrize(
    ("change", "dropped"),
    [
        pytest.param(
            _change(ChangeKind.TOKEN_REVOKED, "mt_1", "mch_1"),
            {"token mt_1"},
            id="token_revoked",
        ),
        pytest.param(
            _change(ChangeKind.MACHINE_DELETED, "mch_1"),
            {"key ak-mch_1", "scope mch_1>mch_2", "scope mch_2>mch_1"},
            id="machine_deleted-from-and-to",
        ),
        pytest.param(
            _change(ChangeKind.MACHINE_DELETED, "mch_4"),
            {"scope mch_2>mch_4", "scope mch_3>mch_4"},
            id="machine_deleted-only-a-target",
        ),
        pytest.param(
            _change(ChangeKind.MACHINE_KEY_ROTATED, "mch_1"),
            {"key ak-mch_1"},
            id="machine_key_rotated",
        ),
        pytest.param(
            _change(ChangeKind.INSTANCE_KEY_ROTATED, "ins_1"),
            {"key sk-ins_1"},
            id="instance_key_rotated",
        ),
        pytest.param(
            _change(ChangeKind.SCOPE_ADDED, "mch_2", "mch_1"),
            {"scope mch_2>mch_1"},
            id="scope_added",
        ),
        pytest.param(
            _change(ChangeKind.SCOPE_REMOVED, "mch_1", "mch_2"),
            {"scope mch_1>mch_2"},
            id="scope_removed",
        ),
        pytest.param(
            _change(ChangeKind.SCOPE_REMOVED, "mch_2", None),
            set(),
            id="scope_removed-without-target",
        ),
        pytest.param(
            _change(ChangeKind.SIGNING_KEY_ROTATED, "ins_2"),
            {"jwks ins_2"},
            id="signing_key_rotated",
        ),
        pytest.param(
            _change(ChangeKind.MACHINE_DELETED, "mch_9"),
            set(),
            id="naming-nothing-cached",
        ),
        pytest.param(_change(None, "anything"), _every_label(), id="unknown-kind"),
    ],
)
async def test_apply_drops_exactly_what_the_change_makes_untrue(
    change: Change, dropped: set[str]
) -> None:
    """Each kind forgets the entries it may have made untrue, and keeps all others."""
    cache = await _filled()
    assert await _still_served(cache) == _every_label()
    cache.apply([change])
    assert await _still_served(cache) == _every_label() - dropped


async def test_apply_bumps_the_epoch_once_per_change() -> None:
    """Each applied change moves the epoch, even one that names nothing cached."""
    cache = _node().cache
    epoch = cache.epoch
    cache.apply(
        [
            _change(ChangeKind.SCOPE_ADDED, "mch_1", "mch_2"),
            _change(ChangeKind.MACHINE_DELETED, "mch_9"),
        ],
    )
    assert cache.epoch == epoch + 2
    cache.apply([])
    assert cache.epoch == epoch + 2


async def test_clear_forgets_everything() -> None:
    """``clear`` drops every space's entries."""
    cache = await _filled()
    cache.clear()
    assert await _still_served(cache) == set()


# -- a model of what may be served ---------------------------------------------------------

MACHINES: Final = ("mch_1", "mch_2", "mch_3")
INSTANCES: Final = ("ins_1", "ins_2")
SUBJECTS: Final = (*MACHINES, *INSTANCES, *TOKENS.values())

Lookup = tuple[str, Any]

LOOKUPS: Final = st.one_of(
    st.tuples(st.just("key"), st.sampled_from(sorted(KEYS))),
    st.tuples(st.just("scope"), st.tuples(st.sampled_from(MACHINES), st.sampled_from(MACHINES))),
    st.tuples(st.just("jwks"), st.sampled_from(INSTANCES)),
    st.tuples(st.just("token"), st.sampled_from(sorted(TOKENS))),
    st.tuples(st.just("machine"), st.tuples(st.sampled_from(INSTANCES), st.sampled_from(MACHINES))),
)
SUBJECTS_OF: Final = {
    ChangeKind.TOKEN_REVOKED: tuple(TOKENS.values()),
    ChangeKind.MACHINE_DELETED: MACHINES,
    ChangeKind.MACHINE_UPDATED: MACHINES,
    ChangeKind.MACHINE_KEY_ROTATED: MACHINES,
    ChangeKind.INSTANCE_KEY_ROTATED: INSTANCES,
    ChangeKind.SCOPE_ADDED: MACHINES,
    ChangeKind.SCOPE_REMOVED: MACHINES,
    ChangeKind.SIGNING_KEY_ROTATED: INSTANCES,
}


@st.composite
def _changes(draw: st.DrawFn) -> Change:
    """A change of a known kind, mostly naming a subject of the kind's sort."""
    kind = draw(st.sampled_from(ChangeKind))
    subject = draw(st.sampled_from(SUBJECTS_OF[kind]) | st.sampled_from(SUBJECTS))
    target = draw(st.sampled_from([*MACHINES, None]))
    return Change(
        id=1,
        instance_id=draw(st.sampled_from(INSTANCES)),
        kind=kind,
        subject=subject,
        target=target,
    )


RESETS: Final = st.sampled_from(
    ["ttl passes", "resync after stale", "unsynced then synced", "unknown kind"],
)
CHANGE_BATCHES: Final = st.lists(_changes(), min_size=1, max_size=3)
OPERATIONS: Final = st.lists(
    # Lookups and changes are listed twice so that resets, which empty the model, are rarer.
    st.one_of(LOOKUPS, CHANGE_BATCHES, LOOKUPS, CHANGE_BATCHES, RESETS),
    max_size=40,
)
UNIVERSE: Final[tuple[Lookup, ...]] = (
    *(("key", d) for d in KEYS),
    *(("scope", (a, b)) for a in MACHINES for b in MACHINES),
    *(("jwks", i) for i in INSTANCES),
    *(("token", d) for d in TOKENS),
    *(("machine", (i, m)) for i in INSTANCES for m in MACHINES),
)


def _untrue_after(change: Change, entry: Lookup, value: Any) -> bool:
    """The rule, restated: whether ``change`` makes the cached ``entry`` untrustworthy."""
    space, key = entry
    kind, subject = change.kind, change.subject
    if space == "token":
        return kind is ChangeKind.TOKEN_REVOKED and value.id == subject
    if space == "key":
        machine_change = {ChangeKind.MACHINE_DELETED, ChangeKind.MACHINE_KEY_ROTATED}
        return (kind in machine_change and value.machine_id == subject) or (
            kind is ChangeKind.INSTANCE_KEY_ROTATED
            and value.machine_id is None
            and value.instance_id == subject
        )
    if space == "scope":
        scope_change = {ChangeKind.SCOPE_ADDED, ChangeKind.SCOPE_REMOVED}
        return (kind is ChangeKind.MACHINE_DELETED and subject in key) or (
            kind in scope_change and key == (subject, change.target)
        )
    if space == "machine":  # what minting reads: the lifetime and the scopes
        changed = {
            ChangeKind.MACHINE_UPDATED,
            ChangeKind.SCOPE_ADDED,
            ChangeKind.SCOPE_REMOVED,
        }
        return (kind in changed and key == (change.instance_id, subject)) or (
            kind is ChangeKind.MACHINE_DELETED
            and (key[1] == subject or subject in {m.id for m in value.scoped_machines})
        )
    return kind is ChangeKind.SIGNING_KEY_ROTATED and key == subject


async def _look_up(cache: VerifyCache, entry: Lookup, answer: Loader) -> Any:
    """Look ``entry`` up in its space, storage answering through ``answer``."""
    space, key = entry
    if space == "key":
        return await cache.through(cache.keys, key, answer)
    if space == "scope":
        return await cache.through(cache.scopes, key, answer)
    if space == "jwks":
        return await cache.through(cache.jwks, key, answer)
    if space == "machine":
        return await cache.through(cache.machines, key, answer)
    return await cache.token_by_digest(key, answer)


def _storage_answer(entry: Lookup, version: int) -> Loader:
    """What storage says about ``entry``: a value never seen before (told by ``version``)."""
    space, key = entry
    if space == "key":
        return Loader(KeyOwner(KEYS[key].instance_id, KEYS[key].machine_id, version))
    if space == "scope":
        return Loader(version % 2 == 0)
    if space == "jwks":
        return Loader({"kid": f"{key}-{version}"})
    if space == "machine":
        return Loader(_machine(*key, version=version))
    return Loader(_token(TOKENS[key], version=version))


def _machine(instance_id: str, machine_id: str, *, version: int) -> Machine:
    """A machine that may call another machine, told by ``version``."""
    callee = MACHINES[version % len(MACHINES)]
    summary = MachineSummary(callee, instance_id, callee, 3600, 0, 0)
    return Machine(machine_id, instance_id, machine_id, 3600 + version, 0, 0, (summary,))


async def _served_now(cache: VerifyCache) -> dict[Lookup, Any]:
    """Every entry of the universe the cache answers without storage, with its value."""
    served: dict[Lookup, Any] = {}
    for entry in UNIVERSE:
        probe = Loader(None)
        value = await _look_up(cache, entry, probe)
        if probe.calls == 0:
            served[entry] = value
    return served


@settings(deadline=None, max_examples=200)
@given(operations=OPERATIONS)
async def test_the_cache_serves_exactly_what_no_later_change_or_deadline_dropped(
    operations: list[Any],
) -> None:
    """For any lookups, changes and clock moves, the cache serves exactly the still-true."""
    node = _node(stale_after=1000.0)
    cache = node.cache
    model: dict[Lookup, Any] = {}  # what the cache may, and must, answer without storage
    versions = itertools.count()
    for operation in operations:
        if operation == "ttl passes":
            node.monotonic.advance(TTL)
            model.clear()
        elif operation == "resync after stale":
            node.monotonic.advance(1000.0)
            cache.mark_synced()
            model.clear()
        elif operation == "unsynced then synced":
            cache.mark_unsynced()
            cache.mark_synced()
            model.clear()
        elif operation == "unknown kind":
            cache.apply([_change(None, "anything")])
            model.clear()
        elif isinstance(operation, list):
            cache.apply(operation)
            for change in operation:
                for entry in [e for e, v in model.items() if _untrue_after(change, e, v)]:
                    del model[entry]
        else:
            answer = _storage_answer(operation, next(versions))
            value = await _look_up(cache, operation, answer)
            assert answer.calls == (0 if operation in model else 1), operation
            model[operation] = value
        assert await _served_now(cache) == model, operation
