"""Frozen, typed models of the API's resources (CONTRACT.md §3).

Each model reads itself from the decoded JSON with ``from_json``; an answer that does not
have the promised shape raises ``APIResponseError`` instead of leaking a ``KeyError``.
Timestamps are Unix milliseconds, as on the wire. Secrets (``secret_key``, ``token``,
``secret``) are left out of ``repr`` so they do not end up in logs by accident.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self, TypeVar

from gatepass._exceptions import APIResponseError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "DeletedMachine",
    "DeletedMachineScope",
    "M2MToken",
    "M2MTokenList",
    "Machine",
    "MachineList",
    "MachineScope",
    "MachineSecretKey",
    "Revocation",
    "RevocationPage",
    "ScopedMachine",
]

_T = TypeVar("_T")


class _Fields:
    """Typed access to one JSON object's members; any mismatch is an ``APIResponseError``."""

    __slots__ = ("_data", "_kind")

    def __init__(self, data: object, kind: str) -> None:
        if not isinstance(data, dict):
            raise APIResponseError(f"expected a {kind} object, got {type(data).__name__}")
        self._data: Mapping[str, Any] = data
        self._kind = kind

    def _get(self, name: str, types: type | tuple[type, ...], *, nullable: bool) -> Any:
        if name not in self._data:
            raise APIResponseError(f"{self._kind} lacks {name!r}")
        value = self._data[name]
        if value is None and nullable:
            return None
        # NOTE: bool is an int subclass; a boolean where a number belongs is a shape error.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
            raise APIResponseError(f"{self._kind}.{name} has the wrong type")
        return value

    def text(self, name: str) -> str:
        value: str = self._get(name, str, nullable=False)
        return value

    def opt_text(self, name: str) -> str | None:
        value: str | None = self._get(name, str, nullable=True)
        return value

    def whole(self, name: str) -> int:
        return _whole(self._get(name, (int, float), nullable=False), self._kind, name)

    def opt_whole(self, name: str) -> int | None:
        value = self._get(name, (int, float), nullable=True)
        return None if value is None else _whole(value, self._kind, name)

    def flag(self, name: str) -> bool:
        value: bool = self._get(name, bool, nullable=False)
        return value

    def texts(self, name: str) -> tuple[str, ...]:
        items = self.items(name)
        if not all(isinstance(item, str) for item in items):
            raise APIResponseError(f"{self._kind}.{name} must hold strings")
        return tuple(items)

    def items(self, name: str) -> list[Any]:
        value: list[Any] = self._get(name, list, nullable=False)
        return value

    def objects(self, name: str, read: Callable[[object], _T]) -> tuple[_T, ...]:
        return tuple(read(item) for item in self.items(name))

    def opt_object(self, name: str) -> dict[str, Any] | None:
        value: dict[str, Any] | None = self._get(name, dict, nullable=True)
        return value

    def secret(self, name: str) -> str | None:
        """A secret the create response carries and other responses do not."""
        return self.text(name) if name in self._data else None


def _tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _whole(value: float, kind: str, name: str) -> int:
    # NOTE: CONTRACT.md §4: numbers may arrive as floats (3600.0); only whole ones are numbers here.
    if isinstance(value, float) and not value.is_integer():
        raise APIResponseError(f"{kind}.{name} is not a whole number")
    return int(value)


@dataclass(frozen=True, slots=True)
class ScopedMachine:
    """A machine as listed inside another machine's ``scoped_machines``."""

    id: str
    name: str
    instance_id: str
    created_at: int
    updated_at: int
    default_token_ttl: int

    @classmethod
    def from_json(cls, data: object) -> Self:
        """Read one from its JSON object."""
        f = _Fields(data, "machine")
        return cls(
            id=f.text("id"),
            name=f.text("name"),
            instance_id=f.text("instance_id"),
            created_at=f.whole("created_at"),
            updated_at=f.whole("updated_at"),
            default_token_ttl=f.whole("default_token_ttl"),
        )


@dataclass(frozen=True, slots=True)
class Machine:
    """A machine: one service identity of an instance, and the machines it may call.

    ``secret_key`` (``ak_…``) is set only on the model a create returns.
    """

    id: str
    name: str
    instance_id: str
    created_at: int
    updated_at: int
    default_token_ttl: int
    scoped_machines: tuple[ScopedMachine, ...]
    secret_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_json(cls, data: object) -> Self:
        """Read one from its JSON object."""
        f = _Fields(data, "machine")
        return cls(
            id=f.text("id"),
            name=f.text("name"),
            instance_id=f.text("instance_id"),
            created_at=f.whole("created_at"),
            updated_at=f.whole("updated_at"),
            default_token_ttl=f.whole("default_token_ttl"),
            scoped_machines=f.objects("scoped_machines", ScopedMachine.from_json),
            secret_key=f.secret("secret_key"),
        )


