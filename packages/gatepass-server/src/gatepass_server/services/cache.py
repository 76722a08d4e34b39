"""The verification cache: keys, tokens, scopes and JWKS held in memory between requests.

A warm verify reads nothing from storage (DESIGN.md, hot path). What makes that safe:

- every write that can turn a "yes" into a "no" appends to the change log, and each node
  applies the log to this cache (:mod:`gatepass_server.services.changes`): before the
  write is acknowledged on the writing node, and within the propagation bound elsewhere;
- an entry also expires after a short TTL, a backstop should a change ever be missed;
- the cache answers only while the log has been followed recently (:meth:`fresh`). If it
  cannot be read, every lookup goes to storage, which answers or fails with 503: the
  cache never vouches for a token on its own (SECURITY.md principle 1);
- a value read from storage is kept only if no change was applied while it was being
  read (:attr:`epoch`), so a read that raced a revocation cannot put the old value back;
- "not found" is never cached: a million distinct bad tokens cost no memory.

Times here are ``time.monotonic()``: a wall-clock jump neither pins nor flushes entries.
Token expiry is still checked on every verify against the one injected clock.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from gatepass_server.domain.changes import Change, ChangeKind

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping

    from gatepass_server.domain.machines import Machine
    from gatepass_server.domain.tokens import M2MToken
    from gatepass_server.services.interfaces import KeyOwner

__all__ = ["CACHE_TTL_SECONDS", "MAX_ENTRIES", "STALE_AFTER_SECONDS", "VerifyCache"]

CACHE_TTL_SECONDS: Final = 60.0
"""How long an entry lives at most, even if no change ever names it."""

STALE_AFTER_SECONDS: Final = 2.0
"""How long after the start of its last complete read of the change log a node stops
trusting its cache and asks storage for everything.

