"""Checking a recorded history of concurrent operations against SECURITY.md's safety rules.

A pure module: no I/O, no clock of its own. The runner (``test_history_cluster.py``)
records every operation with the time it was invoked and the time its answer came back,
both read from ``time.monotonic()`` in the one test process, and :func:`check` judges the
whole history afterwards, the way Jepsen's checkers do.

Outcomes follow Jepsen:

- ``ok``: the server answered and the operation happened (2xx);
- ``fail``: the server answered and the operation definitely did not happen (a 4xx);
- ``info``: the answer is unknown (timeout, connection refused or reset, a 5xx, a 429):
  the operation may or may not have taken effect, at any time after its invocation.

What may convict a successful verify is only an *acknowledged* change (an ``ok`` revoke
or machine delete), and only for a verify that was *invoked after* that acknowledgement
came back. A verify that overlaps the revoke in time may succeed; a revoke whose answer
was lost convicts nothing, and a verify that succeeds after it is no violation.

Rules (SECURITY.md, "Safety properties to check over recorded histories"):

- ``revoked-token-verified-same-node``: an ``ok`` verify invoked after an acknowledged
  revoke (or deletion of the token's machine) by the node that acknowledged it;
- ``revoked-token-verified-other-node``: the same on the other node, invoked more than
  ``bound_seconds`` after the acknowledgement;
- ``deleted-machine-key-authenticated-same-node`` / ``…-other-node``: a request with a
  deleted machine's ``ak_`` key that got past authentication (any answer but 401 or an
  indeterminate one), under the same timing rules;
- ``revoke-lost-in-crash`` / ``delete-lost-in-crash`` / ``deleted-key-survived-crash``:
  the acknowledgement came before a node was killed, and the verify (or key use) ran on
  that node after it was restarted, which has no cache to excuse it;
- ``verified-unknown-token``: an ``ok`` verify of a token string that no ``ok`` create
  returned, or whose answer names another token id than the create did;
- ``verified-out-of-scope``: an ``ok`` verify with a machine key whose machine was not in
  the token's ``scopes`` when it was minted (the workload never removes scopes).
"""

from __future__ import annotations

import enum
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence

__all__ = [
    "INSTANCE_KEY",
    "History",
    "Kind",
    "Operation",
    "Outcome",
    "Violation",
    "check",
]

INSTANCE_KEY: Final = "sk"
"""The ``key`` argument of an operation done with the instance's ``sk_`` key."""


class Outcome(enum.StrEnum):
    """What the client learnt: done, definitely not done, or unknown."""

    OK = "ok"
    FAIL = "fail"
    INFO = "info"


class Kind(enum.StrEnum):
    """What an operation did.

    Arguments (``Operation.args``) and values (``Operation.value``) per kind:

    - ``create_machine``: value ``id``, ``scopes`` (the receivers it may call);
    - ``mint``: args ``key`` (the minting machine's id), ``format``; value ``token``,
      ``id``, ``scopes``;
    - ``verify``: args ``key`` (:data:`INSTANCE_KEY` or the verifying machine's id),
      ``token``; value ``id`` (of the token the server says it is);
    - ``revoke``: args ``id`` (a token id);
    - ``delete_machine``: args ``id`` (a machine id);
    - ``authenticate``: args ``key`` (a machine id): a read-only call with that key;
    - ``kill`` / ``restart`` / ``pause`` / ``resume``: the nemesis acting on ``node``;
      a ``restart`` completes when the new process answers ``/healthz``;
    - ``drop_wakeups``: the nemesis cut the node's push channel (notifications are lost
      until it reconnects); only the propagation bound covers that.
    """

    CREATE_MACHINE = "create_machine"
    MINT = "mint"
    VERIFY = "verify"
    REVOKE = "revoke"
    DELETE_MACHINE = "delete_machine"
    AUTHENTICATE = "authenticate"
    KILL = "kill"
    RESTART = "restart"
    PAUSE = "pause"
    RESUME = "resume"
    DROP_WAKEUPS = "drop_wakeups"