@dataclass(frozen=True, slots=True)
class MachineList:
    """One page of machines and the number matching the query in all."""

    data: tuple[Machine, ...]
    total_count: int

    @classmethod
    def from_json(cls, data: object) -> Self:
        """Read one from its JSON object."""
        f = _Fields(data, "machine list")
        return cls(data=f.objects("data", Machine.from_json), total_count=f.whole("total_count"))


@dataclass(frozen=True, slots=True)
class DeletedMachine:
    """The answer to a machine's deletion."""

    id: str
    deleted: bool

    @classmethod
    def from_json(cls, data: object) -> Self:
        """Read one from its JSON object."""
        f = _Fields(data, "deleted machine")
        return cls(id=f.text("id"), deleted=f.flag("deleted"))


@dataclass(frozen=True, slots=True)
class MachineSecretKey:
    """A machine's secret key (``ak_…``)."""

    secret: str = field(repr=False)

    @classmethod
    def from_json(cls, data: object) -> Self:
        """Read one from its JSON object."""
        return cls(secret=_Fields(data, "machine secret key").text("secret"))


@dataclass(frozen=True, slots=True)
class MachineScope:
    """``from_machine_id`` may call ``to_machine_id``."""

    from_machine_id: str
    to_machine_id: str
    created_at: int

    @classmethod
    def from_json(cls, data: object) -> Self:
        """Read one from its JSON object."""
        f = _Fields(data, "machine scope")
        return cls(
            from_machine_id=f.text("from_machine_id"),
            to_machine_id=f.text("to_machine_id"),
            created_at=f.whole("created_at"),
        )


@dataclass(frozen=True, slots=True)
class DeletedMachineScope:
    """The answer to a scope's deletion."""

    from_machine_id: str
    to_machine_id: str
    deleted: bool

    @classmethod
    def from_json(cls, data: object) -> Self:
        """Read one from its JSON object."""
        f = _Fields(data, "deleted machine scope")
        return cls(
            from_machine_id=f.text("from_machine_id"),
            to_machine_id=f.text("to_machine_id"),
            deleted=f.flag("deleted"),
        )


@dataclass(frozen=True, slots=True)
class M2MToken:
    """An M2M token's record. ``token`` (the bearer secret) is set only on a create's answer."""

    id: str
    subject: str
    scopes: tuple[str, ...]
    claims: dict[str, Any] | None
    revoked: bool
    revocation_reason: str | None
    expired: bool
    expiration: int | None
    last_used_at: int | None
    created_at: int
    updated_at: int
    token: str | None = field(default=None, repr=False)

    @classmethod
    def from_json(cls, data: object) -> Self:
        """Read one from its JSON object."""
        f = _Fields(data, "m2m token")
        return cls(
            id=f.text("id"),
            subject=f.text("subject"),
            scopes=f.texts("scopes"),
            claims=f.opt_object("claims"),
            revoked=f.flag("revoked"),
            revocation_reason=f.opt_text("revocation_reason"),
            expired=f.flag("expired"),
            expiration=f.opt_whole("expiration"),
            last_used_at=f.opt_whole("last_used_at"),
            created_at=f.whole("created_at"),
            updated_at=f.whole("updated_at"),
            token=f.secret("token"),
        )


@dataclass(frozen=True, slots=True)
class M2MTokenList:
    """One page of a machine's tokens and how many there are in all."""

    m2m_tokens: tuple[M2MToken, ...]
    total_count: int

    @classmethod
    def from_json(cls, data: object) -> Self:
        """Read one from its JSON object."""
        f = _Fields(data, "m2m token list")
        return cls(
            m2m_tokens=f.objects("m2m_tokens", M2MToken.from_json),
            total_count=f.whole("total_count"),
        )


@dataclass(frozen=True, slots=True)
class Revocation:
    """A revoked, not yet expired token (the ``jti`` of a JWT), from the revocation feed."""

    id: str
    subject: str
    revoked_at: int
    expiration: int

    @classmethod
    def from_json(cls, data: object) -> Self:
        """Read one from its JSON object."""
        f = _Fields(data, "m2m token revocation")
        return cls(
            id=f.text("id"),
            subject=f.text("subject"),
            revoked_at=f.whole("revoked_at"),
            expiration=f.whole("expiration"),
        )


@dataclass(frozen=True, slots=True)
class RevocationPage:
    """Revocations after a cursor; pass ``cursor`` as ``after`` to read on."""

    data: tuple[Revocation, ...]
    cursor: str
    has_more: bool

    @classmethod
    def from_json(cls, data: object) -> Self:
        """Read one from its JSON object."""
        f = _Fields(data, "m2m token revocations")
        return cls(
            data=f.objects("data", Revocation.from_json),
            cursor=f.text("cursor"),
            has_more=f.flag("has_more"),
        )