NOTE: this is what makes the documented propagation bound hold, "a change is in effect on
every node within 1 s (the poll period) plus the time to read the log": a change
acknowledged before a read began is in that read, so an answer from the cache can miss
only changes acknowledged less than this long before it. Counted from the read's start,
not its end, and checked when answering, so a process that was frozen (SIGSTOP, a VM
stall) or whose poll is overdue asks storage instead of answering from what it knew
before. It leaves the poll (1 s while a push channel is connected) 1 s to read the log."""

MAX_ENTRIES: Final = 100_000
"""Per kind of entry; the oldest entry makes room for a new one."""

K = TypeVar("K")
V = TypeVar("V")


class _Space(Generic[K, V]):
    """One kind of entry: a bounded map with a deadline per entry."""

    __slots__ = ("_entries", "_max_entries")

    def __init__(self, max_entries: int) -> None:
        self._entries: dict[K, tuple[V, float]] = {}
        self._max_entries = max_entries

    def get(self, key: K, now: float) -> V | None:
        found = self._entries.get(key)
        if found is None:
            return None
        value, deadline = found
        if now >= deadline:
            del self._entries[key]
            return None
        return value

    def put(self, key: K, value: V, deadline: float) -> None:
        entries = self._entries
        if key not in entries and len(entries) >= self._max_entries:
            del entries[next(iter(entries))]  # insertion order: the oldest goes
        entries[key] = (value, deadline)

    def drop(self, key: K) -> None:
        self._entries.pop(key, None)

    def drop_where(self, doomed: Callable[[K, V], bool]) -> None:
        for key in [k for k, (v, _) in self._entries.items() if doomed(k, v)]:
            del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class VerifyCache:
    """Everything a warm verify needs, invalidated by the change log."""

    def __init__(
        self,
        *,
        ttl_seconds: float = CACHE_TTL_SECONDS,
        stale_after_seconds: float = STALE_AFTER_SECONDS,
        max_entries: int = MAX_ENTRIES,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._stale_after = stale_after_seconds
        self._monotonic = monotonic
        self._synced_at: float | None = None
        self.epoch = 0
        """Bumped by every applied change and clear; a read that saw it move is not kept."""
        self.keys: _Space[bytes, KeyOwner] = _Space(max_entries)  # key digest → owner
        self.token_ids: _Space[bytes, str] = _Space(max_entries)  # opaque digest → token id
        self.tokens: _Space[str, M2MToken] = _Space(max_entries)  # token id → record
        self.scopes: _Space[tuple[str, str], bool] = _Space(max_entries)  # (from, to) → exists
        self.jwks: _Space[str, Mapping[str, Any]] = _Space(1024)  # instance → kid → public key
        # (instance, machine) → the machine, as minting reads it (lifetime, scopes)
        self.machines: _Space[tuple[str, str], Machine] = _Space(max_entries)

    # -- freshness -------------------------------------------------------------------------

    def fresh(self) -> bool:
        """Whether the change log was read recently enough for entries to be trusted."""
        return self._trusted(self._monotonic())

    def now(self) -> float:
        """The cache's monotonic reading: pass it to :meth:`mark_synced` as ``since``."""
        return self._monotonic()

    def mark_synced(self, since: float | None = None) -> None:
        """The change log has been read up to its end and applied.

        ``since`` is when that read began (:meth:`now` before it; default: now): whatever
        was acknowledged before it is in the cache, nothing after it may be.
        """
        if not self.fresh():
            # NOTE: changes may have been pruned while we could not read them: start over.
            self.clear()
        self._synced_at = self._monotonic() if since is None else since

    def mark_unsynced(self) -> None:
        """Stop trusting entries until the log has been read again (and drop them)."""
        self._synced_at = None
        self.clear()

    def _trusted(self, now: float) -> bool:
        return self._synced_at is not None and now - self._synced_at < self._stale_after

    # -- lookups ---------------------------------------------------------------------------

    def peek(self, space: _Space[K, V], key: K) -> V | None:
        """``space[key]`` if cached and trusted; never a storage read."""
        now = self._monotonic()
        return space.get(key, now) if self._trusted(now) else None

    def peek_token(self, token_digest: bytes) -> M2MToken | None:
        """The opaque token with this digest if cached and trusted; never a storage read."""
        now = self._monotonic()
        if not self._trusted(now):
            return None
        token_id = self.token_ids.get(token_digest, now)
        return None if token_id is None else self.tokens.get(token_id, now)

    async def through(
        self,
        space: _Space[K, V],
        key: K,
        load: Callable[[], Awaitable[V | None]],
    ) -> V | None:
        """``space[key]`` if cached and trusted, else ``load()`` (kept unless ``None``)."""
        found = self.peek(space, key)
        if found is not None:
            return found
        now = self._monotonic()
        trusted = self._trusted(now)
        epoch = self.epoch
        value = await load()
        if value is not None and trusted and epoch == self.epoch:
            space.put(key, value, now + self._ttl)
        return value

    async def token_by_digest(
        self,
        token_digest: bytes,
        load: Callable[[], Awaitable[M2MToken | None]],
    ) -> M2MToken | None:
        """An opaque token by its digest.

        Kept as digest → id → record, so that a revocation, which names the id, drops the
        record in one step.
        """
        found = self.peek_token(token_digest)
        if found is not None:
            return found
        now = self._monotonic()
        trusted = self._trusted(now)
        epoch = self.epoch
        token = await load()
        if token is not None and trusted and epoch == self.epoch:
            self.token_ids.put(token_digest, token.id, now + self._ttl)
            self.tokens.put(token.id, token, now + self._ttl)
        return token

    # -- invalidation ----------------------------------------------------------------------

    def apply(self, changes: Iterable[Change]) -> None:
        """Forget whatever the changes may have made untrue."""
        for change in changes:
            self.epoch += 1
            self._forget(change)

    def _forget(self, change: Change) -> None:
        subject = change.subject
        match change.kind:
            case ChangeKind.TOKEN_REVOKED:
                self.tokens.drop(subject)
            case ChangeKind.MACHINE_DELETED:
                self.keys.drop_where(lambda _, owner: owner.machine_id == subject)
                self.scopes.drop_where(lambda pair, _: subject in pair)
                self.machines.drop_where(
                    lambda key, machine: (
                        key[1] == subject or any(m.id == subject for m in machine.scoped_machines)
                    )
                )
            case ChangeKind.MACHINE_UPDATED:
                self.machines.drop((change.instance_id, subject))
            case ChangeKind.MACHINE_KEY_ROTATED:
                self.keys.drop_where(lambda _, owner: owner.machine_id == subject)
            case ChangeKind.INSTANCE_KEY_ROTATED:
                self.keys.drop_where(
                    lambda _, owner: owner.machine_id is None and owner.instance_id == subject,
                )
            case ChangeKind.SCOPE_ADDED | ChangeKind.SCOPE_REMOVED:
                self.scopes.drop((subject, change.target or ""))
                self.machines.drop((change.instance_id, subject))
            case ChangeKind.SIGNING_KEY_ROTATED:
                self.jwks.drop(subject)
            case None:  # a kind from a newer release: forget everything
                self.clear()

    def clear(self) -> None:
        """Forget everything."""
        self.epoch += 1
        for space in (self.keys, self.token_ids, self.tokens, self.scopes, self.machines):
            space.clear()
        self.jwks.clear()