@dataclass(frozen=True)
class Operation:
    """One operation: who, where, what, when (``time.monotonic()``), and what came back."""

    index: int
    process: int
    node: str
    kind: Kind
    args: Mapping[str, str]
    invoke: float
    complete: float
    outcome: Outcome
    status: int | None = None
    """The HTTP status, if an answer came."""
    value: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form (for writing a failed run's history)."""
        return {
            "index": self.index,
            "process": self.process,
            "node": self.node,
            "kind": self.kind.value,
            "args": dict(self.args),
            "invoke": self.invoke,
            "complete": self.complete,
            "outcome": self.outcome.value,
            "status": self.status,
            "value": dict(self.value),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Operation:
        """The inverse of :meth:`to_json`."""
        return cls(
            index=int(data["index"]),
            process=int(data["process"]),
            node=str(data["node"]),
            kind=Kind(data["kind"]),
            args=dict(data["args"]),
            invoke=float(data["invoke"]),
            complete=float(data["complete"]),
            outcome=Outcome(data["outcome"]),
            status=None if data["status"] is None else int(data["status"]),
            value=dict(data["value"]),
        )


@dataclass
class History:
    """Operations in the order they were recorded; :meth:`add` numbers them."""

    operations: list[Operation] = field(default_factory=list)

    def add(
        self,
        *,
        process: int,
        node: str,
        kind: Kind,
        args: Mapping[str, str],
        invoke: float,
        complete: float,
        outcome: Outcome,
        status: int | None = None,
        value: Mapping[str, Any] | None = None,
    ) -> Operation:
        """Record one completed operation (completion may mean "gave up": ``info``)."""
        if complete < invoke:
            msg = f"completion {complete} before invocation {invoke}"
            raise ValueError(msg)
        operation = Operation(
            index=len(self.operations),
            process=process,
            node=node,
            kind=kind,
            args=dict(args),
            invoke=invoke,
            complete=complete,
            outcome=outcome,
            status=status,
            value=dict(value or {}),
        )
        self.operations.append(operation)
        return operation

    def __iter__(self) -> Iterator[Operation]:
        """Every operation, in recording order."""
        return iter(self.operations)

    def __len__(self) -> int:
        """How many operations."""
        return len(self.operations)

    def to_json(self) -> list[dict[str, Any]]:
        """A JSON-ready form."""
        return [operation.to_json() for operation in self.operations]

    @classmethod
    def from_json(cls, data: Iterable[Mapping[str, Any]]) -> History:
        """The inverse of :meth:`to_json`."""
        return cls([Operation.from_json(item) for item in data])


@dataclass(frozen=True)
class Violation:
    """A broken rule, with the operations that prove it (the change, then the offender)."""

    rule: str
    operations: tuple[Operation, ...]
    detail: str

    def __str__(self) -> str:
        """One line per operation involved."""
        lines = [f"{self.rule}: {self.detail}"]
        lines += [
            f"    #{op.index} p{op.process} {op.node} {op.kind.value} {dict(op.args)}"
            f" [{op.invoke:.3f} .. {op.complete:.3f}] {op.outcome.value} {op.status}"
            for op in self.operations
        ]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Restart:
    """A node's process was killed at ``killed`` and answered again at ``healthy``."""

    killed: float
    healthy: float


def _restarts(history: Iterable[Operation]) -> dict[str, list[_Restart]]:
    """Per node, each kill paired with the restart that followed it."""
    killed: dict[str, float] = {}
    restarts: dict[str, list[_Restart]] = defaultdict(list)
    for op in sorted(history, key=lambda o: o.invoke):
        if op.kind is Kind.KILL and op.outcome is Outcome.OK:
            killed.setdefault(op.node, op.invoke)
        elif op.kind is Kind.RESTART and op.outcome is Outcome.OK and op.node in killed:
            restarts[op.node].append(_Restart(killed.pop(op.node), op.complete))
    return restarts


def _restarted_between(restarts: Sequence[_Restart], after: float, before: float) -> bool:
    """Whether the node was killed after ``after`` and healthy again by ``before``."""
    return any(after < r.killed and r.healthy <= before for r in restarts)


def _convict(
    family: tuple[str, str, str],
    change: Operation,
    use: Operation,
    restarts: Mapping[str, Sequence[_Restart]],
    bound_seconds: float,
    what: str,
) -> Violation | None:
    """The violation ``use`` commits by succeeding after the acknowledged ``change``, if any.

    ``family`` names the rule for (a crash in between, the same node, another node).
    """
    crash, same, other = family
    if use.invoke <= change.complete:
        return None  # concurrent with (or before) the acknowledgement: either answer is legal
    since = use.invoke - change.complete
    if _restarted_between(restarts.get(use.node, ()), change.complete, use.invoke):
        return Violation(
            crash,
            (change, use),
            f"{what} {since:.3f}s after the acknowledgement, on {use.node} restarted since",
        )
    if use.node == change.node:
        return Violation(
            same, (change, use), f"{what} {since:.3f}s after the acknowledgement, same node"
        )
    if since > bound_seconds:
        return Violation(
            other,
            (change, use),
            f"{what} {since:.3f}s after the acknowledgement on {change.node},"
            f" beyond the {bound_seconds:.3f}s bound",
        )
    return None


_REVOKE_RULES: Final = (
    "revoke-lost-in-crash",
    "revoked-token-verified-same-node",
    "revoked-token-verified-other-node",
)
_DELETE_RULES: Final = (
    "delete-lost-in-crash",
    "revoked-token-verified-same-node",
    "revoked-token-verified-other-node",
)
_KEY_RULES: Final = (
    "deleted-key-survived-crash",
    "deleted-machine-key-authenticated-same-node",
    "deleted-machine-key-authenticated-other-node",
)


def _machine_key_user(op: Operation) -> str | None:
    """The machine whose ``ak_`` key ``op`` got authenticated with, if it did."""
    if op.outcome is Outcome.INFO or op.status == 401:
        return None
    if op.kind is Kind.MINT or (
        op.kind in {Kind.VERIFY, Kind.AUTHENTICATE} and op.args["key"] != INSTANCE_KEY
    ):
        return op.args["key"]
    return None


@dataclass(frozen=True)
class _Facts:
    """What the checker looks things up in: acknowledged creates, revokes, deletes, crashes."""

    minted: Mapping[str, Operation]
    """Token string → the ``ok`` mint that returned it."""
    revokes: Mapping[str, Sequence[Operation]]
    """Token id → its ``ok`` revokes."""
    deletes: Mapping[str, Sequence[Operation]]
    """Machine id → its ``ok`` deletes."""
    restarts: Mapping[str, Sequence[_Restart]]
    bound_seconds: float


def _facts(ops: Sequence[Operation], bound_seconds: float) -> _Facts:
    minted: dict[str, Operation] = {}
    revokes: dict[str, list[Operation]] = defaultdict(list)
    deletes: dict[str, list[Operation]] = defaultdict(list)
    for op in ops:
        if op.outcome is not Outcome.OK:
            continue
        if op.kind is Kind.MINT:
            minted[str(op.value["token"])] = op
        elif op.kind is Kind.REVOKE:
            revokes[op.args["id"]].append(op)
        elif op.kind is Kind.DELETE_MACHINE:
            deletes[op.args["id"]].append(op)
    return _Facts(minted, revokes, deletes, _restarts(ops), bound_seconds)


def _verify_violations(op: Operation, facts: _Facts) -> list[Violation]:
    """What a successful verify breaks: unknown token, scope, or an acknowledged change."""
    mint = facts.minted.get(op.args["token"])
    if mint is None:
        return [Violation("verified-unknown-token", (op,), "no create returned this token")]
    if mint.value["id"] != op.value.get("id"):
        return [Violation("verified-unknown-token", (mint, op), "answered another id")]
    violations: list[Violation] = []
    verifier = op.args["key"]
    if verifier != INSTANCE_KEY and verifier not in mint.value["scopes"]:
        violations.append(
            Violation("verified-out-of-scope", (mint, op), f"{verifier} not in scopes")
        )
    revokes = facts.revokes.get(str(mint.value["id"]), ())
    violations += _after_all(_REVOKE_RULES, revokes, op, facts, "verified")
    deletes = facts.deletes.get(mint.args["key"], ())
    violations += _after_all(
        _DELETE_RULES, deletes, op, facts, "verified after its machine's delete"
    )
    return violations


def check(history: Iterable[Operation], bound_seconds: float) -> list[Violation]:
    """Every violation of the safety rules in ``history`` (empty: the history is legal).

    ``bound_seconds`` is how long after an acknowledged change another node may still
    answer from what it knew before.
    """
    ops = list(history)
    facts = _facts(ops, bound_seconds)
    violations: list[Violation] = []
    for op in ops:
        user = _machine_key_user(op)
        if user is not None:
            deletes = facts.deletes.get(user, ())
            violations += _after_all(_KEY_RULES, deletes, op, facts, "its key authenticated")
        if op.kind is Kind.VERIFY and op.outcome is Outcome.OK:
            violations += _verify_violations(op, facts)
    return violations


def _after_all(
    family: tuple[str, str, str],
    changes: Iterable[Operation],
    use: Operation,
    facts: _Facts,
    what: str,
) -> list[Violation]:
    """At most one violation of ``use`` per family: the earliest change it contradicts."""
    for change in sorted(changes, key=lambda c: c.complete):
        found = _convict(family, change, use, facts.restarts, facts.bound_seconds, what)
        if found is not None:
            return [found]
    return []
